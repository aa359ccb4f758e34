package vocab

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/tokenizer"
	"google.golang.org/protobuf/encoding/protowire"
)

// tinyBPE is a byte-level BPE tokenizer.json small enough to write by hand:
// "Ġ" is the byte-level space.
func tinyBPE(pre any) map[string]any {
	return map[string]any{
		"model": map[string]any{
			"type":   "BPE",
			"vocab":  map[string]int{"a": 0, "b": 1, "ab": 2, "Ġ": 3, "Ġab": 4},
			"merges": [][]string{{"a", "b"}, {"Ġ", "ab"}},
		},
		"added_tokens": []any{
			map[string]any{"id": 5, "content": "<|endoftext|>", "special": true},
			map[string]any{"id": 6, "content": "<|im_end|>", "special": false}, // looks special
			map[string]any{"id": 7, "content": "▁tag", "special": false},
		},
		"pre_tokenizer": pre,
		"decoder":       map[string]any{"type": "ByteLevel"},
	}
}

var llama3Pre = map[string]any{"type": "Sequence", "pretokenizers": []any{
	map[string]any{"type": "Split", "pattern": map[string]any{"Regex": hfLlama3}, "behavior": "Isolated"},
	map[string]any{"type": "ByteLevel", "use_regex": false}}}

