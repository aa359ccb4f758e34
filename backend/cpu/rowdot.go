package cpu

import (
	"encoding/binary"
	"sync"

	"github.com/edgellm/edgellm/quant"
)

// Fused row dot products for decode (one activation vector): each block is
// decoded in registers and multiplied straight away, instead of being
// dequantized into scratch first. Batches (prefill) still dequantize a row
// once and reuse it for every token. Plain Go; the assembly kernels of
// package backend/cpu/kernels replace these per type when they land.

var (
	tablesOnce sync.Once
	// f16tab converts every fp16 bit pattern: one load instead of the bit
	// manipulation of a software conversion.
	f16tab []float32
	// q2lo holds, for each byte, its four 2-bit codes minus 1, low bits
	// first (TQ2_0, Q2_0); i2hi the same high bits first (I2_S).
	q2lo, i2hi [256][4]float32
)

func initTables() {
	tablesOnce.Do(func() {
		f16tab = make([]float32, 1<<16)
		for i := range f16tab {
			f16tab[i] = quant.F16ToF32(uint16(i))
		}
		for v := range 256 {
			for k := range 4 {
				q2lo[v][k] = float32(int(v>>(2*k)&3) - 1)
				i2hi[v][k] = float32(int(v>>(6-2*k)&3) - 1)
			}
		}
	})
}

func f16At(b []byte) float32 { return f16tab[binary.LittleEndian.Uint16(b)] }

// rowDotFor returns the fused dot of type t, or nil when t has none.
func rowDotFor(t quant.Type) func(row []byte, x []float32) float32 {
	initTables()
	switch t {
	case quant.F16:
		return dotF16
	case quant.Q8_0:
		return dotQ8_0
	case quant.Q4_0:
		return dotQ4_0
	case quant.Q2_0:
		return dotQ2_0
	case quant.TQ2_0:
		return dotTQ2_0
	case quant.I2_S:
		return dotI2_S
	}
	return nil
}

func dotF16(row []byte, x []float32) float32 {
	x = x[:len(row)/2]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(x); i += 4 {
		b := row[2*i : 2*i+8]
		s0 += f16tab[binary.LittleEndian.Uint16(b[0:])] * x[i]
		s1 += f16tab[binary.LittleEndian.Uint16(b[2:])] * x[i+1]
		s2 += f16tab[binary.LittleEndian.Uint16(b[4:])] * x[i+2]
		s3 += f16tab[binary.LittleEndian.Uint16(b[6:])] * x[i+3]
	}
	for ; i < len(x); i++ {
		s0 += f16tab[binary.LittleEndian.Uint16(row[2*i:])] * x[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// Q8_0: 34-byte blocks: fp16 d, 32 int8.
func dotQ8_0(row []byte, x []float32) float32 {
	var sum float32
	for blk := 0; blk < len(row)/34; blk++ {
		b := row[blk*34 : blk*34+34]
		q := b[2:34]
		xs := x[blk*32 : blk*32+32]
		var s0, s1, s2, s3 float32
		for i := 0; i < 32; i += 4 {
			s0 += float32(int8(q[i])) * xs[i]
			s1 += float32(int8(q[i+1])) * xs[i+1]
			s2 += float32(int8(q[i+2])) * xs[i+2]
			s3 += float32(int8(q[i+3])) * xs[i+3]
		}
		sum += f16At(b) * ((s0 + s1) + (s2 + s3))
	}
	return sum
}

// Q4_0: 18-byte blocks: fp16 d, 16 bytes; byte j holds element j (low
// nibble) and j+16 (high nibble), each minus 8.
func dotQ4_0(row []byte, x []float32) float32 {
	var sum float32
	for blk := 0; blk < len(row)/18; blk++ {
		b := row[blk*18 : blk*18+18]
		q := b[2:18]
		xs := x[blk*32 : blk*32+32]
		var s0, s1 float32
		for j, v := range q {
			s0 += float32(int(v&15)-8) * xs[j]
			s1 += float32(int(v>>4)-8) * xs[j+16]
		}
		sum += f16At(b) * (s0 + s1)
	}
	return sum
}

// Q2_0: 18-byte blocks: fp16 d, 16 bytes; element 4i+k in byte i, bits 2k.
func dotQ2_0(row []byte, x []float32) float32 {
	var sum float32
	for blk := 0; blk < len(row)/18; blk++ {
		b := row[blk*18 : blk*18+18]
		q := b[2:18]
		xs := x[blk*64 : blk*64+64]
		var s0, s1 float32
		for i, v := range q {
			t := &q2lo[v]
			x4 := xs[4*i : 4*i+4]
			s0 += t[0]*x4[0] + t[1]*x4[1]
			s1 += t[2]*x4[2] + t[3]*x4[3]
		}
		sum += f16At(b) * (s0 + s1)
	}
	return sum
}

// TQ2_0: 66-byte blocks: 64 code bytes, fp16 d; byte j+m (j = 0, 32)
// holds elements 4j+m, 4j+32+m, 4j+64+m, 4j+96+m at bits 0, 2, 4, 6.
func dotTQ2_0(row []byte, x []float32) float32 {
	var sum float32
	for blk := 0; blk < len(row)/66; blk++ {
		b := row[blk*66 : blk*66+66]
		xs := x[blk*256 : blk*256+256]
		var s0, s1 float32
		for j := 0; j < 64; j += 32 {
			xj := xs[4*j : 4*j+128]
			for m, v := range b[j : j+32] {
				t := &q2lo[v]
				s0 += t[0]*xj[m] + t[1]*xj[m+32]
				s1 += t[2]*xj[m+64] + t[3]*xj[m+96]
			}
		}
		sum += f16At(b[64:]) * (s0 + s1)
	}
	return sum
}

// I2_S: 32-byte blocks of 128 weights; byte g holds g, g+32, g+64, g+96
// at shifts 6, 4, 2, 0. Unscaled.
func dotI2_S(row []byte, x []float32) float32 {
	var sum float32
	for blk := 0; blk < len(row)/32; blk++ {
		xs := x[blk*128 : blk*128+128]
		var s0, s1 float32
		for g, v := range row[blk*32 : blk*32+32] {
			t := &i2hi[v]
			s0 += t[0]*xs[g] + t[1]*xs[g+32]
			s1 += t[2]*xs[g+64] + t[3]*xs[g+96]
		}
		sum += s0 + s1
	}
	return sum
}

// decodeF16 is the table-driven fp16 row dequantizer.
func decodeF16(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = f16tab[binary.LittleEndian.Uint16(src[2*i:])]
	}
}
