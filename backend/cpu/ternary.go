package cpu

import "github.com/edgellm/edgellm/quant"

// Row decoders for F16 and the ternary types, used by dequantMat instead of
// quant.Dequantize: these allocate nothing (quant's generic codec path
// heap-allocates a block buffer per call, which would break the zero
// allocation decode). They are checked against quant.Dot in the tests, and
// go away when the kernels package's repacked ternary matmuls land.

// rowDecoder returns our decoder of t, or nil to use quant.Dequantize.
func rowDecoder(t quant.Type) func(dst []float32, src []byte) {
	initTables()
	switch t {
	case quant.F16:
		return decodeF16
	case quant.TQ2_0:
		return decodeTQ2_0
	case quant.TQ1_0:
		return decodeTQ1_0
	case quant.Q2_0:
		return decodeQ2_0
	case quant.I2_S:
		return decodeI2_S
	}
	return nil
}

// TQ2_0: 256 weights in 66 bytes: 64 bytes of 2-bit codes, then fp16 d.
// Byte j+m (j = 0 or 32) holds element 128*(j/32) + 32*l + m at bits 2l.
func decodeTQ2_0(dst []float32, src []byte) {
	for blk := 0; blk < len(dst)/256; blk++ {
		b := src[blk*66 : blk*66+66]
		d := f16At(b[64:])
		y := dst[blk*256 : blk*256+256]
		for j := 0; j < 64; j += 32 {
			for l := range 4 {
				out := y[4*j+32*l : 4*j+32*l+32]
				sh := uint(2 * l)
				for m := range out {
					out[m] = float32(int((b[j+m]>>sh)&3)-1) * d
				}
			}
		}
	}
}

// Q2_0: 64 weights in 18 bytes: fp16 d, then 16 bytes; element j sits in
// byte j/4 at bits 2*(j%4); codes 0..3 mean -1..+2.
func decodeQ2_0(dst []float32, src []byte) {
	for blk := 0; blk < len(dst)/64; blk++ {
		b := src[blk*18 : blk*18+18]
		d := f16At(b)
		q := b[2:18]
		y := dst[blk*64 : blk*64+64]
		for i, v := range q {
			y[4*i] = float32(int(v&3)-1) * d
			y[4*i+1] = float32(int(v>>2&3)-1) * d
			y[4*i+2] = float32(int(v>>4&3)-1) * d
			y[4*i+3] = float32(int(v>>6)-1) * d
		}
	}
}

// I2_S (x86 layout): 128 weights in 32 bytes; byte g holds weights g, g+32,
// g+64, g+96 at shifts 6, 4, 2, 0. Unscaled: the tensor scale is the
// matmul's.
func decodeI2_S(dst []float32, src []byte) {
	for blk := 0; blk < len(dst)/128; blk++ {
		b := src[blk*32 : blk*32+32]
		y := dst[blk*128 : blk*128+128]
		for g, v := range b {
			y[g] = float32(int(v>>6) - 1)
			y[g+32] = float32(int(v>>4&3) - 1)
			y[g+64] = float32(int(v>>2&3) - 1)
			y[g+96] = float32(int(v&3) - 1)
		}
	}
}

// TQ1_0: 256 weights in 54 bytes: 48 bytes of 5 trits each, 4 bytes of 4
// trits each, fp16 d. A byte q stores its trits as a fixed-point fraction:
// digit n is the integer part of 3 * frac(q * 3^n / 256).
func decodeTQ1_0(dst []float32, src []byte) {
	pow3 := [5]byte{1, 3, 9, 27, 81}
	trit := func(q byte, n int) float32 { return float32(int(uint16(q*pow3[n])*3>>8) - 1) }
	for blk := 0; blk < len(dst)/256; blk++ {
		b := src[blk*54 : blk*54+54]
		d := f16At(b[52:])
		y := dst[blk*256 : blk*256+256]
		// Bytes 0..31: 5 trits each, element 32n+m.
		for n := range 5 {
			for m := range 32 {
				y[32*n+m] = trit(b[m], n) * d
			}
		}
		// Bytes 32..47: 5 trits each, element 160+16n+m.
		for n := range 5 {
			for m := range 16 {
				y[160+16*n+m] = trit(b[32+m], n) * d
			}
		}
		// Bytes 48..51: 4 trits each, element 240+4n+j.
		for n := range 4 {
			for j := range 4 {
				y[240+4*n+j] = trit(b[48+j], n) * d
			}
		}
	}
}
