// Package knobs holds the GPU backend's experiment switches: settings the
// kernel harness (backend/cuda/internal/devtest) and the backend's tests
// change to time or check a variant of the decode step, which are not
// product options. cuda.Load reads them once; their zero value is the
// product's behaviour. Only backend/cuda and its harness can import it.
package knobs

import "sync"

// Knobs are the switches one Load reads.
type Knobs struct {
	// Defines are extra preprocessor definitions for the kernels
	// (comma-separated NAME=VALUE), each replacing the host's of that name:
	// the host's choices (FUSE_ATT, FA_S, FA_BT, PRE_LOAD, KVH; the host
	// then plans and sizes for them too) and the kernels' own switches
	// (PDL_EARLY, FASTM, FAST_EXP, FA_TRACE).
	Defines string
	// Skip names kernels left out of the decode step (comma-separated), so
	// that the difference to the full step times each in place (ablation);
	// the results are wrong.
	Skip string
	// LegacyPrefill runs prefill as before the many-row step: the decode
	// step's kernels' batch entry points, 64 tokens a launch (gridDim.y),
	// each session holding 64 rows of activations. Kept until the rows
	// step is proven on the device, to compare against.
	LegacyPrefill bool
}

var (
	mu  sync.Mutex
	cur Knobs
)

// Set makes k the switches of the Loads that follow and returns a function
// that restores the previous ones.
func Set(k Knobs) (restore func()) {
	mu.Lock()
	prev := cur
	cur = k
	mu.Unlock()
	return func() {
		mu.Lock()
		cur = prev
		mu.Unlock()
	}
}

// Get returns the current switches.
func Get() Knobs {
	mu.Lock()
	defer mu.Unlock()
	return cur
}
