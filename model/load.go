package model

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/quant"
)

// FromGGUF reads a network's Config and Weights from a GGUF file. Matrices
// stay views into the file's data; norm vectors and biases are decoded to
// float32. The architectures are those registered by the arch_*.go files
// (Architectures lists them). Every tensor is looked up by name and checked
// for shape and type, and every tensor of the file must be one the
// description reads (as llama.cpp requires); the first problem is
// returned, naming the tensor.
func FromGGUF(f *gguf.File) (*Weights, error) { return FromGGUFWith(f, LoadOptions{}) }

// FromGGUFWith is FromGGUF with options (how to read I2_S tensors).
func FromGGUFWith(f *gguf.File, opts LoadOptions) (*Weights, error) {
	name, err := f.String("general.architecture")
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	a, ok := architectures[Arch(name)]
	if !ok {
		return nil, fmt.Errorf("model: unsupported architecture %q (supported: %s)", name, strings.Join(Architectures(), ", "))
	}
	l := &loader{f: f, arch: Arch(name), desc: a, prefix: name + ".", used: map[string]bool{}, i2s: quant.I2_S}
	for i := range f.Tensors {
		if f.Tensors[i].Type == quant.I2_S {
			layout, _, err := ChooseI2SLayout(f, opts.I2SLayout)
			if err != nil {
				return nil, fmt.Errorf("model: I2_S layout: %w", err)
			}
			l.i2s = layout.Type()
			break
		}
	}
	c, err := l.config()
	if err != nil {
		return nil, err
	}
	w, err := l.weights(c)
	if err != nil {
		return nil, err
	}
	if err := l.allUsed(); err != nil {
		return nil, err
	}
	w.release = f.Release
	return w, nil
}

// loader reads one file; err keeps the first failure so the reading code
// stays linear.
type loader struct {
	f      *gguf.File
	arch   Arch
	desc   *architecture
	prefix string // "<arch>."
	used   map[string]bool
	i2s    quant.Type // how type id 36 is read: I2_S or I2_S_ARM
	err    error
}

// hasTensor tells whether the file has tensor name.
func (l *loader) hasTensor(name string) bool {
	_, ok := l.f.Tensor(name)
	return ok
}

// allUsed fails on the first tensor of the file that the description did
// not read: a feature it does not know (a bias, a fused QKV, a vision
// tower) must not be silently ignored.
func (l *loader) allUsed() error {
	for i := range l.f.Tensors {
		name := l.f.Tensors[i].Name
		if !l.used[name] && !slices.Contains(l.desc.ignored, name) {
			return fmt.Errorf("model: tensor %q is not part of architecture %q as EdgeLLM implements it (biases, fused QKV and other extra tensors are not supported)", name, l.arch)
		}
	}
	return nil
}

func (l *loader) fail(format string, args ...any) {
	if l.err == nil {
		l.err = fmt.Errorf("model: "+format, args...)
	}
}

// --- hyper-parameters ---

// uintKey reads <arch>.key as a positive int; def < 0 means required.
func (l *loader) uintKey(key string, def int) int {
	full := l.prefix + key
	if !l.f.Has(full) {
		if def < 0 {
			l.fail("missing metadata key %q", full)
		}
		return def
	}
	v, err := l.f.Uint(full)
	if err != nil {
		l.fail("%w", err)
		return 0
	}
	if v > math.MaxInt32 {
		l.fail("metadata %q = %d is too large", full, v)
		return 0
	}
	return int(v)
}

// floatKey reads <arch>.key as float32; required when def is NaN.
func (l *loader) floatKey(key string, def float32) float32 {
	full := l.prefix + key
	if !l.f.Has(full) {
		if def != def {
			l.fail("missing metadata key %q", full)
		}
		return def
	}
	v, err := l.f.Float(full)
	if err != nil {
		l.fail("%w", err)
	}
	return float32(v)
}

