package model

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/quant"
)

// ggufSpec is a GGUF file's content before writing, so tests can drop or
// change a key or a tensor.
type ggufSpec struct {
	keys    []string
	vals    map[string]gguf.Value
	tensors []tensorSpec
}

type tensorSpec struct {
	name string
	typ  quant.Type
	dims []uint64
	data []byte
}

func (s *ggufSpec) set(k string, v gguf.Value) {
	if _, ok := s.vals[k]; !ok {
		s.keys = append(s.keys, k)
	}
	s.vals[k] = v
}

func (s *ggufSpec) del(k string) { delete(s.vals, k) }

func (s *ggufSpec) tensor(name string) *tensorSpec {
	for i := range s.tensors {
		if s.tensors[i].name == name {
			return &s.tensors[i]
		}
	}
	return nil
}

func (s *ggufSpec) dropTensor(name string) {
	for i := range s.tensors {
		if s.tensors[i].name == name {
			s.tensors = append(s.tensors[:i], s.tensors[i+1:]...)
			return
		}
	}
}

func f32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// specOf describes w as llama.cpp / bitnet.cpp would write it.
func specOf(w *Weights) *ggufSpec {
	s := &ggufSpec{vals: map[string]gguf.Value{}}
	c := &w.Config
	p := string(c.Arch) + "."
	s.set("general.architecture", gguf.NewString(string(c.Arch)))
	s.set(p+"embedding_length", gguf.NewUint32(uint32(c.Dim)))
	s.set(p+"feed_forward_length", gguf.NewUint32(uint32(c.FFNDim)))
	s.set(p+"block_count", gguf.NewUint32(uint32(c.Layers)))
	s.set(p+"attention.head_count", gguf.NewUint32(uint32(c.Heads)))
	s.set(p+"attention.head_count_kv", gguf.NewUint32(uint32(c.KVHeads)))
	s.set(p+"context_length", gguf.NewUint32(uint32(c.ContextLen)))
	s.set(p+"attention.layer_norm_rms_epsilon", gguf.NewFloat32(c.NormEps))
	s.set(p+"rope.freq_base", gguf.NewFloat32(c.RopeBase))
	s.set(p+"rope.dimension_count", gguf.NewUint32(uint32(c.HeadDim)))
	s.set(p+"vocab_size", gguf.NewUint32(uint32(c.Vocab)))
	if c.RopeScale != 1 {
		s.set(p+"rope.scaling.type", gguf.NewString("linear"))
		s.set(p+"rope.scaling.factor", gguf.NewFloat32(c.RopeScale))
	}
	if c.QDim() != c.Dim {
		s.set(p+"attention.key_length", gguf.NewUint32(uint32(c.HeadDim)))
		s.set(p+"attention.value_length", gguf.NewUint32(uint32(c.HeadDim)))
	}
	if c.Local != nil {
		s.set(p+"attention.sliding_window", gguf.NewUint32(uint32(c.Window)))
		s.set(p+"rope.freq_base_swa", gguf.NewFloat32(c.LocalRopeBase))
		flags := make([]bool, len(c.Local))
		copy(flags, c.Local)
		v, err := gguf.NewArray(flags)
		if err != nil {
			panic(err)
		}
		s.set(p+"attention.sliding_window_pattern", v)
	}
	if c.LogitSoftcap > 0 {
		s.set(p+"final_logit_softcapping", gguf.NewFloat32(c.LogitSoftcap))
	}
	if c.RopeFreqFactors != nil {
		s.tensors = append(s.tensors, tensorSpec{"rope_freqs.weight", quant.F32, []uint64{uint64(len(c.RopeFreqFactors))}, f32Bytes(c.RopeFreqFactors)})
	}
	mat := func(t *Tensor, name string) {
		data := t.Data
		if t.Type == quant.I2_S {
			data = append(append([]byte(nil), data...), make([]byte, quant.I2SScaleBytes)...)
			binary.LittleEndian.PutUint32(data[len(t.Data):], math.Float32bits(t.Scale))
		} else if t.Scale != 1 {
			s.tensors = append(s.tensors, tensorSpec{strings.TrimSuffix(name, ".weight") + ".scale", quant.F32, []uint64{1}, f32Bytes([]float32{t.Scale})})
		}
		s.tensors = append(s.tensors, tensorSpec{name, t.Type, []uint64{uint64(t.Cols), uint64(t.Rows)}, data})
	}
	vec := func(v []float32, name string) {
		s.tensors = append(s.tensors, tensorSpec{name, quant.F32, []uint64{uint64(len(v))}, f32Bytes(v)})
	}
	mat(&w.Embed, "token_embd.weight")
	for i := range w.Layers {
		L := &w.Layers[i]
		n := func(s string) string { return fmt.Sprintf("blk.%d.%s", i, s) }
		vec(L.AttnNorm, n("attn_norm.weight"))
		mat(&L.Wq, n("attn_q.weight"))
		mat(&L.Wk, n("attn_k.weight"))
		mat(&L.Wv, n("attn_v.weight"))
		if c.QKVBias {
			vec(L.Bq, n("attn_q.bias"))
			vec(L.Bk, n("attn_k.bias"))
			vec(L.Bv, n("attn_v.bias"))
		}
		if c.QKNorm {
			vec(L.QNorm, n("attn_q_norm.weight"))
			vec(L.KNorm, n("attn_k_norm.weight"))
		}
		mat(&L.Wo, n("attn_output.weight"))
		if c.PostNorms {
			vec(L.AttnPostNorm, n("post_attention_norm.weight"))
			vec(L.FFNPostNorm, n("post_ffw_norm.weight"))
		}
		vec(L.FFNNorm, n("ffn_norm.weight"))
		mat(&L.Wgate, n("ffn_gate.weight"))
		mat(&L.Wup, n("ffn_up.weight"))
		mat(&L.Wdown, n("ffn_down.weight"))
		if c.SubNorms {
			vec(L.AttnSubNorm, n("attn_sub_norm.weight"))
			vec(L.FFNSubNorm, n("ffn_sub_norm.weight"))
		}
	}
	vec(w.OutNorm, "output_norm.weight")
	if !w.Tied {
		mat(&w.Output, "output.weight")
	}
	return s
}

