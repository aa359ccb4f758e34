package cpu

import (
	"testing"

	"github.com/edgellm/edgellm/internal/testmodel"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/quant"
)

// TestVisitWeightMemory: the model visits the bytes a decode step's
// products read. Q8_0 repacked for the kernels keeps its 34 bytes per 32
// weights (int8 values, float16 scales), so both paths visit exactly the
// file's bytes of the layers' matrices and the LM head.
func TestVisitWeightMemory(t *testing.T) {
	for _, c := range []struct {
		typ       quant.Type
		noKernels bool
	}{{quant.Q8_0, false}, {quant.Q8_0, true}, {quant.F32, true}} {
		w := testmodel.Weights(t, testmodel.Write(t, testmodel.Tiny("llama", c.typ)))
		var want int
		for i := range w.Layers {
			l := &w.Layers[i]
			for _, m := range []*model.Tensor{&l.Wq, &l.Wk, &l.Wv, &l.Wo, &l.Wgate, &l.Wup, &l.Wdown} {
				want += len(m.Data)
			}
		}
		want += len(w.Output.Data)
		m, err := load(w, Options{Threads: 1, NoKernels: c.noKernels})
		if err != nil {
			t.Fatal(err)
		}
		var got, n int
		m.VisitWeightMemory(func(b []byte) {
			got += len(b)
			n++
		})
		m.Close()
		if got != want || n < 1+7*len(w.Layers) {
			t.Errorf("%v noKernels=%v: visited %d bytes in %d slices, want %d bytes", c.typ, c.noKernels, got, n, want)
		}
	}
}
