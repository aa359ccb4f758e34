package quant

import "math"

// Q8_0 (ggml block_q8_0): 32 weights in 34 bytes, an fp16 scale d then 32
// int8 codes q; the weight is d*q.

const q8Block = 34

func dequantQ8_0(dst []float32, src []byte) {
	for i := 0; i < len(dst)/32; i++ {
		b := src[i*q8Block:]
		d := f16At(b, 0)
		for j := 0; j < 32; j++ {
			dst[i*32+j] = d * float32(int8(b[2+j]))
		}
	}
}

// quantQ8_0 follows ggml's quantize_row_q8_0_ref: d = absmax/127 and each
// code is x/d rounded half away from zero, computed in float32.
func quantQ8_0(dst []byte, src []float32) {
	for i := 0; i < len(src)/32; i++ {
		x := src[i*32 : i*32+32]
		b := dst[i*q8Block:]
		var amax float32
		for _, v := range x {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		d := amax / 127
		var id float32
		if d != 0 {
			id = 1 / d
		}
		putF16(b, 0, d)
		for j, v := range x {
			b[2+j] = byte(int8(math.Round(float64(v * id))))
		}
	}
}

func dotQ8_0(row []byte, x []float32) float32 {
	var sum float64
	for i := 0; i < len(x)/32; i++ {
		b := row[i*q8Block:]
		var s float32
		for j := 0; j < 32; j++ {
			s += float32(int8(b[2+j])) * x[i*32+j]
		}
		sum += float64(f16At(b, 0) * s)
	}
	return float32(sum)
}
