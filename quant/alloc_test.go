package quant

import "testing"

// Dequantize and Dot allocate nothing, so backends may call them per token.
func TestNoAllocs(t *testing.T) {
	for _, typ := range []Type{F16, BF16, Q8_0, Q4_0, Q6_K, Q4_K, Q2_0, TQ1_0, TQ2_0, I2_S} {
		n := 256
		rb, err := typ.RowBytes(n)
		if err != nil {
			t.Fatal(err)
		}
		row := make([]byte, rb)
		x := make([]float32, n)
		dst := make([]float32, n)
		if a := testing.AllocsPerRun(10, func() { Dequantize(typ, dst, row) }); a != 0 {
			t.Errorf("%v: Dequantize allocates %v times", typ, a)
		}
		if a := testing.AllocsPerRun(10, func() { Dot(typ, row, x) }); a != 0 {
			t.Errorf("%v: Dot allocates %v times", typ, a)
		}
	}
}
