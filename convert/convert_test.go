package convert

import (
	"bytes"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/internal/testmodel"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/quant"
	"github.com/edgellm/edgellm/quantize"
)

// convertDir converts a checkpoint folder to a GGUF file in a temp folder.
func convertDir(t *testing.T, dir, typ string, o Options) (string, *Summary) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out.gguf")
	o.Type = typ
	sum, err := HF(dir, out, o)
	if err != nil {
		t.Fatal(err)
	}
	return out, sum
}

// testIDs is a fixed token sequence below vocab.
func testIDs(vocab, n int) []int {
	ids := make([]int, n)
	for i := range ids {
		ids[i] = (7*i + 3) % vocab
	}
	return ids
}

// worstRMS is the largest relative RMS difference, over positions, of the
// reference forward pass of the file at path against want.
func worstRMS(t *testing.T, path string, ids []int, want [][]float64) float64 {
	t.Helper()
	w := testmodel.Weights(t, path)
	ref := model.NewReference(w, len(ids))
	worst := 0.0
	for p, id := range ids {
		got := ref.Forward(int32(id), p)
		var d2, r2 float64
		for i, x := range want[p] {
			d := float64(got[i]) - x
			d2 += d * d
			r2 += x * x
		}
		worst = max(worst, math.Sqrt(d2/r2))
	}
	return worst
}

// TestHFLogits converts tiny checkpoints of every architecture (several
// source dtypes, single and sharded files, several output types) and
// checks the engine's reference forward pass on the converted file
// against an independent float64 forward pass in Hugging Face's own
// conventions from the source weights.
func TestHFLogits(t *testing.T) {
	oneBit := tinyBitNet // 1bitLLM's BitnetForCausalLM: SiLU, llama.cpp's bitnet
	oneBit.hfArch, oneBit.act = "BitnetForCausalLM", "silu"
	oneBit.bitnetSubNormNames = [2]string{"self_attn.inner_attn_ln.weight", "mlp.ffn_layernorm.weight"}
	wide := tinyLlama
	wide.hidden, wide.headDim = 40, 10 // rows of 40 cannot be Q8_0: F16 fallback
	smol := tinyLlama                  // SmolLM: tied, no lm_head
	smol.tied = true
	llama3 := tinyLlama
	llama3.llama3 = true
	linear := tinyQwen3
	linear.linear = 4
	autoBit := tinyFalcon158 // AutoBitLinear: weight_scale multiplies
	autoBit.autoBitLinear = true
	gemmaLinear := tinyGemma3
	gemmaLinear.linear = 8
	cases := []struct {
		name      string
		s         tiny
		shards    int
		typ       string
		arch      string
		tol       float64
		fallbacks bool
	}{
		{"llama-f32", tinyLlama, 1, "f32", "llama", 1e-5, false},
		{"llama-f16", tinyLlama, 2, "f16", "llama", 4e-3, false},
		{"llama-bf16", tinyLlama, 1, "bf16", "llama", 3e-2, false},
		{"llama-q8_0", tinyLlama, 1, "q8_0", "llama", 3e-2, false},
		{"llama-q8_0-fallback", wide, 1, "q8_0", "llama", 3e-2, true},
		{"smollm-tied", smol, 1, "f32", "llama", 1e-5, false},
		{"llama3-rope", llama3, 1, "f32", "llama", 1e-5, false},
		{"qwen3-linear-rope", linear, 1, "f32", "qwen3", 1e-5, false},
		{"gemma3-linear-rope", gemmaLinear, 1, "f32", "gemma3", 1e-5, false},
		{"qwen2-bf16-sharded", tinyQwen2, 3, "auto", "qwen2", 1e-5, false},
		{"qwen3-f16", tinyQwen3, 2, "auto", "qwen3", 1e-5, false},
		{"gemma3-bf16", tinyGemma3, 1, "f32", "gemma3", 1e-5, false},
		{"bitnet-b1.58-master", tinyBitNet, 1, "f32", "bitnet-b1.58", 1e-5, false},
		{"bitnet-1bitllm-master", oneBit, 1, "f32", "bitnet", 1e-5, false},
		{"falcon3-1.58bit-packed", tinyFalcon158, 2, "f32", "llama", 1e-5, false},
		{"falcon3-1.58bit-autobitlinear", autoBit, 1, "f32", "llama", 1e-5, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.s.generate(11)
			path, sum := convertDir(t, h.write(t, tc.shards), tc.typ, Options{})
			if sum.Arch != tc.arch {
				t.Fatalf("architecture %s, want %s", sum.Arch, tc.arch)
			}
			if (len(sum.Fallbacks) > 0) != tc.fallbacks {
				t.Fatalf("fallbacks %v, want some: %v", sum.Fallbacks, tc.fallbacks)
			}
			ids := testIDs(tc.s.vocab, 9)
			rms := worstRMS(t, path, ids, hfForward(tc.s, h, ids))
			t.Logf("%s: relative RMS %.2g (%s)", tc.name, rms, sum)
			if rms > tc.tol {
				t.Fatalf("relative RMS %.3g against the Hugging Face forward, want at most %g", rms, tc.tol)
			}
		})
	}
}