// writeFiles writes name -> content (JSON-encoded unless []byte) into a
// new folder.
func writeFiles(t *testing.T, files map[string]any) string {
	t.Helper()
	dir := t.TempDir()
	for name, c := range files {
		if b, ok := c.([]byte); ok {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		writeJSON(t, dir, name, c)
	}
	return dir
}

// parseWritten writes v and reads the metadata back.
func parseWritten(t *testing.T, v *Vocab) *gguf.File {
	t.Helper()
	w := gguf.NewWriter()
	v.Write(w)
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestTinyByteLevelBPE(t *testing.T) {
	dir := writeFiles(t, map[string]any{
		"tokenizer.json": tinyBPE(llama3Pre),
		"tokenizer_config.json": map[string]any{
			"bos_token": "<|endoftext|>", "eos_token": map[string]any{"content": "<|im_end|>"},
			"add_bos_token": true, "chat_template": "{{ messages }}",
		},
		"config.json":            map[string]any{"vocab_size": 10, "pad_token_id": 3},
		"generation_config.json": map[string]any{"eos_token_id": []int{6, 5}},
	})
	v, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	// the hash of so small a vocabulary is in no table: the Llama 3 pattern decides
	if v.Model != "gpt2" || v.Pre != "llama-bpe" || v.PreFrom != "regex" {
		t.Errorf("model %q pre %q (%s)", v.Model, v.Pre, v.PreFrom)
	}
	wantTok := []string{"a", "b", "ab", "Ġ", "Ġab", "<|endoftext|>", "<|im_end|>", " tag", "[PAD8]", "[PAD9]"}
	wantTypes := []int32{1, 1, 1, 1, 1, TypeControl, TypeControl, TypeUserDefined, TypeUnused, TypeUnused}
	if !slices.Equal(v.Tokens, wantTok) || !slices.Equal(v.Types, wantTypes) {
		t.Errorf("tokens %q types %v", v.Tokens, v.Types)
	}
	if !slices.Equal(v.Merges, []string{"a b", "Ġ ab"}) {
		t.Errorf("merges %q", v.Merges)
	}
	f := parseWritten(t, v)
	for key, want := range map[string]gguf.Value{
		"tokenizer.ggml.bos_token_id":     gguf.NewUint32(5),
		"tokenizer.ggml.eos_token_id":     gguf.NewUint32(6),
		"tokenizer.ggml.padding_token_id": gguf.NewUint32(3),
		"tokenizer.ggml.add_bos_token":    gguf.NewBool(true),
		"tokenizer.ggml.eos_token_ids":    gguf.NewInt32s([]int32{6, 5}),
		"tokenizer.ggml.token_type":       gguf.NewInt32s(wantTypes),
		"tokenizer.ggml.pre":              gguf.NewString("llama-bpe"),
		"tokenizer.chat_template":         gguf.NewString("{{ messages }}"),
	} {
		if got, ok := f.Lookup(key); !ok || !got.Equal(want) {
			t.Errorf("%s = %v (%v), want %v", key, got, ok, want)
		}
	}
	if f.Has("tokenizer.ggml.scores") || f.Has("tokenizer.ggml.add_eos_token") {
		t.Error("scores or add_eos_token written for a byte-level BPE that has none")
	}
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := tok.Encode("ab ab", true, false); !slices.Equal(got, []int32{5, 2, 4}) {
		t.Errorf("Encode = %v", got)
	}
	if !tok.IsEOG(5) || !tok.IsEOG(6) {
		t.Error("generation_config's EOS ids do not end generation")
	}
}

func TestPreTokenizerChoice(t *testing.T) {
	odd := map[string]any{"type": "Split", "pattern": map[string]any{"Regex": `\d+|x`}}
	dir := writeFiles(t, map[string]any{"tokenizer.json": tinyBPE(odd)})
	_, err := Load(dir)
	if err == nil || !strings.Contains(err.Error(), "unknown byte-level BPE pre-tokenizer") || !strings.Contains(err.Error(), `\d+|x`) {
		t.Errorf("unknown pre-tokenizer: %v", err)
	}
	v, err := LoadOptions(dir, Options{Pre: "qwen2"})
	if err != nil || v.Pre != "qwen2" || v.PreFrom != "forced" {
		t.Errorf("forced: %v %+v", err, v)
	}
	if _, err := LoadOptions(dir, Options{Pre: "no-such"}); err == nil || !strings.Contains(err.Error(), "no-such") {
		t.Errorf("forcing an unknown name: %v", err)
	}
	for sig, want := range map[string]string{
		`{"type":"ByteLevel","use_regex":true}`: "ByteLevel",
		`{"type":"Sequence","pretokenizers":[{"type":"Digits","individual_digits":true},{"type":"ByteLevel"}]}`:                  "Digits(individual),ByteLevel",
		`{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"String":" "}},{"type":"ByteLevel","use_regex":false}]}`: `Split(" ")`,
		`null`: "",
	} {
		if got := preSignature([]byte(sig), 0); got != want {
			t.Errorf("preSignature(%s) = %q, want %q", sig, got, want)
		}
	}
}

// pyListHash must hash as Python's sha256(str(list).encode()).hexdigest()
// (values from Python 3).
func TestPyListHash(t *testing.T) {
	for _, tc := range []struct {
		ids  []int32
		want string
	}{
		{[]int32{1, 2, 3}, "a36b1f2c3f84522dd1005145646617d7054c0851e97c72a039c0bdfac9fa07f3"},
		{nil, "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"},
		{[]int32{100000, 7}, "93b472e6c024fe610afd38614213d43dae3572b93efe7d2f8b7ed6f7a6b152f5"},
	} {
		if got := pyListHash(tc.ids); got != tc.want {
			t.Errorf("%v: %s, want %s", tc.ids, got, tc.want)
		}
	}
}

// spModelBytes encodes pieces (text, score, type) as a BPE ModelProto.
func spModelBytes(modelType uint64, addDummyPrefix bool, pieces ...spPiece) []byte {
	var b []byte
	for _, pc := range pieces {
		var p []byte
		p = protowire.AppendTag(p, 1, protowire.BytesType)
		p = protowire.AppendString(p, pc.piece)
		p = protowire.AppendTag(p, 2, protowire.Fixed32Type)
		p = protowire.AppendFixed32(p, math.Float32bits(pc.score))
		p = protowire.AppendTag(p, 3, protowire.VarintType)
		p = protowire.AppendVarint(p, uint64(pc.typ))
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, p)
	}
	var ts []byte
	ts = protowire.AppendTag(ts, 3, protowire.VarintType)
	ts = protowire.AppendVarint(ts, modelType)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, ts)
	if !addDummyPrefix {
		var ns []byte
		ns = protowire.AppendTag(ns, 3, protowire.VarintType)
		ns = protowire.AppendVarint(ns, 0)
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendBytes(b, ns)
	}
	return b
}

var tinySPM = []spPiece{{"<unk>", 0, 2}, {"<s>", 0, 3}, {"</s>", 0, 3}, {"<0x41>", 0, 6}, {"▁", -1, 1}, {"a", -2, 1}, {"▁a", -3, 1}, {"<x>", 0, 4}}