func (l *loader) config() (*Config, error) {
	c := &Config{Arch: l.arch, RopeScale: 1}
	c.Dim = l.uintKey("embedding_length", -1)
	c.FFNDim = l.uintKey("feed_forward_length", -1)
	c.Layers = l.uintKey("block_count", -1)
	c.Heads = l.uintKey("attention.head_count", -1)
	c.KVHeads = l.uintKey("attention.head_count_kv", c.Heads)
	c.ContextLen = l.uintKey("context_length", 0)
	c.NormEps = l.floatKey("attention.layer_norm_rms_epsilon", float32(math.NaN()))
	c.RopeBase = l.floatKey("rope.freq_base", 10000)
	if l.err != nil {
		return nil, l.err
	}
	// A head's width: key_length when the file says (Gemma 3, Qwen3),
	// else Dim/Heads, as llama.cpp's n_embd_head_k.
	if l.f.Has(l.prefix + "attention.key_length") {
		c.HeadDim = l.uintKey("attention.key_length", -1)
	} else if c.Heads <= 0 || c.Dim%c.Heads != 0 {
		return nil, fmt.Errorf("model: embedding length %d is not a multiple of the head count %d", c.Dim, c.Heads)
	} else {
		c.HeadDim = c.Dim / c.Heads
	}
	if vl := l.uintKey("attention.value_length", c.HeadDim); vl != c.HeadDim {
		l.fail("attention value length %d differs from the key length %d", vl, c.HeadDim)
	}
	if rd := l.uintKey("rope.dimension_count", c.HeadDim); rd != c.HeadDim {
		l.fail("partial RoPE (rope.dimension_count %d, head size %d) is not supported", rd, c.HeadDim)
	}
	c.RopeScale = l.ropeScale()
	c.Vocab = l.vocab()
	if l.err != nil {
		return nil, l.err
	}
	// Llama 3's per-frequency divisors, when the file has them.
	if l.hasTensor("rope_freqs.weight") && c.HeadDim > 0 && c.HeadDim <= maxDim {
		c.RopeFreqFactors = l.vector("rope_freqs.weight", c.HeadDim/2)
		if l.err != nil {
			return nil, l.err
		}
	}
	// What the layers do: the architecture's own description.
	l.desc.describe(l, c)
	if l.err != nil {
		return nil, l.err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// ropeScale follows llama.cpp: the factor comes from rope.scaling.factor (or
// the older rope.scale_linear); type "none" means no scaling whatever the
// factor; a missing type means linear.
func (l *loader) ropeScale() float32 {
	typ := "linear"
	if k := l.prefix + "rope.scaling.type"; l.f.Has(k) {
		s, err := l.f.String(k)
		if err != nil {
			l.fail("%w", err)
			return 1
		}
		typ = s
	}
	factor := l.floatKey("rope.scaling.factor", 0)
	if factor == 0 {
		factor = l.floatKey("rope.scale_linear", 0)
	}
	switch {
	case typ == "none":
		return 1
	case typ != "linear":
		l.fail("RoPE scaling type %q is not supported (only none and linear)", typ)
		return 1
	case factor == 0:
		return 1
	case !(factor > 0) || math.IsInf(float64(factor), 0):
		l.fail("RoPE scaling factor %g out of range", factor)
		return 1
	}
	return factor
}

// vocab reads <arch>.vocab_size, else the tokenizer's token count, else
// token_embd's rows.
func (l *loader) vocab() int {
	if l.f.Has(l.prefix + "vocab_size") {
		return l.uintKey("vocab_size", -1)
	}
	if l.f.Has("tokenizer.ggml.tokens") {
		toks, err := l.f.Strings("tokenizer.ggml.tokens")
		if err != nil {
			l.fail("%w", err)
		}
		return len(toks)
	}
	ti, ok := l.f.Tensor("token_embd.weight")
	if !ok || len(ti.Dims) != 2 || ti.Dims[1] > maxVocab {
		l.fail("no vocabulary size: no %q, no tokenizer.ggml.tokens and no usable token_embd.weight", l.prefix+"vocab_size")
		return 0
	}
	return int(ti.Dims[1])
}

// --- tensors ---

func (l *loader) weights(c *Config) (*Weights, error) {
	w := &Weights{Config: *c}
	w.Embed = l.matrix("token_embd.weight", c.Vocab, c.Dim)
	qDim, kvDim := c.QDim(), c.KVDim()
	for i := range c.Layers {
		blk := func(name string) string { return fmt.Sprintf("blk.%d.%s", i, name) }
		var L Layer
		L.AttnNorm = l.vector(blk("attn_norm.weight"), c.Dim)
		L.Wq = l.layerMatrix(blk("attn_q"), qDim, c.Dim)
		L.Wk = l.layerMatrix(blk("attn_k"), kvDim, c.Dim)
		L.Wv = l.layerMatrix(blk("attn_v"), kvDim, c.Dim)
		if c.QKVBias {
			L.Bq = l.vector(blk("attn_q.bias"), qDim)
			L.Bk = l.vector(blk("attn_k.bias"), kvDim)
			L.Bv = l.vector(blk("attn_v.bias"), kvDim)
		}
		if c.QKNorm {
			L.QNorm = l.vector(blk("attn_q_norm.weight"), c.HeadDim)
			L.KNorm = l.vector(blk("attn_k_norm.weight"), c.HeadDim)
		}
		L.Wo = l.layerMatrix(blk("attn_output"), c.Dim, qDim)
		L.FFNNorm = l.vector(blk("ffn_norm.weight"), c.Dim)
		L.Wgate = l.layerMatrix(blk("ffn_gate"), c.FFNDim, c.Dim)
		L.Wup = l.layerMatrix(blk("ffn_up"), c.FFNDim, c.Dim)
		L.Wdown = l.layerMatrix(blk("ffn_down"), c.Dim, c.FFNDim)
		if c.SubNorms {
			L.AttnSubNorm = l.vector(blk("attn_sub_norm.weight"), qDim)
			L.FFNSubNorm = l.vector(blk("ffn_sub_norm.weight"), c.FFNDim)
		}
		if c.PostNorms {
			L.AttnPostNorm = l.vector(blk("post_attention_norm.weight"), c.Dim)
			L.FFNPostNorm = l.vector(blk("post_ffw_norm.weight"), c.Dim)
		}
		if l.err != nil {
			return nil, l.err
		}
		w.Layers = append(w.Layers, L)
	}
	w.OutNorm = l.vector("output_norm.weight", c.Dim)
	// Tied when output.weight is absent; some architectures always take
	// the LM head from token_embd (both BitNet graphs).
	if l.hasTensor("output.weight") && !l.desc.headFromEmbed {
		w.Output = l.matrix("output.weight", c.Vocab, c.Dim)
	} else {
		w.Output, w.Tied = w.Embed, true
	}
	if l.err != nil {
		return nil, l.err
	}
	return w, nil
}

// layerMatrix reads "<base>.weight" and, for architectures with
// tensorScales (BitNet), multiplies in the optional one-element
// "<base>.scale" tensor.
func (l *loader) layerMatrix(base string, rows, cols int) Tensor {
	t := l.matrix(base+".weight", rows, cols)
	if _, ok := l.f.Tensor(base + ".scale"); ok && l.err == nil {
		if !l.desc.tensorScales {
			l.fail("tensor %q: per-tensor scales are only read for BitNet architectures", base+".scale")
			return t
		}
		if s := l.vector(base+".scale", 1); s != nil {
			t.Scale *= s[0]
		}
		if math.IsNaN(float64(t.Scale)) || math.IsInf(float64(t.Scale), 0) {
			l.fail("tensor %q: scale is %g", t.Name, t.Scale)
		}
	}
	return t
}

// info finds a tensor and checks its dims (GGUF order: ne0 first).
func (l *loader) info(name string, dims ...uint64) *gguf.TensorInfo {
	if l.err != nil {
		return nil
	}
	ti, ok := l.f.Tensor(name)
	if !ok {
		l.fail("tensor %q is missing", name)
		return nil
	}
	l.used[name] = true
	if !slices.Equal(ti.Dims, dims) {
		l.fail("tensor %q: shape %v, want %v", name, ti.Dims, dims)
		return nil
	}
	return ti
}

// matrix returns a checked [rows, cols] view of a 2-D tensor (GGUF dims
// [cols, rows]).
func (l *loader) matrix(name string, rows, cols int) Tensor {
	ti := l.info(name, uint64(cols), uint64(rows))
	if ti == nil {
		return Tensor{}
	}
	typ, err := l.tensorType(ti)
	if err != nil {
		l.fail("tensor %q: %w", name, err)
		return Tensor{}
	}
	rb, err := typ.RowBytes(cols)
	if err != nil {
		l.fail("tensor %q: %w", name, err)
		return Tensor{}
	}
	n := rows * rb
	if len(ti.Data) < n {
		l.fail("tensor %q: %d bytes of data, want %d", name, len(ti.Data), n)
		return Tensor{}
	}
	t := Tensor{Name: name, Type: typ, Rows: rows, Cols: cols, Data: ti.Data[:n:n], Scale: 1}
	if quant.IsI2S(typ) {
		s, err := quant.I2SScale(ti.Data, rows*cols)
		if err != nil {
			l.fail("tensor %q: %w", name, err)
			return Tensor{}
		}
		t.Scale = s
	}
	return t
}

// vector decodes a 1-D tensor of n elements to float32.
func (l *loader) vector(name string, n int) []float32 {
	ti := l.info(name, uint64(n))
	if ti == nil {
		return nil
	}
	typ, err := l.tensorType(ti)
	if err != nil {
		l.fail("tensor %q: %w", name, err)
		return nil
	}
	if quant.IsI2S(typ) {
		l.fail("tensor %q: I2_S is not a type for a vector", name)
		return nil
	}
	rb, err := typ.RowBytes(n)
	if err != nil || len(ti.Data) < rb {
		l.fail("tensor %q: %d %s elements do not fit its %d bytes", name, n, typ, len(ti.Data))
		return nil
	}
	out := make([]float32, n)
	if err := quant.Dequantize(typ, out, ti.Data[:rb]); err != nil {
		l.fail("tensor %q: %w", name, err)
		return nil
	}
	return out
}

// tensorType checks that we can read the tensor's type. Id 36 is ambiguous:
// bitnet.cpp's I2_S, or a repacked Q4_0/IQ4_NL type upstream ggml once gave
// that id. We take it as I2_S only when the bytes the file reserves for the
// tensor (up to the next tensor) are exactly I2_S's size, or, for the file's
// last tensor, when the architecture is one bitnet.cpp writes or the file
// has EdgeLLM's I2_S layout key.
func (l *loader) tensorType(ti *gguf.TensorInfo) (quant.Type, error) {
	if ti.Type != quant.I2_S {
		if !ti.Type.Supported() {
			return 0, fmt.Errorf("unsupported tensor type %s", ti.Type)
		}
		return ti.Type, nil
	}
	var n uint64 = 1
	for _, d := range ti.Dims {
		n *= d
	}
	want, err := quant.TensorBytes(quant.I2_S, ti.Dims[0], n)
	if err != nil {
		return 0, fmt.Errorf("type id 36 taken as bitnet.cpp's I2_S: %w", err)
	}
	gap, ok := l.reserved(ti)
	if !ok {
		// Files `edgellm quantize` writes say so with their layout key.
		if !l.desc.tensorScales && !l.f.Has(KeyI2SLayout) {
			return 0, errors.New("type id 36 is ambiguous (bitnet.cpp's I2_S or an old upstream repacked type) and cannot be sized in a llama file's last tensor")
		}
		return l.i2s, nil
	}
	if gap < want || gap >= want+l.alignment() {
		return 0, fmt.Errorf("type id 36 taken as bitnet.cpp's I2_S (architecture %q), but the file reserves %d bytes for it where I2_S needs %d: not an I2_S tensor", l.arch, gap, want)
	}
	return l.i2s, nil
}

// reserved returns the bytes between a tensor's offset and the next
// tensor's, when it is not the last.
func (l *loader) reserved(ti *gguf.TensorInfo) (uint64, bool) {
	next, found := uint64(0), false
	for i := range l.f.Tensors {
		o := l.f.Tensors[i].Offset
		if o > ti.Offset && (!found || o < next) {
			next, found = o, true
		}
	}
	return next - ti.Offset, found
}

func (l *loader) alignment() uint64 {
	if a, err := l.f.Uint("general.alignment"); err == nil && a > 0 {
		return a
	}
	return 32
}

// slidingLayers reads attention.sliding_window_pattern: a period n (layer
// l is local unless l%n == n-1, llama.cpp's set_swa_pattern; 0 makes every
// layer local) or an array of one bool per layer; period def when the key
// is absent.
func (l *loader) slidingLayers(layers, def int) []bool {
	local := make([]bool, max(layers, 0))
	key := l.prefix + "attention.sliding_window_pattern"
	v, ok := l.f.Lookup(key)
	if ok && v.Type() == gguf.TypeArray {
		vals, _ := v.Array()
		if len(vals) != layers {
			l.fail("metadata %q has %d values for %d layers", key, len(vals), layers)
			return nil
		}
		for i, e := range vals {
			b, isBool := e.Bool()
			if !isBool {
				l.fail("metadata %q: element %d is %s, want bool", key, i, e.Type())
				return nil
			}
			local[i] = b
		}
		return local
	}
	n := l.uintKey("attention.sliding_window_pattern", def)
	for i := range local {
		local[i] = n == 0 || i%n < n-1 // period 0: every layer, as llama.cpp
	}
	return local
}