// TestHFTransformsMatter turns each layout rule off and checks the logits
// then move far beyond the tolerance: the logits test can see them.
func TestHFTransformsMatter(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    tiny
		spec *archSpec
		off  func(*archSpec)
	}{
		{"llama q/k permutation", tinyLlama, llamaSpec, func(a *archSpec) { a.permuteQK = false }},
		{"gemma3 norm +1", tinyGemma3, gemma3Spec, func(a *archSpec) { a.normShift = false }},
		{"bitnet ternary", tinyBitNet, bitnet158Spec, func(a *archSpec) { a.ternarize = false }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.s.generate(12)
			dir := h.write(t, 1)
			saved := *tc.spec
			tc.off(tc.spec)
			path, _ := convertDir(t, dir, "f32", Options{})
			*tc.spec = saved
			ids := testIDs(tc.s.vocab, 9)
			if rms := worstRMS(t, path, ids, hfForward(tc.s, h, ids)); rms < 1e-2 {
				t.Fatalf("relative RMS %.3g with the rule off: the check cannot see it", rms)
			}
		})
	}
}

// bitnetMaster gives tinyBitNet master weights whose absolute sums are
// exact in float32 in any order (multiples of 1/256, small counts), so
// the absmean and its scale do not depend on how a sum is ordered.
func bitnetMaster(seed uint64) *hfCkpt {
	h := tinyBitNet.generate(seed)
	r := rand.New(rand.NewPCG(seed, 99))
	for name, t := range h.tensors {
		if len(t.shape) == 2 && name != "model.embed_tokens.weight" {
			for i := range t.f {
				t.f[i] = float32(r.IntN(81)-40) / 256
			}
		}
	}
	return h
}

// packMaster is what Hugging Face's quantizer stores for master weights:
// each linear weight's ternary codes clamp(round(w*s)), s =
// 1/max(mean|w|, 1e-5) in float32 (WeightQuant), packed, with s as its
// weight_scale.
func packMaster(h *hfCkpt) *hfCkpt {
	p := &hfCkpt{config: map[string]any{}, tensors: map[string]*hfTensor{}}
	for k, v := range h.config {
		p.config[k] = v
	}
	p.config["quantization_config"] = map[string]any{"quant_method": "bitnet", "linear_class": "bitlinear"}
	for name, t := range h.tensors {
		if len(t.shape) != 2 || name == "model.embed_tokens.weight" {
			p.tensors[name] = t
			continue
		}
		var sum float32
		for _, v := range t.f {
			sum += float32(math.Abs(float64(v)))
		}
		s := 1 / max(sum/float32(len(t.f)), 1e-5)
		codes := make([]int8, len(t.f))
		for i, v := range t.f {
			codes[i] = int8(max(-1, min(1, math.RoundToEven(float64(v*s)))))
		}
		p.packTernary(name[:len(name)-len(".weight")], codes, t.shape, s, "F32")
	}
	return p
}

// TestBitNetPackedEqualsMaster: a BitNet checkpoint of master weights and
// the packed checkpoint of the same weights give the same GGUF tensors,
// byte for byte, and both agree with the Hugging Face forward pass.
func TestBitNetPackedEqualsMaster(t *testing.T) {
	master := bitnetMaster(5)
	packed := packMaster(master)
	for _, typ := range []string{"f32", "bf16"} {
		a, _ := convertDir(t, master.write(t, 1), typ, Options{})
		b, _ := convertDir(t, packed.write(t, 2), typ, Options{})
		fa, fb := openGGUF(t, a), openGGUF(t, b)
		if len(fa.Tensors) != len(fb.Tensors) {
			t.Fatalf("%s: %d tensors from master, %d from packed", typ, len(fa.Tensors), len(fb.Tensors))
		}
		for i := range fa.Tensors {
			ta := &fa.Tensors[i]
			tb, ok := fb.Tensor(ta.Name)
			if !ok || tb.Type != ta.Type || !slices.Equal(tb.Dims, ta.Dims) || !bytes.Equal(tb.Data, ta.Data) {
				t.Fatalf("%s: tensor %s differs between the master and the packed checkpoint", typ, ta.Name)
			}
		}
		if typ == "f32" {
			ids := testIDs(tinyBitNet.vocab, 9)
			for name, path := range map[string]string{"master": a, "packed": b} {
				if rms := worstRMS(t, path, ids, hfForward(tinyBitNet, master, ids)); rms > 1e-5 {
					t.Fatalf("%s: relative RMS %.3g against the Hugging Face forward", name, rms)
				}
			}
		}
	}
}

