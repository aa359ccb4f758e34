package convert

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/edgellm/edgellm/gguf"
)

// archSpec is what one Hugging Face architecture becomes in GGUF, as
// llama.cpp's convert_hf_to_gguf.py (conversion/*.py) writes it, or
// bitnet.cpp's converter for BitNet b1.58 2B4T, which upstream lacks.
type archSpec struct {
	arch string // general.architecture
	// permuteQK: the q and k rows go from HF's rotate-half order to the
	// adjacent pairs of llama.cpp's "normal" RoPE (LlamaModel.permute).
	permuteQK bool
	// ternarize: float q/k/v/o/gate/up/down weights are BitNet master
	// weights, written as their absmean ternary values (BitNet's
	// weight_quant, as bitnet.cpp's and llama.cpp's converters do).
	ternarize bool
	// normShift: Gemma's RMSNorm multiplies by 1+w; llama.cpp stores 1+w.
	normShift bool
	// layer maps a layer tensor's HF name (after "model.layers.N.") to its
	// GGUF name (after "blk.N.").
	layer map[string]string
	// required are the GGUF layer tensors every block must have.
	required []string
	// keys adds the architecture's own metadata after the common keys.
	keys func(c *hfConfig, k keyWriter) error
}

// baseLayer is the Llama block's tensors, shared by every architecture.
var baseLayer = map[string]string{
	"input_layernorm.weight":          "attn_norm.weight",
	"self_attn.q_proj.weight":         "attn_q.weight",
	"self_attn.k_proj.weight":         "attn_k.weight",
	"self_attn.v_proj.weight":         "attn_v.weight",
	"self_attn.o_proj.weight":         "attn_output.weight",
	"post_attention_layernorm.weight": "ffn_norm.weight",
	"mlp.gate_proj.weight":            "ffn_gate.weight",
	"mlp.up_proj.weight":              "ffn_up.weight",
	"mlp.down_proj.weight":            "ffn_down.weight",
}

var baseRequired = []string{"attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight",
	"attn_output.weight", "ffn_norm.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"}

