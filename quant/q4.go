package quant

import "math"

// Q4_0 (ggml block_q4_0): 32 weights in 18 bytes, an fp16 scale d then 16
// bytes; byte j holds weight j in its low nibble and weight j+16 in its
// high nibble, and the weight is d*(nibble-8).

const q4Block = 18

func dequantQ4_0(dst []float32, src []byte) {
	for i := 0; i < len(dst)/32; i++ {
		b := src[i*q4Block:]
		d := f16At(b, 0)
		y := dst[i*32 : i*32+32]
		for j := 0; j < 16; j++ {
			y[j] = d * float32(int(b[2+j]&0xf)-8)
			y[j+16] = d * float32(int(b[2+j]>>4)-8)
		}
	}
}

// quantQ4_0 follows ggml's quantize_row_q4_0_ref: the value of largest
// magnitude maps to code 0 (d = max/-8), codes are x/d+8.5 truncated and
// capped at 15, computed in float32.
func quantQ4_0(dst []byte, src []float32) {
	for i := 0; i < len(src)/32; i++ {
		x := src[i*32 : i*32+32]
		b := dst[i*q4Block:]
		d, id := signedBlockScale(x, -8)
		putF16(b, 0, d)
		for j := 0; j < 16; j++ {
			b[2+j] = blockCode(x[j]*id, 8) | blockCode(x[j+16]*id, 8)<<4
		}
	}
}

// blockCode is the code of v (already divided by the block's scale) in
// ggml's Q4_0 and Q5_0 reference quantizers, whose codes run 0..2*zero-1
// with zero at code zero: v+zero+0.5 truncated toward zero as their
// (int8_t) cast does, capped at the top code.
func blockCode(v float32, zero int) byte {
	c := int(v + (float32(zero) + 0.5))
	return byte(min(2*zero-1, max(0, c)))
}

func dotQ4_0(row []byte, x []float32) float32 {
	var sum float64
	for i := 0; i < len(x)/32; i++ {
		b := row[i*q4Block:]
		xs := x[i*32 : i*32+32]
		var s float32
		for j := 0; j < 16; j++ {
			s += float32(int(b[2+j]&0xf)-8)*xs[j] + float32(int(b[2+j]>>4)-8)*xs[j+16]
		}
		sum += float64(f16At(b, 0) * s)
	}
	return float32(sum)
}

// signedBlockScale is the scale of ggml's Q4_0 and Q5_0 reference
// quantizers: the block's value of largest magnitude (the first, on ties)
// divided by div, which maps it to the lowest code; and its inverse, 0 for
// an all-zero block.
func signedBlockScale(x []float32, div float32) (d, id float32) {
	var amax, mx float32
	for _, v := range x {
		if a := float32(math.Abs(float64(v))); a > amax {
			amax, mx = a, v
		}
	}
	d = mx / div
	if d != 0 {
		id = 1 / d
	}
	return d, id
}
