package convert

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/edgellm/edgellm/quant"
)

// This file writes tiny Hugging Face checkpoints for the tests: a
// safetensors writer (F32, F16, BF16, U8; one file or shards with an
// index), random weights for each architecture, and BitNet's packing as
// transformers' integrations/bitnet.py does it.

// hfTensor is one checkpoint tensor: float values already rounded to its
// dtype (so a forward pass from them sees exactly what the file holds),
// or raw bytes for U8.
type hfTensor struct {
	dtype string
	shape []int64
	f     []float32
	raw   []byte
}

type hfCkpt struct {
	config  map[string]any
	tensors map[string]*hfTensor
}

// roundTo rounds v to what dtype stores.
func roundTo(dtype string, v float32) float32 {
	switch dtype {
	case "F16":
		return quant.F16ToF32(quant.F32ToF16(v))
	case "BF16":
		return quant.BF16ToF32(quant.F32ToBF16(v))
	}
	return v
}

func (h *hfCkpt) add(name, dtype string, shape []int64, f []float32) {
	for i := range f {
		f[i] = roundTo(dtype, f[i])
	}
	h.tensors[name] = &hfTensor{dtype: dtype, shape: shape, f: f}
}

// encode returns a tensor's bytes as safetensors stores them.
func (t *hfTensor) encode() []byte {
	if t.raw != nil {
		return t.raw
	}
	var b []byte
	for _, v := range t.f {
		switch t.dtype {
		case "F32":
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		case "F16":
			b = binary.LittleEndian.AppendUint16(b, quant.F32ToF16(v))
		case "BF16":
			b = binary.LittleEndian.AppendUint16(b, quant.F32ToBF16(v))
		default:
			panic("encode " + t.dtype)
		}
	}
	return b
}

// safetensorsBytes lays out tensors (in name order) as a safetensors file.
func safetensorsBytes(tensors map[string]*hfTensor) []byte {
	names := make([]string, 0, len(tensors))
	for n := range tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	hdr := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var data []byte
	for _, n := range names {
		b := tensors[n].encode()
		hdr[n] = map[string]any{"dtype": tensors[n].dtype, "shape": tensors[n].shape,
			"data_offsets": []int{len(data), len(data) + len(b)}}
		data = append(data, b...)
	}
	js, err := json.Marshal(hdr)
	if err != nil {
		panic(err)
	}
	for len(js)%8 != 0 { // the reference writer pads with spaces
		js = append(js, ' ')
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(js)))
	return append(append(out, js...), data...)
}

// write puts the checkpoint in a new folder: config.json and one
// model.safetensors, or that many shards and model.safetensors.index.json.
func (h *hfCkpt) write(t *testing.T, shards int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ckpt")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg, _ := json.MarshalIndent(h.config, "", "  ")
	writeFile(t, filepath.Join(dir, "config.json"), cfg)
	if shards <= 1 {
		writeFile(t, filepath.Join(dir, "model.safetensors"), safetensorsBytes(h.tensors))
		return dir
	}
	names := make([]string, 0, len(h.tensors))
	for n := range h.tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]map[string]*hfTensor, shards)
	weightMap := map[string]string{}
	for i, n := range names {
		s := i % shards
		if parts[s] == nil {
			parts[s] = map[string]*hfTensor{}
		}
		parts[s][n] = h.tensors[n]
		weightMap[n] = fmt.Sprintf("model-%05d-of-%05d.safetensors", s+1, shards)
	}
	for s, p := range parts {
		writeFile(t, filepath.Join(dir, fmt.Sprintf("model-%05d-of-%05d.safetensors", s+1, shards)), safetensorsBytes(p))
	}
	idx, _ := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 0}, "weight_map": weightMap})
	writeFile(t, filepath.Join(dir, "model.safetensors.index.json"), idx)
	return dir
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// tiny is a tiny model's shape and flavour.
type tiny struct {
	hfArch                     string
	hidden, ffn, layers        int
	heads, kvHeads, headDim    int
	vocab                      int
	dtype                      string // of the matrices and vectors
	tied                       bool
	bitnetPacked               bool // Falcon3-1.58bit-style packed ternary linear weights
	autoBitLinear              bool // packed with linear_class autobitlinear (weight_scale multiplies)
	act                        string
	ropeTheta, localTheta, eps float64
	window, period             int     // gemma3
	softcap                    float64 // gemma3 final_logit_softcapping
	linear                     float64 // rope_scaling linear factor (0: none)
	llama3                     bool    // rope_scaling llama3 (factor 8, low 1, high 4, original 1024)
	bitnetSubNormNames         [2]string
}

