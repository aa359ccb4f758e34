package quant

import (
	"encoding/binary"
	"math"
)

// Q5_0 (ggml block_q5_0): 32 weights in 22 bytes, an fp16 scale d, then
// the weights' fifth bits as a little-endian uint32 qh (bit j for weight
// j), then 16 bytes whose byte j holds the low four bits of weight j in its
// low nibble and of weight j+16 in its high nibble; the weight is
// d*(code-16), code 0..31. llama-quantize writes it where a k-quant does
// not fit a row (widths not a multiple of 256: SmolLM's 576, Qwen2.5-0.5B's
// 896), so Q4_K_M files of small models are mostly Q5_0.

const q5Block = 22

// Q5Code returns code j (0..31) of the Q5_0 block b (at least 22 bytes).
func Q5Code(b []byte, j int) int {
	qh := binary.LittleEndian.Uint32(b[2:])
	lo := b[6+j%16]
	if j >= 16 {
		lo >>= 4
	}
	return int(lo&0xf) | int(qh>>uint(j)&1)<<4
}

func dequantQ5_0(dst []float32, src []byte) {
	for i := 0; i < len(dst)/32; i++ {
		b := src[i*q5Block:]
		d := f16At(b, 0)
		y := dst[i*32 : i*32+32]
		for j := range y {
			y[j] = d * float32(Q5Code(b, j)-16)
		}
	}
}

// quantQ5_0 follows ggml's quantize_row_q5_0_ref: the value of largest
// magnitude maps to code 0 (d = max/-16), codes are x/d+16.5 truncated and
// capped at 31, computed in float32.
func quantQ5_0(dst []byte, src []float32) {
	for i := 0; i < len(src)/32; i++ {
		x := src[i*32 : i*32+32]
		b := dst[i*q5Block : (i+1)*q5Block]
		var amax, mx float32
		for _, v := range x {
			if a := float32(math.Abs(float64(v))); a > amax {
				amax, mx = a, v
			}
		}
		d := mx / -16
		var id float32
		if d != 0 {
			id = 1 / d
		}
		putF16(b, 0, d)
		var qh uint32
		for j := 0; j < 16; j++ {
			c0, c1 := q5Code(x[j]*id), q5Code(x[j+16]*id)
			b[6+j] = c0&0xf | (c1&0xf)<<4
			qh |= uint32(c0>>4)<<j | uint32(c1>>4)<<(j+16)
		}
		binary.LittleEndian.PutUint32(b[2:], qh)
	}
}

// q5Code truncates v+16.5 toward zero into 0..31 as ggml's (int8_t) cast
// and MIN(31, ...) do.
func q5Code(v float32) byte {
	c := int(v + 16.5)
	return byte(min(31, max(0, c)))
}

func dotQ5_0(row []byte, x []float32) float32 {
	var sum float64
	for i := 0; i < len(x)/32; i++ {
		b := row[i*q5Block:]
		xs := x[i*32 : i*32+32]
		var s float32
		for j, v := range xs {
			s += float32(Q5Code(b, j)-16) * v
		}
		sum += float64(f16At(b, 0) * s)
	}
	return float32(sum)
}
