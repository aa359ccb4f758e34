package convert

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/internal/testfiles"
)

// stHeader builds a safetensors file from a header (marshalled as is) and
// data bytes.
func stHeader(hdr any, data []byte) []byte {
	js, err := json.Marshal(hdr)
	if err != nil {
		panic(err)
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(js)))
	return append(append(out, js...), data...)
}

func entry(dtype string, shape []int64, begin, end int64) map[string]any {
	return map[string]any{"dtype": dtype, "shape": shape, "data_offsets": []int64{begin, end}}
}

// TestSafetensorsHostile: malformed files give an error naming the
// problem, never a panic or an allocation the file does not back.
func TestSafetensorsHostile(t *testing.T) {
	good := stHeader(map[string]any{"a": entry("F32", []int64{2, 2}, 0, 16)}, make([]byte, 16))
	hugeLen := append([]byte(nil), good...)
	binary.LittleEndian.PutUint64(hugeLen, 1<<62)
	cases := map[string]struct {
		file []byte
		want string
	}{
		"empty":            {nil, "header length"},
		"short length":     {[]byte{1, 2, 3}, "header length"},
		"huge length":      {hugeLen, "header of"},
		"truncated header": {good[:20], "header of"},
		"truncated data":   {good[:len(good)-1], "outside"},
		"not json":         {append(binary.LittleEndian.AppendUint64(nil, 5), "hello"...), "header"},
		"json array":       {stHeader([]int{1}, nil), "header"},
		"json null":        {stHeader(nil, nil), "not a JSON object"},
		"trailing garbage": {append(binary.LittleEndian.AppendUint64(nil, 4), "{}xx"...), "after the JSON"},
		"unknown dtype":    {stHeader(map[string]any{"a": entry("F12", []int64{2}, 0, 4)}, make([]byte, 4)), "unknown dtype"},
		"no dtype":         {stHeader(map[string]any{"a": map[string]any{"shape": []int{1}, "data_offsets": []int{0, 4}}}, make([]byte, 4)), "required"},
		"negative dim":     {stHeader(map[string]any{"a": entry("F32", []int64{-1, 4}, 0, 16)}, make([]byte, 16)), "out of range"},
		"overflowing dims": {stHeader(map[string]any{"a": entry("F32", []int64{1 << 40, 1 << 40}, 0, 16)}, make([]byte, 16)), "out of range"},
		"too many dims":    {stHeader(map[string]any{"a": entry("F32", make([]int64, 9), 0, 0)}, nil), "dimensions"},
		"size mismatch":    {stHeader(map[string]any{"a": entry("F32", []int64{3}, 0, 16)}, make([]byte, 16)), "takes 12 bytes"},
		"reversed offsets": {stHeader(map[string]any{"a": entry("F32", []int64{1}, 8, 4)}, make([]byte, 16)), "outside"},
		"negative offset":  {stHeader(map[string]any{"a": entry("F32", []int64{1}, -4, 0)}, make([]byte, 16)), "outside"},
		"three offsets":    {stHeader(map[string]any{"a": map[string]any{"dtype": "F32", "shape": []int{1}, "data_offsets": []int{0, 4, 8}}}, make([]byte, 8)), "outside"},
		"overlap": {stHeader(map[string]any{"a": entry("F32", []int64{2}, 0, 8), "b": entry("F32", []int64{2}, 4, 12)},
			make([]byte, 12)), "overlap"},
		"bad metadata": {stHeader(map[string]any{"__metadata__": map[string]any{"x": 1}}, nil), "__metadata__"},
		"entry string": {stHeader(map[string]any{"a": "x"}, nil), "tensor \"a\""},
	}
	for name, tc := range cases {
		p := filepath.Join(t.TempDir(), "m.safetensors")
		writeFile(t, p, tc.file)
		f, err := openSafetensors(p)
		if err == nil {
			f.Close()
			t.Errorf("%s: no error", name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q, want one containing %q", name, err, tc.want)
		}
	}
	p := filepath.Join(t.TempDir(), "m.safetensors")
	writeFile(t, p, good)
	f, err := openSafetensors(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if v, err := f.Tensors["a"].Floats(); err != nil || len(v) != 4 {
		t.Fatalf("good file: %v %v", v, err)
	}
}

// FuzzSafetensorsHeader: any header either fails or describes tensors
// whose byte ranges lie within the data, match their shapes and do not
// overlap.
func FuzzSafetensorsHeader(f *testing.F) {
	f.Add([]byte(`{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}`), int64(16))
	f.Add([]byte(`{"__metadata__":{"format":"pt"},"w":{"dtype":"BF16","shape":[4],"data_offsets":[0,8]},"u":{"dtype":"U8","shape":[2,3],"data_offsets":[8,14]}}`), int64(14))
	f.Add([]byte(`{"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}   `), int64(4))
	f.Add([]byte(`{"a":{"dtype":"I64","shape":[0],"data_offsets":[0,0]}}`), int64(0))
	f.Fuzz(func(t *testing.T, hdr []byte, dataLen int64) {
		if dataLen < 0 {
			dataLen = -dataLen
		}
		ts, _, err := parseSafetensorsHeader(hdr, dataLen)
		if err != nil {
			return
		}
		for _, x := range ts {
			if x.Begin < 0 || x.End > dataLen || x.End-x.Begin != x.Elements()*dtypeSizes[x.DType] {
				t.Fatalf("tensor %q: %+v accepted for %d data bytes", x.Name, x, dataLen)
			}
			for _, y := range ts {
				if x != y && x.End > x.Begin && y.End > y.Begin && x.Begin < y.End && y.Begin < x.End {
					t.Fatalf("tensors %q and %q overlap", x.Name, y.Name)
				}
			}
		}
	})
}

// TestHFHostile: bad configs and checkpoints give clear errors.
func TestHFHostile(t *testing.T) {
	type mut func(h *hfCkpt)
	set := func(k string, v any) mut { return func(h *hfCkpt) { h.config[k] = v } }
	del := func(k string) mut { return func(h *hfCkpt) { delete(h.config, k) } }
	cases := []struct {
		name string
		s    tiny
		m    mut
		want string
	}{
		{"unknown architecture", tinyLlama, set("architectures", []string{"MambaForCausalLM"}), `unsupported architecture "MambaForCausalLM"`},
		{"no architecture", tinyLlama, del("architectures"), "names no architecture"},
		{"no heads", tinyLlama, del("num_attention_heads"), "num_attention_heads"},
		{"no eps", tinyLlama, del("rms_norm_eps"), "rms_norm_eps"},
		{"heads do not divide", tinyLlama, set("num_attention_heads", 3), "not a multiple"},
		{"kv heads do not divide", tinyLlama, set("num_key_value_heads", 3), "KV head count"},
		{"huge hidden", tinyLlama, set("hidden_size", 1<<40), "embedding length"},
		{"negative layers", tinyLlama, set("num_hidden_layers", -2), "block count"},
		{"string hidden", tinyLlama, set("hidden_size", "32"), "hidden_size"},
		{"wrong activation", tinyLlama, set("hidden_act", "gelu"), `activation "gelu"`},
		{"bitnet activation", tinyBitNet, set("hidden_act", "gelu"), `activation "gelu"`},
		{"yarn", tinyLlama, set("rope_scaling", map[string]any{"rope_type": "yarn", "factor": 4}), `"yarn" is not supported`},
		{"gemma attention softcap", tinyGemma3, set("attn_logit_softcapping", 50), "attn_logit_softcapping"},
		{"gemma query scale", tinyGemma3, set("query_pre_attn_scalar", 100), "query_pre_attn_scalar"},
		{"gemma layer types", tinyGemma3, func(h *hfCkpt) {
			delete(h.config, "sliding_window_pattern")
			h.config["layer_types"] = []string{"full_attention", "sliding_attention", "sliding_attention"}
		}, "no period"},
		{"vocab mismatch", tinyLlama, set("vocab_size", 47), `shape [48 32], the config implies [47 32]`},
		{"unknown tensor", tinyLlama, func(h *hfCkpt) { h.add("model.layers.0.mlp.extra.weight", "F32", []int64{2}, []float32{1, 2}) }, `"model.layers.0.mlp.extra.weight": not a tensor of llama`},
		{"layer out of range", tinyLlama, func(h *hfCkpt) {
			h.add("model.layers.7.input_layernorm.weight", "F32", []int64{32}, make([]float32, 32))
		}, "model.layers.7"},
		{"missing tensor", tinyLlama, func(h *hfCkpt) { delete(h.tensors, "model.layers.1.mlp.up_proj.weight") }, "no tensor for blk.1.ffn_up.weight"},
		{"missing head", tinyLlama, func(h *hfCkpt) { delete(h.tensors, "lm_head.weight") }, "no lm_head.weight"},
		{"int tensor", tinyLlama, func(h *hfCkpt) {
			h.tensors["model.norm.weight"] = &hfTensor{dtype: "I32", shape: []int64{32}, raw: make([]byte, 128)}
		}, "dtype I32 is not supported"},
		{"u8 without config", tinyLlama, func(h *hfCkpt) {
			h.tensors["model.layers.0.mlp.up_proj.weight"] = &hfTensor{dtype: "U8", shape: []int64{16, 32}, raw: make([]byte, 512)}
		}, "no bitnet quantization_config"},
		{"u8 without scale", tinyFalcon158, func(h *hfCkpt) { delete(h.tensors, "model.layers.0.mlp.up_proj.weight_scale") }, "without model.layers.0.mlp.up_proj.weight_scale"},
		{"zero scale", tinyFalcon158, func(h *hfCkpt) { h.tensors["model.layers.0.mlp.up_proj.weight_scale"].f[0] = 0 }, "finite non-zero"},
		{"stray scale", tinyFalcon158, func(h *hfCkpt) { h.add("model.layers.0.mlp.nothing.weight_scale", "F32", []int64{1}, []float32{1}) }, "no packed ternary weight"},
		{"not ternary", tinyFalcon158, func(h *hfCkpt) { h.tensors["model.layers.1.self_attn.k_proj.weight"].raw[5] = 0xff }, "not a ternary"},
		{"unknown linear class", tinyFalcon158, set("quantization_config", map[string]any{"quant_method": "bitnet", "linear_class": "fancylinear"}), `linear_class "fancylinear"`},
	}
	for _, tc := range cases {
		h := tc.s.generate(3)
		tc.m(h)
		dir := h.write(t, 1)
		outDir := t.TempDir()
		_, err := HF(dir, filepath.Join(outDir, "x.gguf"), Options{Type: "f32"})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
		if entries, _ := os.ReadDir(outDir); len(entries) != 0 {
			t.Errorf("%s: the failed conversion left %s", tc.name, entries[0].Name())
		}
	}
}

// TestVocabMismatch: a tokenizer whose token count is not the
// embedding's rows is refused before anything is written.
func TestVocabMismatch(t *testing.T) {
	dir := tinyLlama.generate(2).write(t, 1)
	_, err := HF(dir, filepath.Join(t.TempDir(), "x.gguf"), Options{Vocab: spmVocab(300)})
	if err == nil || !strings.Contains(err.Error(), "300 tokens, the model's embedding 48 rows") {
		t.Fatalf("error %v", err)
	}
	bin := testfiles.Path(t, "models/stories260K/stories260K.bin")
	_, err = Llama2C(bin, filepath.Join(t.TempDir(), "x.gguf"), Options{Vocab: spmVocab(1024)})
	if err == nil || !strings.Contains(err.Error(), "1024 tokens, the model's embedding 512 rows") {
		t.Fatalf("llama2.c: error %v", err)
	}
}

// TestCheckpointFiles: missing and malformed files of the folder.
func TestCheckpointFiles(t *testing.T) {
	out := filepath.Join(t.TempDir(), "x.gguf")
	h := tinyLlama.generate(4)
	dir := h.write(t, 2)
	index := filepath.Join(dir, "model.safetensors.index.json")
	orig, _ := os.ReadFile(index)
	cases := []struct {
		name  string
		setup func()
		want  string
	}{
		{"escaping shard", func() {
			writeFile(t, index, []byte(`{"weight_map":{"model.norm.weight":"../model.safetensors"}}`))
		}, "not a file name"},
		{"missing shard", func() {
			writeFile(t, index, []byte(`{"weight_map":{"model.norm.weight":"model-00009-of-00009.safetensors"}}`))
		}, "no such file"},
		{"wrong shard", func() {
			var m map[string]map[string]string
			json.Unmarshal(orig, &m)
			for k, v := range m["weight_map"] {
				if strings.Contains(v, "00001") {
					m["weight_map"][k] = strings.Replace(v, "00001", "00002", 1)
					break
				}
			}
			b, _ := json.Marshal(m)
			writeFile(t, index, b)
		}, "which does not have it"},
		{"tensor missing from the index", func() {
			var m map[string]map[string]string
			json.Unmarshal(orig, &m)
			for k := range m["weight_map"] {
				delete(m["weight_map"], k)
				break
			}
			b, _ := json.Marshal(m)
			writeFile(t, index, b)
		}, "is not in the shard index"},
		{"empty index", func() { writeFile(t, index, []byte(`{}`)) }, "empty weight_map"},
		{"bad index", func() { writeFile(t, index, []byte(`{"weight_map": 5}`)) }, "shard index"},
		{"no checkpoint", func() { os.Remove(index) }, "neither model.safetensors"},
		{"no config", func() { os.Remove(filepath.Join(dir, "config.json")) }, "config.json"},
	}
	for _, tc := range cases {
		tc.setup()
		_, err := HF(dir, out, Options{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
		writeFile(t, index, orig)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a failed conversion left its output file")
	}
	entries, _ := os.ReadDir(filepath.Dir(out))
	if len(entries) != 0 {
		t.Errorf("a failed conversion left %d files beside the output", len(entries))
	}
}

// FuzzConfig: any config.json either fails or gives metadata, through the
// same steps HF takes before reading tensors, without a panic.
func FuzzConfig(f *testing.F) {
	for _, s := range []tiny{tinyLlama, tinyQwen2, tinyQwen3, tinyGemma3, tinyBitNet, tinyFalcon158} {
		b, _ := json.Marshal(s.config())
		f.Add(b)
	}
	f.Add([]byte(`{"architectures":["Gemma3ForConditionalGeneration"],"text_config":{"hidden_size":64,"num_hidden_layers":62,"num_attention_heads":0}}`))
	f.Add([]byte(`{"architectures":["LlamaForCausalLM"],"rope_parameters":{"full_attention":{"rope_type":"llama3"}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var top map[string]json.RawMessage
		if json.Unmarshal(b, &top) != nil {
			return
		}
		c, err := parseConfig(top)
		if err != nil {
			return
		}
		spec, err := resolveArch(c)
		if err != nil || checkConfig(c) != nil {
			return
		}
		if spec.writeKeys(c, gguf.NewWriter()) == nil && spec == llamaSpec && c.rope() != nil && c.rope().kind() == "llama3" {
			if f := ropeFreqFactors(c); len(f) != c.headDim()/2 {
				t.Fatalf("%d RoPE factors for head size %d", len(f), c.headDim())
			}
		}
	})
}
