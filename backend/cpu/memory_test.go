package cpu

import (
	"testing"
	"unsafe"

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
		perToken := m.WeightBytesPerToken()
		m.Close()
		if got != want || n < 1+7*len(w.Layers) {
			t.Errorf("%v noKernels=%v: visited %d bytes in %d slices, want %d bytes", c.typ, c.noKernels, got, n, want)
		}
		// The tiny model's embedding is F32 (tied): one row is 4*Dim bytes.
		if rowBytes := int64(4 * w.Dim); perToken != int64(want)+rowBytes {
			t.Errorf("%v noKernels=%v: %d bytes per token, want %d", c.typ, c.noKernels, perToken, int64(want)+rowBytes)
		}
	}
}

// TestWeightBytesRepacked: Q4_0 matrices are read in 4 bits with float16
// scales (18 bytes per 32 weights, as the file holds them; 34 when they
// were int8 rows), and the bytes per token say so.
func TestWeightBytesRepacked(t *testing.T) {
	w := testmodel.Weights(t, testmodel.Write(t, testmodel.Tiny("llama", quant.Q4_0)))
	var q4 int
	for i := range w.Layers {
		l := &w.Layers[i]
		for _, m := range []*model.Tensor{&l.Wq, &l.Wk, &l.Wv, &l.Wo, &l.Wgate, &l.Wup, &l.Wdown} {
			q4 += len(m.Data)
		}
	}
	want := int64(q4 + len(w.Output.Data) + 4*w.Dim)
	m, err := load(w, Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if got := m.WeightBytesPerToken(); got != want {
		t.Fatalf("%d bytes per token, want %d", got, want)
	}
}

// TestWeightsInReadOrder: the repacked matrices lie in one run of memory in
// the order a token reads them (the LM head, then each layer's products
// in turn), each right after the one before up to a
// cache line's alignment, so the kernels' prefetches run on from one into
// the next.
func TestWeightsInReadOrder(t *testing.T) {
	for _, typ := range []quant.Type{quant.Q8_0, quant.Q2_0} {
		p := testmodel.Tiny("llama", typ)
		p.EmbedType = quant.Q8_0 // a repacked LM head
		w := testmodel.Weights(t, testmodel.Write(t, p))
		m, err := load(w, Options{Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		mats := []matmul{m.output}
		for _, l := range m.layers {
			mats = append(mats, l.wq, l.wk, l.wv, l.wo, l.wgate, l.wup, l.wdown)
		}
		var prevEnd uintptr
		for i, mm := range mats {
			km, ok := mm.(*kernelMat)
			if !ok {
				t.Fatalf("%v: matrix %d not repacked", typ, i)
			}
			lo, hi := ^uintptr(0), uintptr(0)
			km.memory(func(b []byte) {
				p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
				lo, hi = min(lo, p), max(hi, p+uintptr(len(b)))
			})
			if i > 0 && (lo < prevEnd || lo-prevEnd >= 64) {
				t.Fatalf("%v: matrix %d starts at %#x, the one before it ends at %#x", typ, i, lo, prevEnd)
			}
			prevEnd = hi
		}
		m.Close()
	}
}