func TestTinySentencePiece(t *testing.T) {
	dir := writeFiles(t, map[string]any{
		"tokenizer.model":       spModelBytes(spBPE, false, tinySPM...),
		"added_tokens.json":     map[string]int{"<extra>": 8},
		"tokenizer_config.json": map[string]any{"added_tokens_decoder": map[string]any{"9": map[string]any{"content": "<|end|>", "special": false}}},
		"config.json":           map[string]any{"vocab_size": 11, "bos_token_id": 1, "eos_token_id": 2},
	})
	v, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	wantTok := []string{"<unk>", "<s>", "</s>", "<0x41>", "▁", "a", "▁a", "<x>", "<extra>", "<|end|>", "[PAD10]"}
	// user-defined pieces read as normal, as llama.cpp reads them
	wantTypes := []int32{2, 3, 3, 6, 1, 1, 1, 1, TypeUserDefined, TypeControl, TypeUnused}
	wantScores := []float32{0, 0, 0, 0, -1, -2, -3, 0, -1000, -1000, -10000}
	if !slices.Equal(v.Tokens, wantTok) || !slices.Equal(v.Types, wantTypes) || !slices.Equal(v.Scores, wantScores) {
		t.Errorf("tokens %q\ntypes %v\nscores %v", v.Tokens, v.Types, v.Scores)
	}
	if v.Model != "llama" || v.Pre != "default" || v.AddSpacePrefix == nil || *v.AddSpacePrefix {
		t.Errorf("model %q pre %q add_space_prefix %v", v.Model, v.Pre, v.AddSpacePrefix)
	}
	f := parseWritten(t, v)
	if got, _ := f.Uint("tokenizer.ggml.eos_token_id"); got != 2 {
		t.Errorf("eos %d", got)
	}
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	// no space prefix; "A" falls back to its byte token
	if got, _ := tok.Encode("a aA", false, false); !slices.Equal(got, []int32{5, 6, 3}) {
		t.Errorf("Encode = %v", got)
	}
}

// TestPostProcessor reads add_bos_token from a Llama 3 style template.
func TestPostProcessor(t *testing.T) {
	tj := tinyBPE(llama3Pre)
	tj["post_processor"] = map[string]any{"type": "Sequence", "processors": []any{
		map[string]any{"type": "ByteLevel"},
		map[string]any{"type": "TemplateProcessing", "single": []any{
			map[string]any{"SpecialToken": map[string]any{"id": "<|endoftext|>"}},
			map[string]any{"Sequence": map[string]any{"id": "A"}}}}}}
	dir := writeFiles(t, map[string]any{
		"tokenizer.json":        tj,
		"tokenizer_config.json": map[string]any{"bos_token": "<|endoftext|>"},
	})
	v, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b, ok := v.AddToken["bos"]; !ok || !b || v.Special["bos"] != 5 {
		t.Errorf("add_bos %v %v, bos %d", b, ok, v.Special["bos"])
	}
	if _, ok := v.AddToken["eos"]; ok {
		t.Error("add_eos set by a template that ends with the sequence")
	}
	// without tokenizer_config.json the template's own tokens are BOS and
	// EOS, as SpecialVocab takes them
	tj["post_processor"] = map[string]any{"type": "TemplateProcessing", "single": []any{
		map[string]any{"SpecialToken": map[string]any{"id": "<|endoftext|>"}},
		map[string]any{"Sequence": map[string]any{"id": "A"}},
		map[string]any{"SpecialToken": map[string]any{"id": "<|im_end|>"}}}}
	v, err = Load(writeFiles(t, map[string]any{"tokenizer.json": tj}))
	if err != nil {
		t.Fatal(err)
	}
	if !v.AddToken["bos"] || !v.AddToken["eos"] {
		t.Errorf("add_bos %v add_eos %v", v.AddToken["bos"], v.AddToken["eos"])
	}
}