// layerMap is baseLayer with changes (an empty value removes a name).
func layerMap(changes map[string]string) map[string]string {
	m := map[string]string{}
	for k, v := range baseLayer {
		m[k] = v
	}
	for k, v := range changes {
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	return m
}

var qkNorm = map[string]string{
	"self_attn.q_norm.weight": "attn_q_norm.weight",
	"self_attn.k_norm.weight": "attn_k_norm.weight",
}

// bitnetLayer adds the sub-norms under both names they have been given:
// 2B4T's attn_sub_norm / ffn_sub_norm, and 1bitLLM's inner_attn_ln /
// ffn_layernorm (llama.cpp's tensor map).
var bitnetLayer = layerMap(map[string]string{
	"self_attn.attn_sub_norm.weight": "attn_sub_norm.weight",
	"self_attn.inner_attn_ln.weight": "attn_sub_norm.weight",
	"mlp.ffn_sub_norm.weight":        "ffn_sub_norm.weight",
	"mlp.ffn_layernorm.weight":       "ffn_sub_norm.weight",
})

var bitnetRequired = append(slices.Clone(baseRequired), "attn_sub_norm.weight", "ffn_sub_norm.weight")

// vocabRopeKeys are the keys llama.cpp's converter writes for llama and
// bitnet-b1.58 beyond the common ones: the vocabulary size and RoPE's
// dimension count.
func vocabRopeKeys(c *hfConfig, k keyWriter) error {
	k.u32("vocab_size", c.VocabSize)
	k.u32("rope.dimension_count", c.headDim())
	return nil
}

var (
	llamaSpec = &archSpec{
		arch: "llama", permuteQK: true, layer: baseLayer, required: baseRequired,
		keys: vocabRopeKeys,
	}
	qwen2Spec = &archSpec{
		arch: "qwen2", required: baseRequired,
		layer: layerMap(map[string]string{
			"self_attn.q_proj.bias": "attn_q.bias",
			"self_attn.k_proj.bias": "attn_k.bias",
			"self_attn.v_proj.bias": "attn_v.bias",
		}),
	}
	qwen3Spec = &archSpec{
		arch: "qwen3", layer: layerMap(qkNorm),
		required: append(slices.Clone(baseRequired), "attn_q_norm.weight", "attn_k_norm.weight"),
	}
	gemma3Spec = &archSpec{
		arch: "gemma3", normShift: true,
		layer: layerMap(map[string]string{
			"self_attn.q_norm.weight":           "attn_q_norm.weight",
			"self_attn.k_norm.weight":           "attn_k_norm.weight",
			"post_attention_layernorm.weight":   "post_attention_norm.weight",
			"pre_feedforward_layernorm.weight":  "ffn_norm.weight",
			"post_feedforward_layernorm.weight": "post_ffw_norm.weight",
		}),
		required: append(slices.Clone(baseRequired), "attn_q_norm.weight", "attn_k_norm.weight",
			"post_attention_norm.weight", "post_ffw_norm.weight"),
		keys: gemma3Keys,
	}
	// bitnet-b1.58 is bitnet.cpp's name for BitNetForCausalLM (2B4T,
	// ReLU²); upstream llama.cpp does not read it.
	bitnet158Spec = &archSpec{
		arch: "bitnet-b1.58", ternarize: true, layer: bitnetLayer, required: bitnetRequired,
		keys: vocabRopeKeys,
	}
	// bitnet is llama.cpp's BitnetForCausalLM (1bitLLM, SiLU).
	bitnetSpec = &archSpec{
		arch: "bitnet", ternarize: true, layer: bitnetLayer, required: bitnetRequired,
		keys: func(c *hfConfig, k keyWriter) error {
			k.w.AddString(k.p+"rope.scaling.type", "linear")
			k.w.AddFloat32(k.p+"rope.scaling.factor", 1)
			return nil
		},
	}
)

// supportedHF lists the Hugging Face architectures convert reads.
var supportedHF = []string{"BitNetForCausalLM", "BitnetForCausalLM", "Gemma3ForCausalLM",
	"Gemma3ForConditionalGeneration", "LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"}

// resolveArch picks the description of the config's architecture, and
// fills in the defaults llama.cpp's converter assumes for it.
func resolveArch(c *hfConfig) (*archSpec, error) {
	hf := c.Architectures[0]
	act := c.activation()
	wantAct := func(s *archSpec, acts ...string) (*archSpec, error) {
		if act != "" && !slices.Contains(acts, act) {
			return nil, fmt.Errorf("convert: %s with activation %q is not supported (want %s)", hf, act, strings.Join(acts, " or "))
		}
		return s, nil
	}
	switch hf {
	case "LlamaForCausalLM", "LLaMAForCausalLM":
		return wantAct(llamaSpec, "silu")
	case "Qwen2ForCausalLM":
		return wantAct(qwen2Spec, "silu")
	case "Qwen3ForCausalLM":
		return wantAct(qwen3Spec, "silu")
	case "Gemma3ForCausalLM", "Gemma3ForConditionalGeneration":
		// conversion/gemma.py's defaults for keys Gemma configs may omit.
		if c.NumAttentionHeads == nil {
			c.NumAttentionHeads = ptr(8)
		}
		if c.NumKeyValueHeads == nil {
			c.NumKeyValueHeads = ptr(4)
		}
		if c.HeadDim == nil {
			c.HeadDim = ptr(256)
		}
		if c.MaxPositions == nil {
			c.MaxPositions = ptr(131072)
		}
		if c.RMSNormEps == nil {
			c.RMSNormEps = ptr(1e-6)
		}
		return wantAct(gemma3Spec, "gelu_pytorch_tanh")
	case "BitNetForCausalLM", "BitnetForCausalLM":
		// The graph follows the activation: bitnet.cpp's bitnet-b1.58 is
		// ReLU² (2B4T), llama.cpp's bitnet is SiLU (1bitLLM).
		switch act {
		case "relu2":
			return bitnet158Spec, nil
		case "silu":
			return bitnetSpec, nil
		}
		return nil, fmt.Errorf("convert: %s with activation %q is not supported (want relu2 or silu)", hf, act)
	}
	return nil, fmt.Errorf("convert: unsupported architecture %q (supported: %s)", hf, strings.Join(supportedHF, ", "))
}

func ptr[T any](v T) *T { return &v }

// keyWriter adds "<arch>.<key>" metadata.
type keyWriter struct {
	w *gguf.Writer
	p string
}

func (k keyWriter) u32(key string, v int)     { k.w.AddUint32(k.p+key, uint32(v)) }
func (k keyWriter) f32(key string, v float64) { k.w.AddFloat32(k.p+key, float32(v)) }

// writeKeys adds the hyper-parameters as llama.cpp's TextModel writes
// them (conversion/base.py set_gguf_parameters), then the architecture's
// own keys. The config has been validated (checkConfig).
func (s *archSpec) writeKeys(c *hfConfig, w *gguf.Writer) error {
	k := keyWriter{w: w, p: s.arch + "."}
	k.u32("block_count", c.NumHiddenLayers)
	if c.MaxPositions != nil {
		k.u32("context_length", *c.MaxPositions)
	}
	k.u32("embedding_length", c.HiddenSize)
	k.u32("feed_forward_length", c.IntermediateSize)
	k.u32("attention.head_count", c.heads())
	if c.NumKeyValueHeads != nil {
		k.u32("attention.head_count_kv", *c.NumKeyValueHeads)
	}
	if r := c.rope(); r != nil {
		switch kind := r.kind(); kind {
		case "", "default":
		case "linear":
			if r.Factor != nil {
				w.AddString(k.p+"rope.scaling.type", "linear")
				k.f32("rope.scaling.factor", *r.Factor)
			}
		case "llama3":
			if s != llamaSpec {
				return fmt.Errorf("convert: rope_scaling type llama3 is only read for Llama")
			}
			// written as the rope_freqs tensor (ropeFreqFactors)
		default:
			return fmt.Errorf("convert: rope_scaling type %q is not supported (none, linear and llama3 are)", kind)
		}
	}
	if t := c.ropeTheta(); t != nil {
		k.f32("rope.freq_base", *t)
	}
	if t := c.localRopeTheta(); t != nil {
		k.f32("rope.freq_base_swa", *t)
	}
	if c.RMSNormEps != nil {
		k.f32("attention.layer_norm_rms_epsilon", *c.RMSNormEps)
	}
	if c.HeadDim != nil {
		k.u32("attention.key_length", *c.HeadDim)
		k.u32("attention.value_length", *c.HeadDim)
	}
	if s.keys != nil {
		return s.keys(c, k)
	}
	return nil
}

// gemma3Keys follows conversion/gemma.py, plus the sliding-window period
// when it is not llama.cpp's default of 6 (upstream never writes it, so a
// Gemma 3 with another period would be read wrongly without it).
func gemma3Keys(c *hfConfig, k keyWriter) error {
	if c.AttnLogitSoftcapping != nil {
		return fmt.Errorf("convert: gemma3: attn_logit_softcapping is not supported (Gemma 3 has none)")
	}
	if c.FinalLogitSoftcapping != nil && *c.FinalLogitSoftcapping != 0 {
		k.f32("final_logit_softcapping", *c.FinalLogitSoftcapping)
	}
	period, err := gemmaPeriod(c)
	if err != nil {
		return err
	}
	if period != 1 {
		if c.SlidingWindow == nil || *c.SlidingWindow <= 0 {
			return fmt.Errorf("convert: gemma3: config has sliding-window layers but no sliding_window")
		}
		k.u32("attention.sliding_window", *c.SlidingWindow)
		if period != 6 {
			k.u32("attention.sliding_window_pattern", period)
		}
	}
	// Queries are scaled by query_pre_attn_scalar^-1/2 in Hugging Face;
	// llama.cpp scales by key_length^-1/2 (hidden/heads for 62 layers).
	if q := c.QueryPreAttnScalar; q != nil {
		want := c.headDim()
		if c.NumHiddenLayers == 62 {
			want = c.HiddenSize / c.heads()
		}
		if *q != float64(want) {
			return fmt.Errorf("convert: gemma3: query_pre_attn_scalar %g cannot be expressed in GGUF (llama.cpp scales by 1/sqrt(%d))", *q, want)
		}
	}
	return nil
}

// gemmaPeriod is the sliding-window period: layer l is global iff
// l%period == period-1 (0: every layer local, 1: every layer global), from
// sliding_window_pattern or layer_types; 6 when the config says neither.
func gemmaPeriod(c *hfConfig) (int, error) {
	if c.SlidingWindowPattern != nil {
		if *c.SlidingWindowPattern < 0 {
			return 0, fmt.Errorf("convert: gemma3: sliding_window_pattern %d", *c.SlidingWindowPattern)
		}
		return *c.SlidingWindowPattern, nil
	}
	if c.LayerTypes == nil {
		return 6, nil
	}
	n := c.NumHiddenLayers
	if len(c.LayerTypes) != n {
		return 0, fmt.Errorf("convert: gemma3: %d layer_types for %d layers", len(c.LayerTypes), n)
	}
	local := make([]bool, n)
	for i, t := range c.LayerTypes {
		switch t {
		case "sliding_attention":
			local[i] = true
		case "full_attention":
		default:
			return 0, fmt.Errorf("convert: gemma3: layer type %q is not supported", t)
		}
	}
	for _, p := range append([]int{6, 0}, seq(1, n+1)...) {
		ok := true
		for i := range local {
			if local[i] != (p == 0 || i%p < p-1) {
				ok = false
				break
			}
		}
		if ok {
			return p, nil
		}
	}
	return 0, fmt.Errorf("convert: gemma3: layer_types %v follow no period llama.cpp can express", c.LayerTypes)
}

func seq(from, to int) []int {
	var s []int
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

// ropeFreqFactors is Llama 3's rope_freqs tensor (conversion/llama.py
// generate_extra_tensors), computed in float32 as there.
func ropeFreqFactors(c *hfConfig) []float32 {
	r := c.rope()
	get := func(p *float64, def float64) float64 {
		if p != nil {
			return *p
		}
		return def
	}
	base := float32(10000)
	if t := c.ropeTheta(); t != nil {
		base = float32(*t)
	}
	factor := get(r.Factor, 8)
	low, high := get(r.LowFreqFactor, 1), get(r.HighFreqFactor, 4)
	old := get(r.OriginalMaxPositions, 8192)
	lowWavelen, highWavelen := old/low, old/high
	dim := c.headDim()
	out := make([]float32, dim/2)
	for i := range out {
		freq := 1 / float32(math.Pow(float64(base), float64(float32(2*i)/float32(dim))))
		wavelen := float64(float32(2 * math.Pi / float64(freq)))
		switch {
		case wavelen < highWavelen:
			out[i] = 1
		case wavelen > lowWavelen:
			out[i] = float32(factor)
		default:
			smooth := (old/wavelen - low) / (high - low)
			out[i] = float32(1 / ((1-smooth)/factor + smooth))
		}
	}
	return out
}
