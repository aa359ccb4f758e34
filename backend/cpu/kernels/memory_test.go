package kernels

import (
	"testing"
	"unsafe"

	"github.com/edgellm/edgellm/quant"
)

// TestMemory: a matrix's Memory visits exactly its resident bytes, as views
// of its own slices (a benchmark streams them; copies would measure nothing).
func TestMemory(t *testing.T) {
	const rows, cols = 4, 256
	w := make([]float32, rows*cols)
	for i := range w {
		w[i] = float32(i%3-1) * 0.5
	}
	for _, c := range []struct {
		typ    quant.Type
		layout Layout
	}{{quant.Q8_0, 0}, {quant.Q5_0, 0}, {quant.Q4_0, 0}, {quant.Q6_K, 0}, {quant.F16, 0}, {quant.TQ2_0, Layout2Bit}, {quant.TQ2_0, LayoutLUT}} {
		rb, _ := c.typ.RowBytes(cols)
		data := make([]byte, rb*rows)
		if err := quant.Quantize(c.typ, data, w); err != nil {
			t.Fatal(err)
		}
		m, err := FromQuant(c.typ, rows, cols, data, 1, TernaryOptions{Layout: c.layout})
		if err != nil {
			t.Fatalf("%v: %v", c.typ, err)
		}
		var n int
		var first unsafe.Pointer
		m.Memory(func(b []byte) {
			if len(b) == 0 {
				t.Errorf("%v: empty slice visited", c.typ)
				return
			}
			if first == nil {
				first = unsafe.Pointer(&b[0])
			}
			n += len(b)
		})
		if n != m.Bytes() {
			t.Errorf("%v %v: Memory visits %d bytes, Bytes() = %d", c.typ, c.layout, n, m.Bytes())
		}
		var own unsafe.Pointer
		switch k := m.(type) {
		case *Int8Mat:
			if k.nib != nil {
				own = unsafe.Pointer(&k.nib[0])
			} else {
				own = unsafe.Pointer(&k.vals[0])
			}
		case *F16Mat:
			own = unsafe.Pointer(&k.w[0])
		case *Ternary:
			own = unsafe.Pointer(&k.data[0])
		}
		if first != own {
			t.Errorf("%v %v: Memory's first slice is not the matrix's values", c.typ, c.layout)
		}
	}
}
