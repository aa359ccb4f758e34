//go:build !nocuda

package engine

import (
	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/backend/cuda"
	"github.com/edgellm/edgellm/model"
)

// The engine links the CUDA backend itself, so a library user gets the GPU
// without wiring of its own; it finds the driver and NVRTC at run time, and
// "auto" falls back to the CPU when they are missing. Building with
// -tags nocuda leaves it (and purego, which needs the system's dynamic
// loader) out, for a static CPU-only binary.
func init() {
	RegisterBackend("cuda", func(w *model.Weights, _ Options) (backend.Model, error) {
		if err := cuda.Available(); err != nil {
			return nil, err
		}
		// EDGELLM_CUDA_ROWS (cuda.RowsFromEnv): where prefill and batched
		// decode run through the many-row step (cuda.Options.Rows).
		return cuda.Load(w, cuda.Options{Rows: cuda.RowsFromEnv()})
	})
}

// cudaLeftOut is empty: this build has the CUDA backend.
const cudaLeftOut = ""