func (s *ggufSpec) bytes(t *testing.T) []byte {
	t.Helper()
	wr := gguf.NewWriter()
	for _, k := range s.keys {
		if v, ok := s.vals[k]; ok {
			wr.Add(k, v)
		}
	}
	for _, ts := range s.tensors {
		if err := wr.AddTensor(ts.name, ts.typ, ts.dims, ts.data); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if _, err := wr.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func (s *ggufSpec) load(t *testing.T) (*Weights, error) {
	t.Helper()
	return parseAndLoad(t, s.bytes(t))
}

func parseAndLoad(t *testing.T, data []byte) (*Weights, error) {
	t.Helper()
	f, err := gguf.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return FromGGUF(f)
}

func sameTensor(a, b *Tensor) bool {
	return a.Type == b.Type && a.Rows == b.Rows && a.Cols == b.Cols && a.Scale == b.Scale && bytes.Equal(a.Data, b.Data)
}

func TestFromGGUFRoundTrip(t *testing.T) {
	for name, spec := range testSpecs() {
		t.Run(name, func(t *testing.T) {
			w := randomWeights(t, 3, spec)
			got, err := specOf(w).load(t)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Config, w.Config) {
				t.Fatalf("config\n got %+v\nwant %+v", got.Config, w.Config)
			}
			if got.Tied != w.Tied || !sameTensor(&got.Embed, &w.Embed) || !sameTensor(&got.Output, &w.Output) ||
				!reflect.DeepEqual(got.OutNorm, w.OutNorm) {
				t.Fatal("embedding, LM head or output norm differ")
			}
			for i := range w.Layers {
				a, b := &got.Layers[i], &w.Layers[i]
				for j, pair := range [][2]*Tensor{{&a.Wq, &b.Wq}, {&a.Wk, &b.Wk}, {&a.Wv, &b.Wv}, {&a.Wo, &b.Wo}, {&a.Wgate, &b.Wgate}, {&a.Wup, &b.Wup}, {&a.Wdown, &b.Wdown}} {
					if !sameTensor(pair[0], pair[1]) {
						t.Fatalf("layer %d matrix %d differs", i, j)
					}
				}
				if !reflect.DeepEqual(a.AttnNorm, b.AttnNorm) || !reflect.DeepEqual(a.FFNNorm, b.FFNNorm) ||
					!reflect.DeepEqual(a.AttnSubNorm, b.AttnSubNorm) || !reflect.DeepEqual(a.FFNSubNorm, b.FFNSubNorm) ||
					!reflect.DeepEqual(a.QNorm, b.QNorm) || !reflect.DeepEqual(a.KNorm, b.KNorm) ||
					!reflect.DeepEqual(a.AttnPostNorm, b.AttnPostNorm) || !reflect.DeepEqual(a.FFNPostNorm, b.FFNPostNorm) {
					t.Fatalf("layer %d norms differ", i)
				}
				if !reflect.DeepEqual(a.Bq, b.Bq) || !reflect.DeepEqual(a.Bk, b.Bk) || !reflect.DeepEqual(a.Bv, b.Bv) {
					t.Fatalf("layer %d biases differ", i)
				}
			}
		})
	}
}

// TestFromGGUFErrors checks that each defect gives an error naming what is
// wrong, never a panic.
func TestFromGGUFErrors(t *testing.T) {
	llama := randomWeights(t, 4, testSpecs()["llama-q8_0-gqa-tied"])
	bitnet := randomWeights(t, 4, testSpecs()["bitnet-f16-odd-tied-scaled"])
	qwen2 := randomWeights(t, 4, testSpecs()["qwen2-f32-bias-untied"])
	gemma := randomWeights(t, 4, testSpecs()["gemma3-f32-window-softcap"])
	cases := []struct {
		name   string
		w      *Weights
		change func(s *ggufSpec)
		want   string
	}{
		{"missing tensor", llama, func(s *ggufSpec) { s.dropTensor("blk.1.ffn_up.weight") }, `"blk.1.ffn_up.weight" is missing`},
		{"missing sub-norm", bitnet, func(s *ggufSpec) { s.dropTensor("blk.0.ffn_sub_norm.weight") }, `"blk.0.ffn_sub_norm.weight" is missing`},
		{"wrong shape", llama, func(s *ggufSpec) {
			ts := s.tensor("blk.1.attn_k.weight")
			ts.dims = []uint64{64, 64}
			ts.data = make([]byte, 64*64/32*34)
		}, `"blk.1.attn_k.weight": shape [64 64], want [64 32]`},
		{"unsupported type", llama, func(s *ggufSpec) {
			ts := s.tensor("blk.0.attn_q.weight")
			ts.typ, ts.data = quant.Q4_1, make([]byte, 64*64/32*20)
		}, `"blk.0.attn_q.weight": unsupported tensor type Q4_1`},
		{"missing key", llama, func(s *ggufSpec) { s.del("llama.embedding_length") }, `"llama.embedding_length"`},
		{"missing eps", llama, func(s *ggufSpec) { s.del("llama.attention.layer_norm_rms_epsilon") }, "layer_norm_rms_epsilon"},
		{"wrong key type", llama, func(s *ggufSpec) { s.set("llama.block_count", gguf.NewString("2")) }, "llama.block_count"},
		{"architecture", llama, func(s *ggufSpec) { s.set("general.architecture", gguf.NewString("gpt2")) }, `unsupported architecture "gpt2"`},
		{"no architecture", llama, func(s *ggufSpec) { s.del("general.architecture") }, "general.architecture"},
		{"bias", llama, func(s *ggufSpec) {
			s.tensors = append(s.tensors, tensorSpec{"blk.0.attn_q.bias", quant.F32, []uint64{64}, make([]byte, 256)})
		}, `"blk.0.attn_q.bias"`},
		{"yarn", llama, func(s *ggufSpec) { s.set("llama.rope.scaling.type", gguf.NewString("yarn")) }, `"yarn"`},
		{"partial rope", llama, func(s *ggufSpec) { s.set("llama.rope.dimension_count", gguf.NewUint32(8)) }, "partial RoPE"},
		{"vocab mismatch", llama, func(s *ggufSpec) { s.set("llama.vocab_size", gguf.NewUint32(41)) }, `"token_embd.weight": shape`},
		{"zero heads", llama, func(s *ggufSpec) { s.set("llama.attention.head_count", gguf.NewUint32(0)) }, "head count"},
		{"kv heads", llama, func(s *ggufSpec) { s.set("llama.attention.head_count_kv", gguf.NewUint32(3)) }, "KV head count"},
		{"huge layers", llama, func(s *ggufSpec) { s.set("llama.block_count", gguf.NewUint32(1<<30)) }, "block count"},
		{"scale in llama", llama, func(s *ggufSpec) {
			s.tensors = append(s.tensors, tensorSpec{"blk.0.attn_q.scale", quant.F32, []uint64{1}, f32Bytes([]float32{2})})
		}, "only read for BitNet"},
		{"NaN scale", bitnet, func(s *ggufSpec) {
			s.tensor("blk.0.attn_k.scale").data = f32Bytes([]float32{float32(math.NaN())})
		}, `"blk.0.attn_k.weight": scale`},
		{"missing bias", qwen2, func(s *ggufSpec) { s.dropTensor("blk.1.attn_v.bias") }, `"blk.1.attn_v.bias" is missing`},
		{"output bias", qwen2, func(s *ggufSpec) {
			s.tensors = append(s.tensors, tensorSpec{"blk.0.attn_output.bias", quant.F32, []uint64{24}, make([]byte, 96)})
		}, `tensor "blk.0.attn_output.bias" is not part of architecture "qwen2"`},
		{"missing q norm", gemma, func(s *ggufSpec) { s.dropTensor("blk.2.attn_q_norm.weight") }, `"blk.2.attn_q_norm.weight" is missing`},
		{"missing post-norm", gemma, func(s *ggufSpec) { s.dropTensor("blk.0.post_ffw_norm.weight") }, `"blk.0.post_ffw_norm.weight" is missing`},
		{"window pattern length", gemma, func(s *ggufSpec) {
			v, _ := gguf.NewArray([]bool{true, false})
			s.set("gemma3.attention.sliding_window_pattern", v)
		}, "2 values for 3 layers"},
		{"window pattern type", gemma, func(s *ggufSpec) {
			s.set("gemma3.attention.sliding_window_pattern", gguf.NewFloat32s([]float32{1, 0, 1}))
		}, "want bool"},
		{"value length", gemma, func(s *ggufSpec) { s.set("gemma3.attention.value_length", gguf.NewUint32(8)) }, "value length 8"},
		{"rope freqs shape", bitnet, func(s *ggufSpec) {
			s.tensor("rope_freqs.weight").dims = []uint64{5, 1}
		}, `"rope_freqs.weight": shape`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := specOf(tc.w)
			tc.change(s)
			_, err := s.load(t)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %s", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "model: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

// TestSlidingWindowPattern reads Gemma 3's window layers from a period
// (6 when the key is absent, as llama.cpp), or per-layer flags.
func TestSlidingWindowPattern(t *testing.T) {
	spec := testSpecs()["gemma3-f32-window-softcap"]
	spec.cfg.Layers = 8
	spec.cfg.Local = make([]bool, 8)
	w := randomWeights(t, 9, spec)
	for _, tc := range []struct {
		name string
		key  *gguf.Value
		want string
	}{
		{"absent", nil, "LLLLLGLL"},
		{"period 3", ptr(gguf.NewUint32(3)), "LLGLLGLL"},
		{"period 1", ptr(gguf.NewUint32(1)), "GGGGGGGG"},
		{"period 0", ptr(gguf.NewUint32(0)), "LLLLLLLL"},
	} {
		s := specOf(w)
		if tc.key == nil {
			s.del("gemma3.attention.sliding_window_pattern")
		} else {
			s.set("gemma3.attention.sliding_window_pattern", *tc.key)
		}
		got, err := s.load(t)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var b strings.Builder
		for l := range got.Layers {
			b.WriteString(map[bool]string{true: "L", false: "G"}[got.IsLocal(l)])
		}
		if b.String() != tc.want || got.Window != 3 || got.LocalRopeBase != 100 {
			t.Errorf("%s: layers %s window %d base %g, want %s, 3, 100", tc.name, b.String(), got.Window, got.LocalRopeBase, tc.want)
		}
	}
	// No window key: no local layers at all.
	s := specOf(w)
	s.del("gemma3.attention.sliding_window")
	got, err := s.load(t)
	if err != nil {
		t.Fatal(err)
	}
	if got.Local != nil {
		t.Errorf("without a window: local layers %v", got.Local)
	}
}

func ptr[T any](v T) *T { return &v }

// setTensorType patches the type id of tensor name in a written file.
func setTensorType(t *testing.T, data []byte, name string, typ uint32) {
	t.Helper()
	key := append(binary.LittleEndian.AppendUint64(nil, uint64(len(name))), name...)
	i := bytes.Index(data, key)
	if i < 0 {
		t.Fatalf("tensor info %q not found", name)
	}
	p := i + len(key)
	nd := int(binary.LittleEndian.Uint32(data[p:]))
	p += 4 + 8*nd
	binary.LittleEndian.PutUint32(data[p:], typ)
}

// TestI2SAmbiguity checks how type id 36 is read: as I2_S (with its scale)
// when the file reserves exactly I2_S's bytes, an error otherwise.
func TestI2SAmbiguity(t *testing.T) {
	w := randomWeights(t, 5, testSpecs()["bitnet158-i2s-gqa"])
	got, err := specOf(w).load(t)
	if err != nil {
		t.Fatal(err)
	}
	if got.Layers[0].Wq.Type != quant.I2_S || got.Layers[0].Wq.Scale != w.Layers[0].Wq.Scale || got.Layers[0].Wq.Scale == 1 {
		t.Fatalf("I2_S tensor read as %s scale %g, want I2_S scale %g", got.Layers[0].Wq.Type, got.Layers[0].Wq.Scale, w.Layers[0].Wq.Scale)
	}
	if len(got.Layers[0].Wq.Data) != w.Layers[0].Wq.Rows*w.Layers[0].Wq.Cols/4 {
		t.Errorf("I2_S Data holds %d bytes, want the packed part only", len(got.Layers[0].Wq.Data))
	}

	// Bitnet.cpp's Llama3-8B-1.58 files are llama with I2_S: accepted when sized.
	lw := *w
	lw.Config = baseConfig(ArchLlama, 128, 256, 2, 4, 1, 33)
	lw.RopeBase = 500000
	lw.Layers = append([]Layer(nil), w.Layers...)
	for i := range lw.Layers {
		lw.Layers[i].AttnSubNorm, lw.Layers[i].FFNSubNorm = nil, nil
	}
	if _, err := specOf(&lw).load(t); err != nil {
		t.Errorf("llama file with sized I2_S tensors: %v", err)
	}

	// A tensor that is really another type (bigger) with id 36 is refused.
	s := specOf(w)
	ts := s.tensor("blk.0.attn_q.weight")
	ts.typ, ts.data = quant.Q8_0, make([]byte, 128*128/32*34)
	data := s.bytes(t)
	setTensorType(t, data, "blk.0.attn_q.weight", 36)
	_, err = parseAndLoad(t, data)
	if err == nil || !strings.Contains(err.Error(), "type id 36 taken as bitnet.cpp's I2_S") {
		t.Fatalf("error %v, want the I2_S assumption named", err)
	}
	t.Logf("error: %v", err)
}

func FuzzFromGGUF(f *testing.F) {
	t := &testing.T{}
	f.Add(specOf(randomWeights(t, 6, testSpecs()["llama-f32-odd-gqa-untied"])).bytes(t))
	f.Fuzz(func(t *testing.T, data []byte) {
		gf, err := gguf.Parse(data)
		if err != nil {
			return
		}
		w, err := FromGGUF(gf)
		if err != nil {
			return
		}
		// Whatever loads must run.
		NewReference(w, 2).Forward(0, 0)
	})
}
