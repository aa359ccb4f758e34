package kernels

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/edgellm/edgellm/quant"
)

// Int8Mat.Row gives back the file's values: exactly for Q8_0 and Q4_0
// (the same int8 times the same fp16 scale), to rounding for Q6_K.
func TestInt8MatRow(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	rows, cols := 5, 256
	src := make([]float32, rows*cols)
	for i := range src {
		src[i] = float32(r.NormFloat64())
	}
	for _, typ := range []quant.Type{quant.Q8_0, quant.Q5_0, quant.Q4_0, quant.Q6_K} {
		rb, _ := typ.RowBytes(cols)
		data := make([]byte, rows*rb)
		if err := quant.Quantize(typ, data, src); err != nil {
			t.Fatal(err)
		}
		m, err := FromQuant(typ, rows, cols, data, 1, TernaryOptions{})
		if err != nil {
			t.Fatal(err)
		}
		im, ok := m.(*Int8Mat)
		if !ok {
			t.Fatalf("%v: %T, want *Int8Mat", typ, m)
		}
		want := make([]float32, cols)
		got := make([]float32, cols+1)
		for row := 0; row < rows; row++ {
			if err := quant.Dequantize(typ, want, data[row*rb:(row+1)*rb]); err != nil {
				t.Fatal(err)
			}
			got[cols] = 12345 // guard
			im.Row(row, got[:cols])
			for i := range want {
				d := math.Abs(float64(got[i] - want[i]))
				if (typ != quant.Q6_K && d != 0) || d > 1e-6*math.Max(1, math.Abs(float64(want[i]))) {
					t.Fatalf("%v row %d col %d: %v, want %v", typ, row, i, got[i], want[i])
				}
			}
			if got[cols] != 12345 {
				t.Fatal("Row wrote past the row")
			}
		}
	}
}