// TestHostileInputs: every bad checkpoint is an error, not a panic or a
// huge allocation.
func TestHostileInputs(t *testing.T) {
	bpe := func(edit func(m map[string]any)) map[string]any {
		tj := tinyBPE(llama3Pre)
		edit(tj["model"].(map[string]any))
		return tj
	}
	for _, tc := range []struct {
		name  string
		files map[string]any
		want  string
	}{
		{"nothing", map[string]any{"config.json": map[string]any{}}, "no tokenizer.json or tokenizer.model"},
		{"tekken", map[string]any{"tekken.json": map[string]any{}}, "tekken.json is not supported"},
		{"truncated json", map[string]any{"tokenizer.json": []byte(`{"model": {"type": "BPE", "vocab": {"a": 0`)}, "unexpected end"},
		{"not an object", map[string]any{"tokenizer.json": tinyBPE(llama3Pre), "config.json": []int{1}}, "config.json"},
		{"unigram json", map[string]any{"tokenizer.json": map[string]any{"model": map[string]any{"type": "Unigram", "vocab": [][]any{{"a", -1.0}}}}}, `"Unigram"`},
		{"wordpiece json", map[string]any{"tokenizer.json": map[string]any{"model": map[string]any{"type": "WordPiece", "vocab": map[string]int{"a": 0}}}}, `"WordPiece"`},
		{"merge of absent token", map[string]any{"tokenizer.json": bpe(func(m map[string]any) { m["merges"] = []string{"a b", "b c"} })}, `"c" is not in the vocabulary`},
		{"merge result absent", map[string]any{"tokenizer.json": bpe(func(m map[string]any) { m["merges"] = []string{"b a"} })}, `"ba" is not in the vocabulary`},
		{"bad merge", map[string]any{"tokenizer.json": bpe(func(m map[string]any) { m["merges"] = []string{"ab"} })}, "two parts"},
		{"negative id", map[string]any{"tokenizer.json": bpe(func(m map[string]any) { m["vocab"] = map[string]int{"a": -1} })}, "out of range"},
		{"huge id", map[string]any{"tokenizer.json": bpe(func(m map[string]any) { m["vocab"] = map[string]int{"a": 1 << 40} })}, "out of range"},
		{"shared id", map[string]any{"tokenizer.json": bpe(func(m map[string]any) { m["vocab"] = map[string]int{"a": 0, "b": 0, "ab": 1, "Ġ": 2, "Ġab": 4} })}, "share id"},
		{"vocab_size too small", map[string]any{"tokenizer.json": tinyBPE(llama3Pre), "config.json": map[string]any{"vocab_size": 4}}, "does not fit config.json's vocab_size 4"},
		{"vocab_size huge", map[string]any{"tokenizer.json": tinyBPE(llama3Pre), "config.json": map[string]any{"vocab_size": 1e12}}, "vocab_size"},
		{"vocab_size padding", map[string]any{"tokenizer.json": tinyBPE(llama3Pre), "config.json": map[string]any{"vocab_size": 1 << 20}}, "too many to pad"},
		{"sparse ids", map[string]any{"tokenizer.json": bpe(func(m map[string]any) { m["vocab"] = map[string]int{"a": 1 << 23}; m["merges"] = nil })}, "too many to pad"},
		{"vocab_size text", map[string]any{"tokenizer.json": tinyBPE(llama3Pre), "config.json": map[string]any{"vocab_size": "10"}}, "vocab_size"},
		{"eos out of range", map[string]any{"tokenizer.json": tinyBPE(llama3Pre), "generation_config.json": map[string]any{"eos_token_id": []int{5, 99}}}, "eos_token_id 99"},
		{"eos not a number", map[string]any{"tokenizer.json": tinyBPE(llama3Pre), "generation_config.json": map[string]any{"eos_token_id": "x"}}, "eos_token_id"},
		{"negative special", map[string]any{"tokenizer.json": tinyBPE(llama3Pre), "config.json": map[string]any{"bos_token_id": -3}}, "id -3"},
		{"protobuf garbage", map[string]any{"tokenizer.model": []byte{0xff, 0xff, 0xff, 0xff}}, "SentencePiece model"},
		{"protobuf truncated", map[string]any{"tokenizer.model": spModelBytes(spBPE, true, tinySPM...)[:20]}, "SentencePiece model"},
		{"piece type", map[string]any{"tokenizer.model": spModelBytes(spBPE, true, spPiece{"a", 0, 9})}, "type 9"},
		{"empty piece", map[string]any{"tokenizer.model": spModelBytes(spBPE, true, spPiece{"", 0, 1})}, "empty piece"},
		{"unigram model", map[string]any{"tokenizer.model": spModelBytes(spUnigram, true, tinySPM...)}, "Unigram"},
		{"pieces beyond vocab_size", map[string]any{"tokenizer.model": spModelBytes(spBPE, true, tinySPM...), "config.json": map[string]any{"vocab_size": 3}}, "do not fit"},
		{"bad added_tokens.json", map[string]any{"tokenizer.model": spModelBytes(spBPE, true, tinySPM...), "added_tokens.json": map[string]any{"x": -1}}, "bad id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(writeFiles(t, tc.files))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
	t.Run("file too large", func(t *testing.T) {
		defer func(n int64) { maxFileBytes = n }(maxFileBytes)
		maxFileBytes = 64
		_, err := Load(writeFiles(t, map[string]any{"tokenizer.json": tinyBPE(llama3Pre)}))
		if err == nil || !strings.Contains(err.Error(), "larger than 64 bytes") {
			t.Errorf("error %v", err)
		}
	})
}

func TestLlama2CHostile(t *testing.T) {
	le := binary.LittleEndian
	tok := func(score float32, s string) []byte {
		b := le.AppendUint32(nil, math.Float32bits(score))
		b = le.AppendUint32(b, uint32(len(s)))
		return append(b, s...)
	}
	good := le.AppendUint32(nil, 8)
	for _, s := range []string{"<unk>", "\n<s>\n", "\n</s>\n", "<0x0A>", " the", ""} {
		good = append(good, tok(0, s)...)
	}
	dir := t.TempDir()
	write := func(b []byte) string {
		p := filepath.Join(dir, "tok.bin")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	v, err := FromLlama2C(write(good))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(v.Tokens, []string{"<unk>", "<s>", "</s>", "<0x0A>", "▁the", ""}) ||
		!slices.Equal(v.Types, []int32{TypeUnknown, TypeControl, TypeControl, TypeByte, TypeNormal, TypeControl}) {
		t.Errorf("tokens %q types %v", v.Tokens, v.Types)
	}
	for name, b := range map[string][]byte{
		"truncated":  good[:len(good)-3],
		"huge token": append(le.AppendUint32(nil, 8), append(le.AppendUint32(nil, 0), le.AppendUint32(nil, 1<<31-1)...)...),
		"empty":      {},
	} {
		if _, err := FromLlama2C(write(b)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := FromLlama2C(filepath.Join(dir, "absent.bin")); err == nil {
		t.Error("absent file: no error")
	}
}

// TestByteFallbackJSON: a SentencePiece model converted by transformers
// (BPE with byte fallback, a Sequence decoder) converts as "llama", scored
// by its merge order.
func TestByteFallbackJSON(t *testing.T) {
	dir := writeFiles(t, map[string]any{
		"tokenizer.json": map[string]any{
			"model": map[string]any{
				"type": "BPE", "byte_fallback": true, "unk_token": "<unk>",
				"vocab":  map[string]int{"<unk>": 0, "<0x41>": 1, "▁": 2, "a": 3, "b": 4, "▁a": 5, "ab": 6, "▁ab": 7, "ba": 8},
				"merges": [][]string{{"▁", "a"}, {"a", "b"}, {"▁a", "b"}, {"▁", "ab"}},
			},
			"added_tokens": []any{map[string]any{"id": 9, "content": "<s>", "special": true}},
			"decoder":      map[string]any{"type": "Sequence", "decoders": []any{}},
		},
		"tokenizer_config.json": map[string]any{"add_prefix_space": false, "bos_token": "<s>"},
	})
	v, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	wantTypes := []int32{TypeUnknown, TypeByte, 1, 1, 1, 1, 1, 1, 1, TypeControl}
	// "ba" is made by no merge: merged last
	wantScores := []float32{0, 0, 0, 0, 0, -1, -2, -3, -1e9, -1000}
	if v.Model != "llama" || v.Pre != "default" || !slices.Equal(v.Types, wantTypes) || !slices.Equal(v.Scores, wantScores) {
		t.Errorf("model %q pre %q types %v scores %v", v.Model, v.Pre, v.Types, v.Scores)
	}
	if v.AddSpacePrefix == nil || *v.AddSpacePrefix || v.Special["bos"] != 9 || v.Merges != nil {
		t.Errorf("add_space_prefix %v bos %d merges %q", v.AddSpacePrefix, v.Special["bos"], v.Merges)
	}
	tok, err := tokenizer.FromGGUF(parseWritten(t, v))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := tok.Encode("ab aA", false, false); !slices.Equal(got, []int32{6, 5, 1}) {
		t.Errorf("Encode = %v", got)
	}
}
