package quant

import (
	"encoding/binary"
	"fmt"
	"math"
)

// kernel holds the plain-Go routines of one type. Each works on a whole
// number of blocks; the exported functions check sizes before calling them.
type kernel struct {
	// dequant writes len(dst) values decoded from src (exactly the packed
	// bytes of those values).
	dequant func(dst []float32, src []byte)
	// quant encodes src into dst; nil when we do not produce the type.
	quant func(dst []byte, src []float32)
	// dot returns the dot product of the packed row with x; nil means
	// "dequantize block by block and multiply".
	dot func(row []byte, x []float32) float32
}

// kernels is the registry dispatching by type. Types listed in type.go as
// supported must appear here (a test checks it).
var kernels = map[Type]kernel{
	F32:   {dequant: dequantF32, quant: quantF32, dot: dotF32},
	F16:   {dequant: dequantF16, quant: quantF16, dot: dotF16},
	BF16:  {dequant: dequantBF16, quant: quantBF16, dot: dotBF16},
	Q8_0:  {dequant: dequantQ8_0, quant: quantQ8_0, dot: dotQ8_0},
	Q5_0:  {dequant: dequantQ5_0, quant: quantQ5_0},
	Q4_0:  {dequant: dequantQ4_0, quant: quantQ4_0, dot: dotQ4_0},
	Q6_K:  {dequant: dequantQ6_K, quant: quantQ6_K},
	Q4_K:  {dequant: dequantQ4_K},
	TQ2_0: {dequant: dequantTQ2_0, quant: quantTQ2_0, dot: dotTQ2_0},
	TQ1_0: {dequant: dequantTQ1_0, quant: quantTQ1_0, dot: dotTQ1_0},
	Q2_0:  {dequant: dequantQ2_0, quant: quantQ2_0, dot: dotQ2_0},
	I2_S:  {dequant: dequantI2_S, quant: quantI2_S, dot: dotI2_S},
	// I2_S_ARM: the same codes in bitnet.cpp's ARM layout.
	I2_S_ARM: {dequant: dequantI2_S_ARM, quant: quantI2_S_ARM, dot: dotI2_S_ARM},
}

// checkSizes validates that n elements fill whole blocks of t and that src
// holds exactly their bytes (for I2_S, optionally followed by the scale).
func checkSizes(op string, t Type, n, srcLen int) (kernel, error) {
	k, ok := kernels[t]
	if !ok || !t.Supported() {
		return kernel{}, fmt.Errorf("quant: %s: unsupported tensor type %s", op, t)
	}
	need, err := t.RowBytes(n)
	if err != nil {
		return kernel{}, fmt.Errorf("quant: %s: %w", op, err)
	}
	if srcLen != need && !(IsI2S(t) && srcLen == need+I2SScaleBytes) {
		return kernel{}, fmt.Errorf("quant: %s: %d %s elements need %d bytes, have %d", op, n, t, need, srcLen)
	}
	return k, nil
}

// Dequantize decodes len(dst) elements of type t from src, which must hold
// exactly their packed bytes. For I2_S the result is the codes (-1, 0, +1)
// unscaled: the per-tensor scale (see I2SScale) is the caller's to apply;
// src may then also carry the trailing scale bytes, which are ignored.
func Dequantize(t Type, dst []float32, src []byte) error {
	k, err := checkSizes("dequantize", t, len(dst), len(src))
	if err != nil {
		return err
	}
	k.dequant(dst, src)
	return nil
}

// Quantize encodes src as type t into dst, which must be exactly the packed
// size of len(src) elements. For I2_S dst may also be that size plus
// I2SScaleBytes, and then the per-tensor scale is written after the codes
// the way bitnet.cpp stores it; use QuantizeI2S to get the scale otherwise.
func Quantize(t Type, dst []byte, src []float32) error {
	if _, err := checkSizes("quantize", t, len(src), len(dst)); err != nil {
		return err
	}
	k := kernels[t]
	if k.quant == nil {
		return fmt.Errorf("quant: quantize: producing %s is not implemented", t)
	}
	k.quant(dst, src)
	return nil
}

// Dot returns the dot product of one packed row of type t with x, where
// len(x) is the row's element count, accumulated in plain Go as the
// reference every fast kernel is checked against. For I2_S the result is
// unscaled (multiply by the tensor's I2SScale). Misuse (unsupported type,
// len(x) not whole blocks, or row not exactly the packed size) returns NaN
// rather than panicking, so it shows up in any result it reaches.
func Dot(t Type, row []byte, x []float32) float32 {
	k, err := checkSizes("dot", t, len(x), len(row))
	if err != nil {
		return float32(math.NaN())
	}
	if k.dot != nil {
		return k.dot(row, x)
	}
	return dotByBlocks(t, row, x)
}

// dotByBlocks dequantizes one block at a time into a stack buffer. The
// k-quants and Q5_0 are called directly (not through the registry's function
// values) so the buffer stays on the stack: Dot allocates nothing.
func dotByBlocks(t Type, row []byte, x []float32) float32 {
	bs, bb := t.BlockSize(), t.BlockBytes()
	var buf [256]float32
	var sum float64
	for i := 0; i < len(x)/bs; i++ {
		b := buf[:bs]
		blk := row[i*bb : (i+1)*bb]
		switch t {
		case Q6_K:
			dequantQ6_K(b, blk)
		case Q4_K:
			dequantQ4_K(b, blk)
		case Q5_0:
			dequantQ5_0(b, blk)
		default:
			return float32(math.NaN()) // a type with neither a dot nor a case here
		}
		var s float32
		for j, v := range b {
			s += v * x[i*bs+j]
		}
		sum += float64(s)
	}
	return float32(sum)
}

// f16At reads a little-endian fp16 at b[i:] as float32.
func f16At(b []byte, i int) float32 { return F16ToF32(binary.LittleEndian.Uint16(b[i:])) }

// putF16 stores v as a little-endian fp16 at b[i:].
func putF16(b []byte, i int, v float32) { binary.LittleEndian.PutUint16(b[i:], F32ToF16(v)) }
