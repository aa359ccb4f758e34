package quant

import (
	"encoding/binary"
	"math"
)

// F16ToF32 converts an IEEE 754 binary16 value to float32 (exactly: every
// binary16 value, subnormals included, is a float32).
func F16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h) & 0x3ff
	switch {
	case exp == 0:
		// Zero or subnormal: man * 2^-24, exact in float32.
		v := float32(man) * (1.0 / (1 << 24))
		return math.Float32frombits(sign | math.Float32bits(v))
	case exp == 0x1f:
		// Inf or NaN; the NaN payload moves to the top of the mantissa.
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	default:
		return math.Float32frombits(sign | (exp+127-15)<<23 | man<<13)
	}
}

// shrRNE shifts x right by s (1..31) rounding to nearest, ties to even.
func shrRNE(x uint32, s uint) uint32 {
	q := x >> s
	rem := x & (1<<s - 1)
	half := uint32(1) << (s - 1)
	if rem > half || (rem == half && q&1 == 1) {
		q++
	}
	return q
}

// F32ToF16 converts float32 to binary16 rounding to nearest, ties to even,
// as F16C hardware does: overflow gives ±Inf, tiny values give subnormals
// or ±0, NaN stays NaN (quiet, with the top payload bits kept).
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	man := b & 0x7fffff
	if exp == 0xff {
		if man == 0 {
			return sign | 0x7c00
		}
		return sign | 0x7e00 | uint16(man>>13)
	}
	e := exp - 127 + 15 // binary16 biased exponent
	if e <= 0 {
		// The result is subnormal (or zero): its unit is 2^-24, and
		// (man|implicit) * 2^(exp-150) / 2^-24 = m >> (126-exp).
		shift := 126 - exp
		if exp == 0 || shift > 25 {
			return sign // float32 subnormals and anything below half the unit
		}
		// A carry into bit 10 correctly yields the smallest normal.
		return sign | uint16(shrRNE(man|0x800000, uint(shift)))
	}
	if e >= 0x1f {
		return sign | 0x7c00
	}
	// A mantissa carry bumps the exponent, possibly to Inf: both right.
	v := uint32(e)<<10 + shrRNE(man, 13)
	if v >= 0x7c00 {
		return sign | 0x7c00
	}
	return sign | uint16(v)
}

// BF16ToF32 converts a bfloat16 value to float32 (exact).
func BF16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// F32ToBF16 converts float32 to bfloat16 rounding to nearest, ties to even;
// NaN stays a quiet NaN.
func F32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

func dequantF32(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

func quantF32(dst []byte, src []float32) {
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

func dotF32(row []byte, x []float32) float32 {
	var s float64
	for i, v := range x {
		s += float64(math.Float32frombits(binary.LittleEndian.Uint32(row[4*i:]))) * float64(v)
	}
	return float32(s)
}

func dequantF16(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = f16At(src, 2*i)
	}
}

func quantF16(dst []byte, src []float32) {
	for i, v := range src {
		putF16(dst, 2*i, v)
	}
}

func dotF16(row []byte, x []float32) float32 {
	var s float64
	for i, v := range x {
		s += float64(f16At(row, 2*i)) * float64(v)
	}
	return float32(s)
}

func dequantBF16(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = BF16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
	}
}

func quantBF16(dst []byte, src []float32) {
	for i, v := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], F32ToBF16(v))
	}
}

func dotBF16(row []byte, x []float32) float32 {
	var s float64
	for i, v := range x {
		s += float64(BF16ToF32(binary.LittleEndian.Uint16(row[2*i:]))) * float64(v)
	}
	return float32(s)
}