func (s tiny) qDim() int  { return s.heads * s.headDim }
func (s tiny) kvDim() int { return s.kvHeads * s.headDim }

// generate makes random weights and the config for s. Matrices are
// N(0, 1/cols) so activations stay O(1); norm weights are near 1 (near 0
// for Gemma, which adds 1).
func (s tiny) generate(seed uint64) *hfCkpt {
	r := rand.New(rand.NewPCG(seed, 7))
	h := &hfCkpt{tensors: map[string]*hfTensor{}}
	gauss := func(n int, std float64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64() * std)
		}
		return v
	}
	gemma := s.hfArch == "Gemma3ForCausalLM"
	norm := func(name string, n int) {
		v := gauss(n, 0.1)
		if !gemma {
			for i := range v {
				v[i]++
			}
		}
		h.add(name, s.dtype, []int64{int64(n)}, v)
	}
	mat := func(name string, rows, cols int) {
		h.add(name, s.dtype, []int64{int64(rows), int64(cols)}, gauss(rows*cols, 1/math.Sqrt(float64(cols))))
	}
	h.add("model.embed_tokens.weight", s.dtype, []int64{int64(s.vocab), int64(s.hidden)}, gauss(s.vocab*s.hidden, 1))
	norm("model.norm.weight", s.hidden)
	if !s.tied {
		mat("lm_head.weight", s.vocab, s.hidden)
	}
	for l := range s.layers {
		p := fmt.Sprintf("model.layers.%d.", l)
		norm(p+"input_layernorm.weight", s.hidden)
		mat(p+"self_attn.q_proj.weight", s.qDim(), s.hidden)
		mat(p+"self_attn.k_proj.weight", s.kvDim(), s.hidden)
		mat(p+"self_attn.v_proj.weight", s.kvDim(), s.hidden)
		mat(p+"self_attn.o_proj.weight", s.hidden, s.qDim())
		norm(p+"post_attention_layernorm.weight", s.hidden)
		mat(p+"mlp.gate_proj.weight", s.ffn, s.hidden)
		mat(p+"mlp.up_proj.weight", s.ffn, s.hidden)
		mat(p+"mlp.down_proj.weight", s.hidden, s.ffn)
		switch s.hfArch {
		case "Qwen2ForCausalLM":
			h.add(p+"self_attn.q_proj.bias", s.dtype, []int64{int64(s.qDim())}, gauss(s.qDim(), 0.5))
			h.add(p+"self_attn.k_proj.bias", s.dtype, []int64{int64(s.kvDim())}, gauss(s.kvDim(), 0.5))
			h.add(p+"self_attn.v_proj.bias", s.dtype, []int64{int64(s.kvDim())}, gauss(s.kvDim(), 0.5))
		case "Qwen3ForCausalLM":
			norm(p+"self_attn.q_norm.weight", s.headDim)
			norm(p+"self_attn.k_norm.weight", s.headDim)
		case "Gemma3ForCausalLM":
			norm(p+"self_attn.q_norm.weight", s.headDim)
			norm(p+"self_attn.k_norm.weight", s.headDim)
			norm(p+"pre_feedforward_layernorm.weight", s.hidden)
			norm(p+"post_feedforward_layernorm.weight", s.hidden)
		case "BitNetForCausalLM", "BitnetForCausalLM":
			norm(p+s.bitnetSubNormNames[0], s.qDim())
			norm(p+s.bitnetSubNormNames[1], s.ffn)
		}
	}
	if s.bitnetPacked {
		for l := range s.layers {
			for _, m := range []string{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
				"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"} {
				name := fmt.Sprintf("model.layers.%d.%s", l, m)
				w := h.tensors[name+".weight"]
				codes := make([]int8, len(w.f))
				for i := range codes {
					codes[i] = int8(r.IntN(3) - 1)
				}
				scale := float32(4 + 8*r.Float64())
				h.packTernary(name, codes, w.shape, scale, "BF16")
			}
		}
	}
	h.config = s.config()
	return h
}

// packTernary replaces name.weight by codes packed as transformers'
// pack_weights does (4 values per byte along the rows, value+1 in bits
// 2i..2i+1 for row i*R/4+r), with weight_scale stored as dtype.
func (h *hfCkpt) packTernary(name string, codes []int8, shape []int64, scale float32, dtype string) {
	rows, cols := int(shape[0]), int(shape[1])
	q := rows / 4
	packed := make([]byte, q*cols)
	for i := range 4 {
		for rr := range q {
			for c := range cols {
				packed[rr*cols+c] |= byte(codes[(i*q+rr)*cols+c]+1) << (2 * i)
			}
		}
	}
	h.tensors[name+".weight"] = &hfTensor{dtype: "U8", shape: []int64{int64(q), int64(cols)}, raw: packed}
	h.add(name+".weight_scale", dtype, []int64{1}, []float32{scale})
}

