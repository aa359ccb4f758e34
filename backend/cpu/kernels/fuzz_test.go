package kernels

import (
	"testing"

	"github.com/edgellm/edgellm/quant"
)

// FuzzFromQuant feeds arbitrary bytes and shapes to the repackers: they
// must return an error or a matrix whose product runs, never panic.
func FuzzFromQuant(f *testing.F) {
	f.Add(uint8(quant.TQ2_0), uint16(2), uint16(256), make([]byte, 132))
	f.Add(uint8(quant.Q2_0), uint16(1), uint16(64), make([]byte, 18))
	f.Add(uint8(quant.Q8_0), uint16(1), uint16(64), make([]byte, 68))
	f.Add(uint8(quant.Q5_0), uint16(2), uint16(64), make([]byte, 88))
	f.Add(uint8(quant.Q4_0), uint16(3), uint16(128), make([]byte, 216))
	f.Add(uint8(quant.Q6_K), uint16(1), uint16(256), make([]byte, 210))
	f.Add(uint8(quant.F16), uint16(1), uint16(64), make([]byte, 128))
	f.Add(uint8(quant.I2_S), uint16(1), uint16(128), make([]byte, 32))
	f.Fuzz(func(t *testing.T, typ uint8, rows, cols uint16, data []byte) {
		m, err := FromQuant(quant.Type(typ), int(rows), int(cols), data, 1, TernaryOptions{})
		if err != nil {
			return
		}
		a, err := NewActs(m.Cols(), 1)
		if err != nil {
			t.Fatalf("matrix of %d columns but no Acts: %v", m.Cols(), err)
		}
		if NeedsLaneBias(m) {
			a.EnableLaneBias()
		}
		x := make([]float32, m.Cols())
		for i := range x {
			x[i] = float32(i%7) - 3
		}
		a.Set(x)
		dst := make([]float32, m.Rows())
		m.MatVec(dst, a, 0, m.Rows())
	})
}
