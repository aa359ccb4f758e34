// Package model describes the networks EdgeLLM runs as data: hyper-parameters
// read from GGUF metadata, the weights as typed tensor views, and a plain
// reference forward pass that every backend is checked against. It knows
// nothing of backends' internals.
package model

import (
	"fmt"

	"github.com/edgellm/edgellm/quant"
)

// Arch names an architecture as GGUF's general.architecture spells it.
type Arch string

const (
	ArchLlama     Arch = "llama"        // Llama 2/3, SmolLM, TinyLlama, llama2.c stories
	ArchBitNet    Arch = "bitnet"       // llama.cpp's BitNet: sub-norms, SiLU gate
	ArchBitNet158 Arch = "bitnet-b1.58" // bitnet.cpp's BitNet b1.58 2B4T: sub-norms, ReLU² gate
	ArchBitNet25  Arch = "bitnet-25"    // earlier name of bitnet-b1.58
)

// Activation is the FFN gate's non-linearity.
type Activation int

const (
	SiLU  Activation = iota // silu(gate) * up
	ReLU2                   // relu(gate)^2 * up
)

// RopeStyle says which head values RoPE rotates together.
type RopeStyle int

const (
	RopeNorm RopeStyle = iota // adjacent pairs (x[2i], x[2i+1]); llama.cpp's "normal"
	RopeNeoX                  // halves (x[i], x[i+d/2])
)

// Config is the architecture-neutral description of a network.
type Config struct {
	Arch       Arch
	Dim        int // hidden size (embedding length)
	FFNDim     int // FFN inner size
	Layers     int
	Heads      int
	KVHeads    int
	HeadDim    int // Dim / Heads
	Vocab      int
	ContextLen int // the file's trained context length (a default, not a cap)
	NormEps    float32

	RopeBase  float32
	RopeStyle RopeStyle
	// RopeFreqFactors, when non-nil, divides each rotation frequency
	// (HeadDim/2 values; Llama 3 rope_freqs or computed from rope scaling).
	RopeFreqFactors []float32
	// RopeScale is the linear position scale (1 = none): pos is multiplied by 1/RopeScale.
	RopeScale float32

	Act      Activation
	SubNorms bool // BitNet: RMSNorm before W_o and before W_down
}

// KVDim is the width of one position's K (or V) for one layer.
func (c *Config) KVDim() int { return c.KVHeads * c.HeadDim }

// Tensor is a typed, row-major 2-D weight: Rows rows of Cols elements each,
// stored as quant blocks in Data (a view into the file where possible).
// Data holds exactly Rows*Type.RowBytes(Cols) bytes: for I2_S the packed
// codes only, the per-tensor scale having been moved into Scale.
type Tensor struct {
	Name string
	Type quant.Type
	Rows int // output features
	Cols int // input features (the contiguous dimension, GGUF ne0)
	Data []byte
	// Scale multiplies the product's result: I2_S's per-tensor scale, or a
	// BitNet ".scale" tensor; 1 when the tensor has none.
	Scale float32
}

// Layer holds one transformer block's weights. Norm weights are float32.
type Layer struct {
	AttnNorm    []float32 // [Dim]
	Wq          Tensor    // [Heads*HeadDim, Dim]
	Wk          Tensor    // [KVHeads*HeadDim, Dim]
	Wv          Tensor    // [KVHeads*HeadDim, Dim]
	AttnSubNorm []float32 // [Dim], BitNet only
	Wo          Tensor    // [Dim, Heads*HeadDim]
	FFNNorm     []float32 // [Dim]
	Wgate       Tensor    // [FFNDim, Dim]
	Wup         Tensor    // [FFNDim, Dim]
	FFNSubNorm  []float32 // [FFNDim], BitNet only
	Wdown       Tensor    // [Dim, FFNDim]
}

// Weights is a whole network: its Config and every tensor.
type Weights struct {
	Config
	Embed   Tensor // [Vocab, Dim] token embedding
	Layers  []Layer
	OutNorm []float32 // [Dim]
	Output  Tensor    // [Vocab, Dim] LM head; equal to Embed when tied
	Tied    bool

	// release drops a tensor's file pages from memory (set by FromGGUF).
	release func([]byte)
}

// ReleaseTensor tells the file behind w that a backend has repacked t and
// no longer reads t.Data, so the model is not resident twice. t.Data stays
// valid: touched again, it is read back from the file.
func (w *Weights) ReleaseTensor(t *Tensor) {
	if w.release != nil {
		w.release(t.Data)
	}
}

func (a Activation) String() string {
	switch a {
	case SiLU:
		return "silu"
	case ReLU2:
		return "relu2"
	}
	return fmt.Sprintf("activation(%d)", int(a))
}

func (s RopeStyle) String() string {
	switch s {
	case RopeNorm:
		return "norm"
	case RopeNeoX:
		return "neox"
	}
	return fmt.Sprintf("rope(%d)", int(s))
}
