package quant

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Ternary formats: each weight is a code c in {-1, 0, +1} (some layouts can
// also express +2) times a scale. All four are handled the same way: a
// per-type codec converts one block between bytes and int8 codes, and
// dequantization, quantization, Dot and TernaryCodes are built on it.
//
// TQ2_0 (llama.cpp block_tq2_0, 66 bytes per 256): qs[64] then fp16 d.
// Within each 32-byte half j (elements 128j..128j+127), byte 32j+m holds
// element 128j+32l+m in bits 2l..2l+1 (l = 0..3), code = bits-1.
//
// TQ1_0 (llama.cpp block_tq1_0, 54 bytes per 256): qs[48], qh[4], fp16 d.
// Each byte holds 5 (qs) or 4 (qh) base-3 digits, the first element as the
// most significant digit, stored as ceil(value*256/243) so that digit n is
// read back as ((byte*3^n mod 256)*3)>>8. qs[0..31] hold elements m+32n
// (n = 0..4) of the first 160; qs[32..47] hold 160+m+16n; qh[j] holds
// 240+j+4n (n = 0..3, the value scaled by 3 so its digits line up with
// the 5-digit bytes).
//
// Q2_0 (llama.cpp, 18 bytes per 64): fp16 d first, then 16 bytes; element
// j sits in byte j/4 at bits 2*(j%4); codes 0..3 mean -1, 0, +1, +2.
//
// I2_S (bitnet.cpp, x86 layout, 32 bytes per 128): byte g of a block holds
// elements g, g+32, g+64, g+96 at bit shifts 6, 4, 2, 0 (element 0 in the
// HIGH bits), code = bits-1. One fp32 scale per whole tensor follows the
// packed bytes at offset n/4, padded to 32 bytes. Verified against
// bitnet.cpp's quantize_i2_s (src/ggml-bitnet-mad.cpp): it takes the
// tensor's max |w| as the scale (the weights are already ternary there),
// sets code 1 for |w| < 1e-6 and 2/0 by sign otherwise, packs with
// group_idx = j/32, group_pos = j%32, shift 6-2*group_idx, and stores the
// scale as a float at byte n/4, returning n/4+32 bytes. Caution: a later
// bitnet.cpp revision packs x86 I2_S this way only when built with
// ACT_PARALLEL; otherwise it interleaves four rows (byte rg*cols+col holds
// column col of rows 4rg..4rg+3 at shifts 6, 4, 2, 0), a tensor-level
// layout of the same size that this row-level code does not read
// (bitnet.cpp's include/gemm-config.h defines ACT_PARALLEL, so its default
// x86 builds write the row-level layout).
//
// I2_S in bitnet.cpp's ARM layout (I2_S_ARM here; 16 bytes per 64): the
// same codes and tensor scale, but byte g of a block holds elements g,
// g+16, g+32, g+48 at shifts 6, 4, 2, 0 (quantize_i2_s's __ARM_NEON branch,
// QK_I2_S 64, since bitnet.cpp commit 112f853). Both layouts permute the
// codes within each 128 weights only, the same way in every row, so the
// decoded rows of one layout are those of the other with their columns
// permuted: nothing in one tensor's bytes tells them apart (see
// model.ChooseI2SLayout for how the loader chooses).

type ternaryCodec struct {
	t     Type
	block int // weights per block
	bytes int // bytes per block
}

var ternaryCodecs = map[Type]ternaryCodec{
	TQ2_0:    {TQ2_0, 256, 66},
	TQ1_0:    {TQ1_0, 256, 54},
	Q2_0:     {Q2_0, 64, 18},
	I2_S:     {I2_S, 128, 32},
	I2_S_ARM: {I2_S_ARM, 64, 16},
}

// decode writes the block's codes (-1..2) and returns its scale (1 for
// I2_S, whose scale is per tensor). A switch rather than a function field,
// so the caller's code buffer stays on its stack (no allocation per call).
func (tc ternaryCodec) decode(c []int8, b []byte) float32 {
	switch tc.t {
	case TQ2_0:
		return decodeTQ2_0(c, b)
	case TQ1_0:
		return decodeTQ1_0(c, b)
	case Q2_0:
		return decodeQ2_0(c, b)
	case I2_S_ARM:
		return decodeI2SARM(c, b)
	default:
		return decodeI2_S(c, b)
	}
}

// encode packs codes (-1..1) and, where the block has one, the scale.
func (tc ternaryCodec) encode(b []byte, c []int8, d float32) {
	switch tc.t {
	case TQ2_0:
		encodeTQ2_0(b, c, d)
	case TQ1_0:
		encodeTQ1_0(b, c, d)
	case Q2_0:
		encodeQ2_0(b, c, d)
	case I2_S_ARM:
		encodeI2SARM(b, c)
	default:
		encodeI2_S(b, c, d)
	}
}

func decodeTQ2_0(c []int8, b []byte) float32 {
	for j := 0; j < 2; j++ {
		src := b[32*j : 32*j+32]
		for l := 0; l < 4; l++ {
			dst := c[128*j+32*l : 128*j+32*l+32]
			sh := 2 * l
			for m, v := range src {
				dst[m] = int8(v>>sh&3) - 1
			}
		}
	}
	return f16At(b, 64)
}

func encodeTQ2_0(b []byte, c []int8, d float32) {
	for j := 0; j < 2; j++ {
		for m := 0; m < 32; m++ {
			var q byte
			for l := 0; l < 4; l++ {
				q |= byte(c[128*j+32*l+m]+1) << (2 * l)
			}
			b[32*j+m] = q
		}
	}
	putF16(b, 64, d)
}

// pow3 are the digit multipliers of TQ1_0's packed bytes.
var pow3 = [5]byte{1, 3, 9, 27, 81}

// trit returns base-3 digit n (0 = most significant) of a TQ1_0 byte.
func trit(q byte, n int) int8 { return int8(uint16(q*pow3[n]) * 3 >> 8) }

// packTrits packs digits (most significant first, 5 of them) the way TQ1_0
// stores them: rounded up to a fraction of 256 so trit can read them back.
func packTrits(t [5]int8) byte {
	var q uint16
	for _, v := range t {
		q = q*3 + uint16(v)
	}
	return byte((q*256 + 242) / 243)
}

func decodeTQ1_0(c []int8, b []byte) float32 {
	for n := 0; n < 5; n++ {
		for m := 0; m < 32; m++ {
			c[32*n+m] = trit(b[m], n) - 1
		}
		for m := 0; m < 16; m++ {
			c[160+16*n+m] = trit(b[32+m], n) - 1
		}
	}
	for n := 0; n < 4; n++ {
		for j := 0; j < 4; j++ {
			c[240+4*n+j] = trit(b[48+j], n) - 1
		}
	}
	return f16At(b, 52)
}

func encodeTQ1_0(b []byte, c []int8, d float32) {
	var t [5]int8
	for m := 0; m < 32; m++ {
		for n := range 5 {
			t[n] = c[32*n+m] + 1
		}
		b[m] = packTrits(t)
	}
	for m := 0; m < 16; m++ {
		for n := range 5 {
			t[n] = c[160+16*n+m] + 1
		}
		b[32+m] = packTrits(t)
	}
	for j := 0; j < 4; j++ {
		for n := range 4 {
			t[n] = c[240+4*n+j] + 1
		}
		t[4] = 0 // the fifth, least significant digit is the "*3"
		b[48+j] = packTrits(t)
	}
	putF16(b, 52, d)
}

func decodeQ2_0(c []int8, b []byte) float32 {
	for j := 0; j < 64; j++ {
		c[j] = int8(b[2+j/4]>>(2*(j%4))&3) - 1
	}
	return f16At(b, 0)
}

func encodeQ2_0(b []byte, c []int8, d float32) {
	putF16(b, 0, d)
	for i := 0; i < 16; i++ {
		var q byte
		for k := 0; k < 4; k++ {
			q |= byte(c[4*i+k]+1) << (2 * k)
		}
		b[2+i] = q
	}
}

func decodeI2_S(c []int8, b []byte) float32 {
	for g := 0; g < 32; g++ {
		for k := 0; k < 4; k++ {
			c[32*k+g] = int8(b[g]>>(6-2*k)&3) - 1
		}
	}
	return 1
}

func encodeI2_S(b []byte, c []int8, _ float32) {
	for g := 0; g < 32; g++ {
		var q byte
		for k := 0; k < 4; k++ {
			q |= byte(c[32*k+g]+1) << (6 - 2*k)
		}
		b[g] = q
	}
}

func decodeI2SARM(c []int8, b []byte) float32 {
	for g := 0; g < 16; g++ {
		for k := 0; k < 4; k++ {
			c[16*k+g] = int8(b[g]>>(6-2*k)&3) - 1
		}
	}
	return 1
}

func encodeI2SARM(b []byte, c []int8) {
	for g := 0; g < 16; g++ {
		var q byte
		for k := 0; k < 4; k++ {
			q |= byte(c[16*k+g]+1) << (6 - 2*k)
		}
		b[g] = q
	}
}

// TernaryScale returns the scale ternary quantization uses for x: BitNet's
// absmean, mean|x|, except when x is already exactly ternary (every
// non-zero |x| equal), where it returns that common magnitude so packing
// reproduces x exactly. All-zero (or empty) x gives 0.
func TernaryScale(x []float32) float32 {
	var s TernaryScaler
	s.Add(x)
	return s.Scale()
}

// TernaryScaler computes TernaryScale over values given in pieces (a
// tensor's rows, decoded a chunk at a time), with the same result as one
// call on them all.
type TernaryScaler struct {
	sum    float64
	n      int
	common float32 // the first non-zero |x|; 0 while none
	mixed  bool    // some non-zero |x| differs from common
}

// Add takes more values into account.
func (s *TernaryScaler) Add(x []float32) {
	s.n += len(x)
	for _, v := range x {
		a := float32(math.Abs(float64(v)))
		s.sum += float64(a)
		if a != 0 {
			if s.common == 0 {
				s.common = a
			} else if a != s.common {
				s.mixed = true
			}
		}
	}
}

// Scale is TernaryScale of the values added so far.
func (s *TernaryScaler) Scale() float32 {
	switch {
	case s.common == 0:
		return 0
	case !s.mixed:
		return s.common
	}
	return float32(s.sum / float64(s.n))
}

// Ternarize writes clip(round(x/scale), -1, 1) * scale into dst, the
// values ternary quantization keeps of x (0 where scale is 0).
func Ternarize(dst, x []float32, scale float32) {
	var c [256]int8
	for i := 0; i < len(x); i += len(c) {
		n := min(len(c), len(x)-i)
		ternarize(c[:n], x[i:i+n], scale)
		for j, v := range c[:n] {
			dst[i+j] = float32(v) * scale
		}
	}
}

// ternarize writes clip(round(x/scale), -1, 1) into c (0 where scale is 0
// or x/scale is NaN).
func ternarize(c []int8, x []float32, scale float32) {
	for i, v := range x {
		c[i] = 0
		if scale == 0 {
			continue
		}
		switch r := v / scale; {
		case r >= 0.5:
			c[i] = 1
		case r <= -0.5:
			c[i] = -1
		}
	}
}

func ternaryDequant(tc ternaryCodec) func([]float32, []byte) {
	return func(dst []float32, src []byte) {
		var c [256]int8
		for i := 0; i < len(dst)/tc.block; i++ {
			d := tc.decode(c[:tc.block], src[i*tc.bytes:])
			for j, v := range c[:tc.block] {
				dst[i*tc.block+j] = float32(v) * d
			}
		}
	}
}

func ternaryDot(tc ternaryCodec) func([]byte, []float32) float32 {
	return func(row []byte, x []float32) float32 {
		var c [256]int8
		var sum float64
		for i := 0; i < len(x)/tc.block; i++ {
			d := tc.decode(c[:tc.block], row[i*tc.bytes:])
			var s float32
			for j, v := range c[:tc.block] {
				s += float32(v) * x[i*tc.block+j]
			}
			sum += float64(d * s)
		}
		return float32(sum)
	}
}

// ternaryQuantBlocks quantizes block by block with a per-block absmean
// scale stored as fp16; codes are taken against the stored (rounded) scale.
func ternaryQuantBlocks(tc ternaryCodec) func([]byte, []float32) {
	return func(dst []byte, src []float32) {
		var c [256]int8
		for i := 0; i < len(src)/tc.block; i++ {
			x := src[i*tc.block : (i+1)*tc.block]
			d := F16ToF32(F32ToF16(TernaryScale(x)))
			ternarize(c[:tc.block], x, d)
			tc.encode(dst[i*tc.bytes:], c[:tc.block], d)
		}
	}
}

var (
	dequantTQ2_0    = ternaryDequant(ternaryCodecs[TQ2_0])
	dequantTQ1_0    = ternaryDequant(ternaryCodecs[TQ1_0])
	dequantQ2_0     = ternaryDequant(ternaryCodecs[Q2_0])
	dequantI2_S     = ternaryDequant(ternaryCodecs[I2_S])
	dequantI2_S_ARM = ternaryDequant(ternaryCodecs[I2_S_ARM])
	dotTQ2_0        = ternaryDot(ternaryCodecs[TQ2_0])
	dotTQ1_0        = ternaryDot(ternaryCodecs[TQ1_0])
	dotQ2_0         = ternaryDot(ternaryCodecs[Q2_0])
	dotI2_S         = ternaryDot(ternaryCodecs[I2_S])
	dotI2_S_ARM     = ternaryDot(ternaryCodecs[I2_S_ARM])
	quantTQ2_0      = ternaryQuantBlocks(ternaryCodecs[TQ2_0])
	quantTQ1_0      = ternaryQuantBlocks(ternaryCodecs[TQ1_0])
	quantQ2_0       = ternaryQuantBlocks(ternaryCodecs[Q2_0])
)

// quantI2_S and quantI2_S_ARM quantize the whole of src against one
// absmean scale (kept in float32, as bitnet.cpp stores it) and, when dst
// has room for it, write the scale after the codes.
func quantI2_S(dst []byte, src []float32)     { packI2S(I2_S, dst, src, TernaryScale(src)) }
func quantI2_S_ARM(dst []byte, src []float32) { packI2S(I2_S_ARM, dst, src, TernaryScale(src)) }

func packI2S(t Type, dst []byte, src []float32, scale float32) {
	tc := ternaryCodecs[t]
	var c [128]int8
	for i := 0; i < len(src)/tc.block; i++ {
		ternarize(c[:tc.block], src[i*tc.block:(i+1)*tc.block], scale)
		tc.encode(dst[i*tc.bytes:], c[:tc.block], 0)
	}
	if n := len(src) / 4; len(dst) >= n+I2SScaleBytes {
		clear(dst[n : n+I2SScaleBytes])
		binary.LittleEndian.PutUint32(dst[n:], math.Float32bits(scale))
	}
}

// QuantizeI2S packs src as I2_S into dst (len(src)/4 bytes, or that plus
// I2SScaleBytes to also store the scale) and returns the per-tensor scale.
func QuantizeI2S(dst []byte, src []float32) (float32, error) {
	if _, err := checkSizes("quantize", I2_S, len(src), len(dst)); err != nil {
		return 0, err
	}
	scale := TernaryScale(src)
	packI2S(I2_S, dst, src, scale)
	return scale, nil
}

// I2SScale reads the per-tensor scale bitnet.cpp stores after the n/4
// packed bytes of an I2_S tensor of n elements (either layout).
func I2SScale(tensorData []byte, n int) (float32, error) {
	if n <= 0 || n%64 != 0 {
		return 0, fmt.Errorf("quant: I2_S tensor of %d elements is not a positive multiple of 64", n)
	}
	off := n / 4
	if len(tensorData) < off+4 {
		return 0, fmt.Errorf("quant: I2_S tensor of %d elements needs %d bytes with its scale, have %d", n, off+4, len(tensorData))
	}
	s := math.Float32frombits(binary.LittleEndian.Uint32(tensorData[off:]))
	if math.IsNaN(float64(s)) || math.IsInf(float64(s), 0) {
		return 0, fmt.Errorf("quant: I2_S tensor scale is %v", s)
	}
	return s, nil
}

// IsTernary reports whether t is one of the ternary types TernaryCodes reads.
func IsTernary(t Type) bool { _, ok := ternaryCodecs[t]; return ok }

// TernaryCodes decodes one row of a ternary type (TQ1_0, TQ2_0, Q2_0, I2_S)
// for backends that repack weights at load time. It writes the len(dst)
// weights' codes, each -1, 0 or +1, into dst, and returns one scale per
// block of t.BlockSize() weights (weight = code * scale of its block). For
// I2_S (either layout), whose only scale is per tensor (I2SScale), scales
// is nil. row must
// hold exactly the row's packed bytes. A code that is not ternary (code 3,
// +2 in Q2_0, TQ2_0 and I2_S) is an error naming the element.
func TernaryCodes(t Type, row []byte, dst []int8) (scales []float32, err error) {
	tc, ok := ternaryCodecs[t]
	if !ok {
		return nil, fmt.Errorf("quant: ternary codes: %s is not a ternary type", t)
	}
	if _, err := checkSizes("ternary codes", t, len(dst), len(row)); err != nil {
		return nil, err
	}
	nb := len(dst) / tc.block
	if !IsI2S(t) {
		scales = make([]float32, nb)
	}
	for i := 0; i < nb; i++ {
		c := dst[i*tc.block : (i+1)*tc.block]
		d := tc.decode(c, row[i*tc.bytes:])
		if scales != nil {
			scales[i] = d
		}
		for j, v := range c {
			if v > 1 {
				return nil, fmt.Errorf("quant: ternary codes: %s element %d has code +2, not ternary", t, i*tc.block+j)
			}
		}
	}
	return scales, nil
}
