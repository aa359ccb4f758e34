package quant

import "encoding/binary"

// Q5_0 (ggml block_q5_0): 32 weights in 22 bytes, an fp16 scale d, then
// the weights' fifth bits as a little-endian uint32 qh (bit j for weight
// j), then 16 bytes whose byte j holds the low four bits of weight j in its
// low nibble and of weight j+16 in its high nibble; the weight is
// d*(code-16), code 0..31. llama-quantize writes it where a k-quant does
// not fit a row (widths not a multiple of 256: SmolLM's 576, Qwen2.5-0.5B's
// 896), so Q4_K_M files of small models are mostly Q5_0.

const q5Block = 22

// Q5Values writes the 32 weights of the Q5_0 block b (at least 22 bytes)
// as integers, code-16 (-16..15): the weights over d.
func Q5Values(v *[32]int8, b []byte) {
	qh := binary.LittleEndian.Uint32(b[2:])
	for j, c := range b[6:22] {
		v[j] = int8(c&0xf|byte(qh>>uint(j)&1)<<4) - 16
		v[j+16] = int8(c>>4|byte(qh>>uint(j+16)&1)<<4) - 16
	}
}

func dequantQ5_0(dst []float32, src []byte) {
	var v [32]int8
	for i := 0; i < len(dst)/32; i++ {
		b := src[i*q5Block:]
		Q5Values(&v, b)
		d := f16At(b, 0)
		y := dst[i*32 : i*32+32]
		for j := range y {
			y[j] = d * float32(v[j])
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
		d, id := signedBlockScale(x, -16)
		putF16(b, 0, d)
		var qh uint32
		for j := 0; j < 16; j++ {
			c0, c1 := blockCode(x[j]*id, 16), blockCode(x[j+16]*id, 16)
			b[6+j] = c0&0xf | (c1&0xf)<<4
			qh |= uint32(c0>>4)<<j | uint32(c1>>4)<<(j+16)
		}
		binary.LittleEndian.PutUint32(b[2:], qh)
	}
}
