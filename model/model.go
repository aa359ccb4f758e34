// Package model describes the networks EdgeLLM runs as data: the
// hyper-parameters and the features of a layer (Config), read from GGUF
// metadata by one small description per architecture (arch_*.go), the
// weights as typed tensor views, and a plain reference forward pass that
// reads the description top to bottom and that every backend is checked
// against. It knows nothing of backends' internals.
package model

import (
	"fmt"
	"math"

	"github.com/edgellm/edgellm/quant"
)

// Arch names an architecture as GGUF's general.architecture spells it.
type Arch string

// Activation is the FFN gate's non-linearity.
type Activation int

const (
	SiLU     Activation = iota // silu(gate) * up
	ReLU2                      // relu(gate)^2 * up
	GELUTanh                   // gelu(gate) * up, GELU's tanh approximation
)

// RopeStyle says which head values RoPE rotates together.
type RopeStyle int

const (
	RopeNorm RopeStyle = iota // adjacent pairs (x[2i], x[2i+1]); llama.cpp's "normal"
	RopeNeoX                  // halves (x[i], x[i+d/2])
)

// Config is the architecture-neutral description of a network: its sizes
// and what each layer does. The reference forward (reference.go) reads it
// top to bottom; each backend compiles it into its own plan and refuses,
// at load, a feature it does not implement (Features, CheckFeatures).
type Config struct {
	Arch       Arch
	Dim        int // hidden size (embedding length)
	FFNDim     int // FFN inner size
	Layers     int
	Heads      int
	KVHeads    int
	HeadDim    int // one head's width for Q, K and V (GGUF key_length; Dim/Heads when absent)
	Vocab      int
	ContextLen int // the file's trained context length (a default, not a cap)
	NormEps    float32

	// Attention block: x += [PostNorm] Wo [SubNorm] attn(RoPE([QKNorm](W{q,k,v} norm(x) [+ bias]))).
	QKVBias   bool // q, k and v projections add a bias (Qwen2)
	QKNorm    bool // RMSNorm over each head of q and of k, before RoPE (Qwen3, Gemma 3)
	SubNorms  bool // BitNet: RMSNorm of the attention output before W_o and of the FFN hidden state before W_down
	PostNorms bool // RMSNorm of the attention and FFN outputs before each residual add (Gemma 3)
	// AttnScale multiplies q·k before the softmax; 0 means 1/sqrt(HeadDim).
	AttnScale float32

	// FFN block: x += [PostNorm] W_down [SubNorm] (act(W_gate n) * W_up n), n = norm(x).
	Act Activation

	// RoPE of every layer but the sliding-window ones.
	RopeBase  float32
	RopeStyle RopeStyle
	// RopeFreqFactors, when non-nil, divides each rotation frequency
	// (HeadDim/2 values; Llama 3's rope_freqs).
	RopeFreqFactors []float32
	// RopeScale is the linear position scale (1 = none): pos is multiplied by 1/RopeScale.
	RopeScale float32

	// Sliding-window attention (Gemma 3): a layer l with Local[l] sees only
	// the last Window positions (itself included) and rotates with base
	// LocalRopeBase, unscaled. Local is nil when no layer is local.
	Window        int
	Local         []bool
	LocalRopeBase float32

	// EmbedScale multiplies the embedding row (Gemma: sqrt(Dim)); 0 means 1.
	EmbedScale float32
	// LogitSoftcap, when positive, maps each final logit l to c*tanh(l/c).
	LogitSoftcap float32
}

// KVDim is the width of one position's K (or V) for one layer.
func (c *Config) KVDim() int { return c.KVHeads * c.HeadDim }

// KVBytes is the size of one sequence's KV cache for ctx positions: K and
// V of every layer, elemBytes a value (2 for float16, 4 for float32).
func (c *Config) KVBytes(ctx, elemBytes int) int64 {
	return 2 * int64(elemBytes) * int64(c.Layers) * int64(ctx) * int64(c.KVDim())
}

// QDim is the width of the queries (and of the attention output) of one
// position: Heads*HeadDim, which need not equal Dim.
func (c *Config) QDim() int { return c.Heads * c.HeadDim }

// ScoreScale is what q·k is multiplied by before the softmax.
func (c *Config) ScoreScale() float32 {
	if c.AttnScale != 0 {
		return c.AttnScale
	}
	return float32(1 / math.Sqrt(float64(c.HeadDim)))
}

// EmbedMul is what the embedding row is multiplied by.
func (c *Config) EmbedMul() float32 {
	if c.EmbedScale != 0 {
		return c.EmbedScale
	}
	return 1
}

// IsLocal tells whether layer l attends through the sliding window.
func (c *Config) IsLocal(l int) bool { return c.Local != nil && c.Local[l] }

// FirstVisible is the first cached position the query at pos attends to
// in layer l: 0, or pos-Window+1 in a sliding-window layer.
func (c *Config) FirstVisible(l, pos int) int {
	if c.IsLocal(l) {
		return max(0, pos-c.Window+1)
	}
	return 0
}

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

// Layer holds one transformer block's weights; the Config's features say
// which of the optional ones are set. Norm weights and biases are float32.
type Layer struct {
	AttnNorm     []float32 // [Dim]
	Wq           Tensor    // [QDim, Dim]
	Wk           Tensor    // [KVDim, Dim]
	Wv           Tensor    // [KVDim, Dim]
	Bq, Bk, Bv   []float32 // QKVBias: [QDim], [KVDim], [KVDim]
	QNorm, KNorm []float32 // QKNorm: [HeadDim], shared by every head
	AttnSubNorm  []float32 // SubNorms: [QDim]
	Wo           Tensor    // [Dim, QDim]
	AttnPostNorm []float32 // PostNorms: [Dim]
	FFNNorm      []float32 // [Dim]
	Wgate        Tensor    // [FFNDim, Dim]
	Wup          Tensor    // [FFNDim, Dim]
	FFNSubNorm   []float32 // SubNorms: [FFNDim]
	Wdown        Tensor    // [Dim, FFNDim]
	FFNPostNorm  []float32 // PostNorms: [Dim]
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
	case GELUTanh:
		return "gelu_tanh"
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
