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
		var amax, mx float32
		for _, v := range x {
			if a := float32(math.Abs(float64(v))); a > amax {
				amax, mx = a, v
			}
		}
		d := mx / -8
		var id float32
		if d != 0 {
			id = 1 / d
		}
		putF16(b, 0, d)
		for j := 0; j < 16; j++ {
			b[2+j] = q4Code(x[j]*id) | q4Code(x[j+16]*id)<<4
		}
	}
}

// q4Code truncates v+8.5 toward zero into 0..15 as ggml's (int8_t) cast does.
func q4Code(v float32) byte {
	c := int(v + 8.5)
	return byte(min(15, max(0, c)))
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