func (s tiny) config() map[string]any {
	c := map[string]any{
		"architectures": []string{s.hfArch}, "hidden_size": s.hidden, "intermediate_size": s.ffn,
		"num_hidden_layers": s.layers, "num_attention_heads": s.heads, "num_key_value_heads": s.kvHeads,
		"vocab_size": s.vocab, "max_position_embeddings": 512, "rms_norm_eps": s.eps,
		"rope_theta": s.ropeTheta, "tie_word_embeddings": s.tied, "torch_dtype": "bfloat16",
	}
	if s.headDim != s.hidden/s.heads || s.hfArch == "Gemma3ForCausalLM" {
		c["head_dim"] = s.headDim
	}
	switch s.hfArch {
	case "Gemma3ForCausalLM":
		c["hidden_activation"] = s.act
		c["query_pre_attn_scalar"] = s.headDim
		c["sliding_window"] = s.window
		c["sliding_window_pattern"] = s.period
		c["rope_local_base_freq"] = s.localTheta
		c["final_logit_softcapping"] = s.softcap
		c["attn_logit_softcapping"] = nil
	default:
		c["hidden_act"] = s.act
	}
	if s.linear > 0 {
		c["rope_scaling"] = map[string]any{"type": "linear", "factor": s.linear}
	}
	if s.llama3 {
		c["rope_scaling"] = map[string]any{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
			"high_freq_factor": 4.0, "original_max_position_embeddings": 1024}
	}
	if s.bitnetPacked {
		lc := "bitlinear"
		if s.autoBitLinear {
			lc = "autobitlinear"
		}
		c["quantization_config"] = map[string]any{"quant_method": "bitnet", "linear_class": lc, "quantization_mode": "offline"}
	}
	return c
}

// Shapes of the tiny models. Rows are multiples of 4 (BitNet packing)
// and of 32 where Q8_0 is tried.
var (
	tinyLlama = tiny{hfArch: "LlamaForCausalLM", hidden: 32, ffn: 64, layers: 2, heads: 4, kvHeads: 2, headDim: 8,
		vocab: 48, dtype: "F32", act: "silu", ropeTheta: 10000, eps: 1e-5}
	tinyQwen2 = tiny{hfArch: "Qwen2ForCausalLM", hidden: 32, ffn: 64, layers: 2, heads: 4, kvHeads: 2, headDim: 8,
		vocab: 48, dtype: "BF16", tied: true, act: "silu", ropeTheta: 1e6, eps: 1e-6}
	tinyQwen3 = tiny{hfArch: "Qwen3ForCausalLM", hidden: 32, ffn: 64, layers: 2, heads: 4, kvHeads: 2, headDim: 16,
		vocab: 48, dtype: "F16", act: "silu", ropeTheta: 1e6, eps: 1e-6}
	tinyGemma3 = tiny{hfArch: "Gemma3ForCausalLM", hidden: 32, ffn: 64, layers: 3, heads: 4, kvHeads: 1, headDim: 16,
		vocab: 48, dtype: "BF16", tied: true, act: "gelu_pytorch_tanh", ropeTheta: 1e6, localTheta: 10000, eps: 1e-6,
		window: 3, period: 3, softcap: 30}
	tinyBitNet = tiny{hfArch: "BitNetForCausalLM", hidden: 32, ffn: 64, layers: 2, heads: 4, kvHeads: 2, headDim: 8,
		vocab: 48, dtype: "BF16", tied: true, act: "relu2", ropeTheta: 500000, eps: 1e-5,
		bitnetSubNormNames: [2]string{"self_attn.attn_sub_norm.weight", "mlp.ffn_sub_norm.weight"}}
	tinyFalcon158 = tiny{hfArch: "LlamaForCausalLM", hidden: 32, ffn: 64, layers: 2, heads: 4, kvHeads: 2, headDim: 8,
		vocab: 48, dtype: "BF16", act: "silu", ropeTheta: 1000042, eps: 1e-6, bitnetPacked: true}
)

// checkpointBytes is the whole folder's files, for tests that corrupt one.
func checkpointBytes(h *hfCkpt) (config, model []byte) {
	cfg, _ := json.Marshal(h.config)
	return cfg, safetensorsBytes(h.tensors)
}
