// Package quant owns the tensor block formats EdgeLLM reads: their sizes,
// dequantization to float32, quantization from float32 where we produce the
// type, and plain-Go reference dot products. It knows nothing of files,
// models or backends.
//
// Files by family: type.go (ids and sizes), quant.go (the registry behind
// Dequantize, Quantize and Dot), float.go (F32, F16, BF16 and exact fp16 /
// bf16 conversion), q8.go, q5.go and q4.go (Q8_0, Q5_0, Q4_0), kquants.go (Q6_K, Q4_K)
// and ternary.go (TQ1_0, TQ2_0, Q2_0, I2_S and TernaryCodes for backends).
// Quantizers for Q8_0, Q5_0, Q4_0, Q6_K reproduce llama.cpp's reference
// quantizers byte for byte (checked against llama-quantize's output in
// ../shared/models/tiny-random); the ternary ones use BitNet's absmean.
package quant

import "fmt"

// Type is a GGML tensor type id as stored in GGUF tensor infos.
type Type uint32

// GGML type ids (upstream llama.cpp, mid-2026). I2_S is bitnet.cpp's id 36,
// which upstream once used for a removed repacked type; see formats.md.
const (
	F32   Type = 0
	F16   Type = 1
	Q4_0  Type = 2
	Q4_1  Type = 3
	Q5_0  Type = 6
	Q5_1  Type = 7
	Q8_0  Type = 8
	Q8_1  Type = 9
	Q2_K  Type = 10
	Q3_K  Type = 11
	Q4_K  Type = 12
	Q5_K  Type = 13
	Q6_K  Type = 14
	Q8_K  Type = 15
	I8    Type = 24
	I16   Type = 25
	I32   Type = 26
	I64   Type = 27
	F64   Type = 28
	BF16  Type = 30
	TQ1_0 Type = 34
	TQ2_0 Type = 35
	I2_S  Type = 36
	Q2_0  Type = 42

	// I2_S_ARM is no file's id: bitnet.cpp's ARM builds (since its commit
	// 112f853, November 2025) write I2_S (id 36) in 64-weight blocks, and
	// the file does not say which layout it holds. The model loader gives
	// such tensors this in-memory type, so every decoder (Dequantize, Dot,
	// TernaryCodes and the backends' repacking built on them) reads them
	// right; Known is false for it, so no file can carry it.
	I2_S_ARM Type = 1<<16 | 36
)

// typeInfo describes a block format: BlockSize elements take BlockBytes bytes.
type typeInfo struct {
	name       string
	blockSize  int
	blockBytes int
	supported  bool // we can dequantize it
}

var types = map[Type]typeInfo{
	F32:   {"F32", 1, 4, true},
	F16:   {"F16", 1, 2, true},
	BF16:  {"BF16", 1, 2, true},
	Q4_0:  {"Q4_0", 32, 18, true},
	Q4_1:  {"Q4_1", 32, 20, false},
	Q5_0:  {"Q5_0", 32, 22, true},
	Q5_1:  {"Q5_1", 32, 24, false},
	Q8_0:  {"Q8_0", 32, 34, true},
	Q8_1:  {"Q8_1", 32, 36, false},
	Q2_K:  {"Q2_K", 256, 84, false},
	Q3_K:  {"Q3_K", 256, 110, false},
	Q4_K:  {"Q4_K", 256, 144, true},
	Q5_K:  {"Q5_K", 256, 176, false},
	Q6_K:  {"Q6_K", 256, 210, true},
	Q8_K:  {"Q8_K", 256, 292, false},
	I8:    {"I8", 1, 1, false},
	I16:   {"I16", 1, 2, false},
	I32:   {"I32", 1, 4, false},
	I64:   {"I64", 1, 8, false},
	F64:   {"F64", 1, 8, false},
	TQ1_0: {"TQ1_0", 256, 54, true},
	TQ2_0: {"TQ2_0", 256, 66, true},
	// I2_S packs 4 weights per byte in 128-weight blocks; its one fp32
	// scale per tensor follows the packed data (see TensorBytes).
	I2_S: {"I2_S", 128, 32, true},
	// The same bytes in bitnet.cpp's ARM layout: 64-weight blocks.
	I2_S_ARM: {"I2_S(arm)", 64, 16, true},
	Q2_0:     {"Q2_0", 64, 18, true},
}

// String returns the GGML name of the type, or "type(N)" when unknown.
func (t Type) String() string {
	if ti, ok := types[t]; ok {
		return ti.name
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// Known reports whether t is a file's type id whose layout we know (we can
// size it). In-memory types (I2_S_ARM) are not.
func (t Type) Known() bool { _, ok := types[t]; return ok && t != I2_S_ARM }

// IsI2S reports whether t is bitnet.cpp's I2_S in either layout: codes
// only, with one fp32 scale per tensor after them.
func IsI2S(t Type) bool { return t == I2_S || t == I2_S_ARM }

// Supported reports whether we can dequantize t.
func (t Type) Supported() bool { return types[t].supported }

// BlockSize is the number of elements in one block (1 for plain types).
func (t Type) BlockSize() int { return types[t].blockSize }

// BlockBytes is the number of bytes of one block.
func (t Type) BlockBytes() int { return types[t].blockBytes }

// I2SScaleBytes is the room bitnet.cpp leaves after I2_S packed data for the
// per-tensor fp32 scale (padded to 32 bytes).
const I2SScaleBytes = 32

// RowBytes returns the bytes of one row of n elements, or an error when n is
// not a whole number of blocks. For I2_S it excludes the trailing scale.
func (t Type) RowBytes(n int) (int, error) {
	ti, ok := types[t]
	if !ok {
		return 0, fmt.Errorf("quant: unknown tensor type %d", uint32(t))
	}
	if n < 0 || n%ti.blockSize != 0 {
		return 0, fmt.Errorf("quant: %s row of %d elements is not a multiple of the block size %d", ti.name, n, ti.blockSize)
	}
	return n / ti.blockSize * ti.blockBytes, nil
}

// TensorBytes returns the bytes a tensor of n elements with rows of rowLen
// elements takes in a file, or an error when the shape does not fit the type.
// It guards against overflow so callers can trust it on hostile sizes.
func TensorBytes(t Type, rowLen, n uint64) (uint64, error) {
	ti, ok := types[t]
	if !ok {
		return 0, fmt.Errorf("quant: unknown tensor type %d", uint32(t))
	}
	bs := uint64(ti.blockSize)
	if t == I2_S {
		// Id 36 may hold either layout (see I2_S_ARM); both take n/4 bytes,
		// so size it by the smaller block and let the loader pick.
		bs = 64
	}
	if rowLen == 0 || rowLen%bs != 0 {
		return 0, fmt.Errorf("quant: %s row of %d elements is not a multiple of the block size %d", ti.name, rowLen, bs)
	}
	if n%rowLen != 0 {
		return 0, fmt.Errorf("quant: %d elements is not a whole number of %d-element rows", n, rowLen)
	}
	const limit = 1 << 50
	if n > limit {
		return 0, fmt.Errorf("quant: %d elements is too many", n)
	}
	size := n / uint64(ti.blockSize) * uint64(ti.blockBytes)
	if IsI2S(t) {
		size = n/4 + I2SScaleBytes
	}
	return size, nil
}