func openGGUF(t *testing.T, path string) *gguf.File {
	t.Helper()
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestHFMetadata checks the keys llama.cpp's converter writes for each
// architecture, and the tensor types of the F16 policy.
func TestHFMetadata(t *testing.T) {
	for _, tc := range []struct {
		s    tiny
		want map[string]any
		none []string
	}{
		{tinyLlama, map[string]any{"llama.vocab_size": uint64(48), "llama.rope.dimension_count": uint64(8),
			"llama.context_length": uint64(512), "llama.attention.head_count_kv": uint64(2), "general.file_type": uint64(1)},
			[]string{"llama.attention.key_length"}},
		{tinyQwen3, map[string]any{"qwen3.attention.key_length": uint64(16), "qwen3.attention.value_length": uint64(16),
			"qwen3.rope.freq_base": 1e6}, []string{"qwen3.vocab_size"}},
		{tinyGemma3, map[string]any{"gemma3.attention.sliding_window": uint64(3), "gemma3.attention.sliding_window_pattern": uint64(3),
			"gemma3.rope.freq_base_swa": 10000.0, "gemma3.final_logit_softcapping": 30.0}, nil},
		{tinyBitNet, map[string]any{"bitnet-b1.58.vocab_size": uint64(48), "bitnet-b1.58.rope.freq_base": 500000.0}, nil},
	} {
		path, _ := convertDir(t, tc.s.generate(1).write(t, 1), "f16", Options{})
		f := openGGUF(t, path)
		for k, v := range tc.want {
			got, ok := f.Lookup(k)
			if !ok {
				t.Errorf("%s: no %s", tc.s.hfArch, k)
				continue
			}
			switch v := v.(type) {
			case uint64:
				if u, _ := got.Uint(); u != v {
					t.Errorf("%s: %s = %v, want %v", tc.s.hfArch, k, got, v)
				}
			case float64:
				if x, _ := got.Float(); float32(x) != float32(v) {
					t.Errorf("%s: %s = %v, want %v", tc.s.hfArch, k, got, v)
				}
			}
		}
		for _, k := range tc.none {
			if f.Has(k) {
				t.Errorf("%s: unexpected %s", tc.s.hfArch, k)
			}
		}
		for _, ti := range f.Tensors {
			want := quant.F16
			if len(ti.Dims) == 1 {
				want = quant.F32
			}
			if ti.Type != want {
				t.Errorf("%s: tensor %s is %s, want %s", tc.s.hfArch, ti.Name, ti.Type, want)
			}
		}
	}
}

func TestParseType(t *testing.T) {
	for s, want := range map[string]quant.Type{"F16": quant.F16, "bf16": quant.BF16, "q8_0": quant.Q8_0, "f32": quant.F32} {
		if got, auto, err := parseType(s); err != nil || got != want || auto {
			t.Errorf("%q: %v %v %v", s, got, auto, err)
		}
	}
	for _, s := range []string{"", "auto", "AUTO"} {
		if _, auto, err := parseType(s); err != nil || !auto {
			t.Errorf("%q: not auto (%v)", s, err)
		}
	}
	for s, want := range map[string]quant.Type{"tq1_0": quant.TQ1_0, "TQ2_0": quant.TQ2_0, "q2_0": quant.Q2_0, "i2_s": quant.I2_S} {
		if got, auto, err := parseType(s); err != nil || got != want || auto {
			t.Errorf("%q: %v %v %v", s, got, auto, err)
		}
	}
	for _, s := range []string{"q4_k", "q4_0", "x"} {
		if _, _, err := parseType(s); err == nil {
			t.Errorf("%q: no error", s)
		}
	}
}

// TestGemma3Multimodal: Gemma3ForConditionalGeneration (4B and up) keeps
// its text model under language_model and its sizes in text_config; the
// vision tower is dropped. Its text weights convert to the same tensors as
// the text-only checkpoint's.
func TestGemma3Multimodal(t *testing.T) {
	h := tinyGemma3.generate(8)
	text, _ := convertDir(t, h.write(t, 1), "bf16", Options{})
	for _, prefix := range []string{"language_model.", "model.language_model."} {
		mm := &hfCkpt{config: map[string]any{"architectures": []string{"Gemma3ForConditionalGeneration"},
			"model_type": "gemma3", "text_config": h.config}, tensors: map[string]*hfTensor{}}
		for name, ten := range h.tensors {
			n := prefix + name
			if prefix == "model.language_model." {
				n = prefix + name[len("model."):]
			}
			mm.tensors[n] = ten
		}
		mm.add("vision_tower.vision_model.embeddings.patch_embedding.weight", "BF16", []int64{4, 4}, make([]float32, 16))
		mm.add("multi_modal_projector.mm_input_projection_weight", "BF16", []int64{4, 4}, make([]float32, 16))
		got, sum := convertDir(t, mm.write(t, 2), "bf16", Options{})
		if sum.Arch != "gemma3" {
			t.Fatalf("%s: architecture %s", prefix, sum.Arch)
		}
		fa, fb := openGGUF(t, text), openGGUF(t, got)
		if len(fa.Tensors) != len(fb.Tensors) {
			t.Fatalf("%s: %d tensors, want %d", prefix, len(fb.Tensors), len(fa.Tensors))
		}
		for i := range fa.Tensors {
			tb, ok := fb.Tensor(fa.Tensors[i].Name)
			if !ok || !bytes.Equal(tb.Data, fa.Tensors[i].Data) {
				t.Fatalf("%s: tensor %s differs from the text-only checkpoint's", prefix, fa.Tensors[i].Name)
			}
		}
	}
}

// TestTernaryTypes converts a BitNet checkpoint straight to each ternary
// type through package quantize's policy: every layer matrix keeps the
// ternary values of the F32 conversion (to the blocks' fp16 scales), the
// embedding gets the policy's type, and the logits stay close to the
// Hugging Face forward pass. A checkpoint not trained ternary is refused.
func TestTernaryTypes(t *testing.T) {
	s := tinyBitNet
	s.hidden, s.ffn, s.heads, s.kvHeads, s.headDim, s.layers, s.vocab = 256, 256, 4, 2, 64, 1, 64
	h := s.generate(9)
	dir := h.write(t, 1)
	ref, _ := convertDir(t, dir, "f32", Options{})
	fr := openGGUF(t, ref)
	ids := testIDs(s.vocab, 6)
	want := hfForward(s, h, ids)
	for _, typ := range []quant.Type{quant.TQ1_0, quant.TQ2_0, quant.Q2_0, quant.I2_S} {
		path, sum := convertDir(t, dir, typ.String(), Options{})
		f := openGGUF(t, path)
		for _, ti := range f.Tensors {
			wantType, _ := quantize.Choose(ti.Name, ti.Dims, quant.F32, quantize.Options{Type: typ, Tied: true})
			if ti.Type != wantType {
				t.Fatalf("%s: tensor %s is %s, the policy says %s", typ, ti.Name, ti.Type, wantType)
			}
			if !quant.IsTernary(ti.Type) {
				continue
			}
			n := int(ti.Dims[0] * ti.Dims[1])
			got, exact := make([]float32, n), make([]float32, n)
			if err := quant.Dequantize(ti.Type, got, ti.Data); err != nil {
				t.Fatal(err)
			}
			if ti.Type == quant.I2_S {
				sc, err := quant.I2SScale(ti.Data, n)
				if err != nil {
					t.Fatal(err)
				}
				for i := range got {
					got[i] *= sc
				}
			}
			rt, _ := fr.Tensor(ti.Name)
			quant.Dequantize(rt.Type, exact, rt.Data)
			var mag float32
			for _, v := range exact {
				mag = max(mag, float32(math.Abs(float64(v))))
			}
			for i := range got {
				if d := math.Abs(float64(got[i] - exact[i])); d > float64(mag)/1024 {
					t.Fatalf("%s: tensor %s element %d is %g, the ternary value is %g", typ, ti.Name, i, got[i], exact[i])
				}
			}
		}
		rms := worstRMS(t, path, ids, want)
		t.Logf("%s: relative RMS %.2g against the Hugging Face forward (%s; %v)", typ, rms, sum, sum.Fallbacks)
		if rms > 5e-2 {
			t.Fatalf("%s: relative RMS %.3g", typ, rms)
		}
	}
	_, err := HF(tinyLlama.generate(1).write(t, 1), filepath.Join(t.TempDir(), "x.gguf"), Options{Type: "tq2_0"})
	if err == nil || !strings.Contains(err.Error(), "ternary-trained") {
		t.Fatalf("llama to tq2_0: error %v", err)
	}
}
