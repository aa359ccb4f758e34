package vocab

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/internal/testfiles"
	"github.com/edgellm/edgellm/tokenizer"
	"google.golang.org/protobuf/encoding/protowire"
)

// origVocab is a vocabulary GGUF's tokenizer metadata.
type origVocab struct {
	model, pre string
	tokens     []string
	types      []int32
	scores     []float32
	merges     []string
	special    map[string]int // kind -> id, for the kinds the file has
	add        map[string]bool
	template   string
}

func readOrig(t *testing.T, f *gguf.File) *origVocab {
	t.Helper()
	o := &origVocab{special: map[string]int{}, add: map[string]bool{}}
	var err error
	if o.model, err = f.String("tokenizer.ggml.model"); err != nil {
		t.Fatal(err)
	}
	if f.Has("tokenizer.ggml.pre") {
		o.pre, _ = f.String("tokenizer.ggml.pre")
	}
	if o.tokens, err = f.Strings("tokenizer.ggml.tokens"); err != nil {
		t.Fatal(err)
	}
	if o.types, err = f.Int32s("tokenizer.ggml.token_type"); err != nil {
		t.Fatal(err)
	}
	if f.Has("tokenizer.ggml.scores") {
		o.scores, _ = f.Float32s("tokenizer.ggml.scores")
	}
	if f.Has("tokenizer.ggml.merges") {
		o.merges, _ = f.Strings("tokenizer.ggml.merges")
	}
	for _, k := range specialKinds {
		if f.Has(k.key) {
			id, err := f.Uint(k.key)
			if err != nil {
				t.Fatal(err)
			}
			o.special[k.kind] = int(id)
		}
	}
	for _, k := range []string{"bos", "eos"} {
		if key := "tokenizer.ggml.add_" + k + "_token"; f.Has(key) {
			o.add[k], _ = f.Bool(key)
		}
	}
	if f.Has("tokenizer.chat_template") {
		o.template, _ = f.String("tokenizer.chat_template")
	}
	return o
}

// isPad reports llama.cpp's filler token for an id a tokenizer leaves
// empty: not part of a Hugging Face tokenizer, config.json's vocab_size
// brings it back.
func (o *origVocab) isPad(id int) bool { return o.tokens[id] == "[PAD"+strconv.Itoa(id)+"]" }

// added reports tokens a Hugging Face tokenizer lists as added tokens.
func (o *origVocab) added(id int) bool {
	return !o.isPad(id) && (o.types[id] == TypeControl || o.types[id] == TypeUserDefined)
}

// wantType is the type today's converter gives a token of the old
// file: padding is unused (older converters wrote user-defined or unknown),
// and user-defined tokens shaped like <|x|>, <｜x｜> or <pad> are control
// (llama.cpp's does_token_look_special).
func (o *origVocab) wantType(id int) int32 {
	s := o.tokens[id]
	switch {
	case o.isPad(id):
		return TypeUnused
	case o.types[id] == TypeUserDefined && (s == "<pad>" ||
		strings.HasPrefix(s, "<|") && strings.HasSuffix(s, "|>") ||
		strings.HasPrefix(s, "<｜") && strings.HasSuffix(s, "｜>")):
		return TypeControl
	}
	return o.types[id]
}

// writeJSON writes v as dir/name.
func writeJSON(t *testing.T, dir, name string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeConfigs writes tokenizer_config.json and config.json as a Hugging
// Face checkpoint of the vocabulary has them.
func writeConfigs(t *testing.T, dir string, o *origVocab) {
	t.Helper()
	tc := map[string]any{}
	decoder := map[string]any{}
	for id := range o.tokens {
		if o.added(id) {
			decoder[strconv.Itoa(id)] = map[string]any{"content": o.tokens[id], "special": o.types[id] == TypeControl}
		}
	}
	tc["added_tokens_decoder"] = decoder
	for k, b := range o.add {
		tc["add_"+k+"_token"] = b
	}
	for k, id := range o.special {
		if id < len(o.tokens) && o.added(id) {
			tc[k+"_token"] = o.tokens[id]
		}
	}
	if o.template != "" {
		tc["chat_template"] = o.template
	}
	writeJSON(t, dir, "tokenizer_config.json", tc)
	cfg := map[string]any{"vocab_size": len(o.tokens)}
	for k, id := range o.special {
		cfg[k+"_token_id"] = id
	}
	writeJSON(t, dir, "config.json", cfg)
}

// writeTokenizerJSON writes the vocabulary as a Hugging Face tokenizer.json:
// byte-level BPE with its merges, or a SentencePiece vocabulary as
// transformers converts one (BPE with byte fallback, merges made from the
// scores as its SentencePieceExtractor makes them).
func writeTokenizerJSON(t *testing.T, dir string, o *origVocab) {
	t.Helper()
	vocab := map[string]int{}
	var added []map[string]any
	for id, s := range o.tokens {
		switch {
		case o.isPad(id):
		case o.added(id):
			added = append(added, map[string]any{"id": id, "content": s, "special": o.types[id] == TypeControl, "normalized": false})
		default:
			vocab[s] = id
		}
	}
	model := map[string]any{"type": "BPE", "vocab": vocab}
	tok := map[string]any{"version": "1.0", "added_tokens": added, "model": model}
	if o.model == "gpt2" {
		model["merges"] = o.merges
		tok["decoder"] = map[string]any{"type": "ByteLevel"}
		pre := map[string]any{"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}
		if o.pre == "starcoder" || o.pre == "refact" {
			pre = map[string]any{"type": "Sequence", "pretokenizers": []any{
				map[string]any{"type": "Digits", "individual_digits": true}, pre}}
		}
		tok["pre_tokenizer"] = pre
	} else {
		model["merges"] = spmMerges(o, vocab)
		model["byte_fallback"] = true
		for id, ty := range o.types {
			if ty == TypeUnknown && !o.isPad(id) {
				model["unk_token"] = o.tokens[id]
			}
		}
		tok["normalizer"] = map[string]any{"type": "Sequence", "normalizers": []any{
			map[string]any{"type": "Prepend", "prepend": "▁"},
			map[string]any{"type": "Replace", "pattern": map[string]any{"String": " "}, "content": "▁"}}}
		tok["decoder"] = map[string]any{"type": "Sequence", "decoders": []any{
			map[string]any{"type": "Replace", "pattern": map[string]any{"String": "▁"}, "content": " "},
			map[string]any{"type": "ByteFallback"}, map[string]any{"type": "Fuse"}}}
	}
	writeJSON(t, dir, "tokenizer.json", tok)
	writeConfigs(t, dir, o)
}

// spmMerges are transformers' SentencePieceExtractor merges: every split
// of a normal piece into two pieces of the vocabulary, ordered by the
// piece's score (highest first), ties by the parts' ids.
func spmMerges(o *origVocab, vocab map[string]int) [][2]string {
	type merge struct {
		l, r   string
		score  float32
		li, ri int
	}
	var ms []merge
	for id, s := range o.tokens {
		if o.types[id] != TypeNormal {
			continue
		}
		for i := range s {
			if i == 0 {
				continue
			}
			li, lok := vocab[s[:i]]
			ri, rok := vocab[s[i:]]
			if lok && rok {
				ms = append(ms, merge{s[:i], s[i:], o.scores[id], li, ri})
			}
		}
	}
	slices.SortStableFunc(ms, func(a, b merge) int {
		switch {
		case a.score != b.score:
			if a.score > b.score {
				return -1
			}
			return 1
		case a.li != b.li:
			return a.li - b.li
		}
		return a.ri - b.ri
	})
	out := make([][2]string, len(ms))
	for i, m := range ms {
		out[i] = [2]string{m.l, m.r}
	}
	return out
}

// writeSentencePiece writes the vocabulary as tokenizer.model (a BPE
// ModelProto with byte fallback), encoded with protowire.
func writeSentencePiece(t *testing.T, dir string, o *origVocab) {
	t.Helper()
	n := len(o.tokens)
	for n > 0 && o.isPad(n-1) {
		n--
	}
	var b []byte
	for id := range n {
		ty := o.types[id]
		if o.isPad(id) {
			ty = TypeUnused
		}
		var p []byte
		p = protowire.AppendTag(p, 1, protowire.BytesType)
		p = protowire.AppendString(p, o.tokens[id])
		p = protowire.AppendTag(p, 2, protowire.Fixed32Type)
		p = protowire.AppendFixed32(p, math.Float32bits(o.scores[id]))
		p = protowire.AppendTag(p, 3, protowire.VarintType)
		p = protowire.AppendVarint(p, uint64(ty))
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, p)
	}
	var ts []byte
	ts = protowire.AppendTag(ts, 3, protowire.VarintType)
	ts = protowire.AppendVarint(ts, 2) // BPE
	ts = protowire.AppendTag(ts, 35, protowire.VarintType)
	ts = protowire.AppendVarint(ts, 1) // byte_fallback
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, ts)
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.model"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	writeConfigs(t, dir, o)
}

// wantPre is the pre-tokenizer today's converter writes: old files of the
// GPT-NeoX-20B tokenizer name none (gpt-neox) or "mpt", and llama.cpp's
// table maps that tokenizer's hash to "olmo" (its last entry for the hash,
// the same splitting as mpt's); SentencePiece vocabularies are "default".
func (o *origVocab) wantPre(name string) string {
	switch {
	case o.model == "llama":
		return "default"
	case name == "gpt-neox" || name == "mpt":
		return "olmo"
	}
	return o.pre
}

var sampleTexts = []string{
	"Hello world", " leading and trailing ", "multiple   spaces\t\ttabs\n\n\nnewlines\r\n",
	"digits 1 12 123 1234 12345 3.14159", "ünïcødé façade Ελληνικά русский",
	"日本語のテキスト 中文文本 한국어", "emoji 🙂🚀👍🏽 ©®™", "func main() {\n\tx := a[i] + b*c\n}\n",
	"I'm you're we've they'll DON'T", "", " ", "a",
}

// TestRoundTripVocabs writes each vocabulary GGUF as a Hugging Face
// checkpoint (tokenizer.json; SentencePiece ones also as tokenizer.model),
// converts it back and checks the metadata and the tokenizer's output:
// llama.cpp's vectors where they exist, the original file's tokenizer on
// sample texts everywhere.
func TestRoundTripVocabs(t *testing.T) {
	for _, rel := range testfiles.Glob(t, "vocab/ggml-vocab-*.gguf") {
		name := strings.TrimSuffix(strings.TrimPrefix(path.Base(rel), "ggml-vocab-"), ".gguf")
		t.Run(name, func(t *testing.T) {
			f, err := gguf.Open(testfiles.Path(t, rel))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			o := readOrig(t, f)
			origTok, err := tokenizer.FromGGUF(f)
			if err != nil {
				t.Fatal(err)
			}
			writers := map[string]func(*testing.T, string, *origVocab){"tokenizer.json": writeTokenizerJSON}
			if o.model == "llama" {
				writers["tokenizer.model"] = writeSentencePiece
			}
			for wname, write := range writers {
				t.Run(wname, func(t *testing.T) {
					dir := t.TempDir()
					write(t, dir, o)
					v, err := Load(dir)
					if err != nil {
						t.Fatal(err)
					}
					checkVocab(t, name, o, v, wname == "tokenizer.model")
					tok := vocabTokenizer(t, f, v)
					if o.pre == v.Pre || o.pre == "" && o.model == "llama" || tokenizer.PreClass(o.pre) == tokenizer.PreClass(v.Pre) {
						for _, s := range sampleTexts {
							want, _ := origTok.Encode(s, true, true)
							got, err := tok.Encode(s, true, true)
							if err != nil || !slices.Equal(got, want) {
								t.Errorf("%q: got %v (%v), the original file's tokenizer %v", s, got, err, want)
							}
						}
					}
					checkVectors(t, name, tok)
				})
			}
		})
	}
}

func checkVocab(t *testing.T, name string, o *origVocab, v *Vocab, scores bool) {
	t.Helper()
	if v.Model != o.model {
		t.Errorf("model %q, want %q", v.Model, o.model)
	}
	if want := o.wantPre(name); v.Pre != want {
		t.Errorf("pre %q (%s), want %q", v.Pre, v.PreFrom, want)
	}
	// every vocabulary here comes from a model in llama.cpp's table
	if want := map[string]string{"gpt2": "hash", "llama": "fixed"}[o.model]; v.PreFrom != want {
		t.Errorf("pre %q found by %s, want by %s", v.Pre, v.PreFrom, want)
	}
	if !slices.Equal(v.Tokens, o.tokens) {
		for i := range min(len(v.Tokens), len(o.tokens)) {
			if v.Tokens[i] != o.tokens[i] {
				t.Errorf("token %d %q, want %q", i, v.Tokens[i], o.tokens[i])
				break
			}
		}
		t.Fatalf("%d tokens, want %d", len(v.Tokens), len(o.tokens))
	}
	bad := 0
	for id := range o.tokens {
		if want := o.wantType(id); v.Types[id] != want && bad < 5 {
			bad++
			t.Errorf("token %d %q: type %d, want %d (file: %d)", id, o.tokens[id], v.Types[id], want, o.types[id])
		}
	}
	if !slices.Equal(v.Merges, o.merges) {
		t.Errorf("%d merges, want %d (equal: %v)", len(v.Merges), len(o.merges), slices.Equal(v.Merges, o.merges))
	}
	if scores {
		for id, ty := range o.types {
			if (ty == TypeNormal || ty == TypeByte || ty == TypeUnknown) && v.Scores[id] != o.scores[id] {
				t.Errorf("token %d %q: score %g, want %g", id, o.tokens[id], v.Scores[id], o.scores[id])
				break
			}
		}
	}
	for k, id := range o.special {
		if got, ok := v.Special[k]; !ok || int(got) != id {
			t.Errorf("%s id %d (set %v), want %d", k, got, ok, id)
		}
	}
	for k, b := range o.add {
		if got, ok := v.AddToken[k]; !ok || got != b {
			t.Errorf("add_%s_token %v (set %v), want %v", k, got, ok, b)
		}
	}
	if v.ChatTemplate != o.template {
		t.Errorf("chat template %q, want %q", v.ChatTemplate, o.template)
	}
}

// vocabTokenizer writes v as a vocabulary-only GGUF (with the original's
// general.* keys, which llama.cpp's tokenizer also reads: Phi-3's name)
// and opens it with package tokenizer.
func vocabTokenizer(t *testing.T, orig *gguf.File, v *Vocab) *tokenizer.Tokenizer {
	t.Helper()
	w := gguf.NewWriter()
	for _, kv := range orig.KVs {
		if strings.HasPrefix(kv.Key, "general.") {
			w.Add(kv.Key, kv.Value)
		}
	}
	v.Write(w)
	p := filepath.Join(t.TempDir(), "vocab.gguf")
	if err := w.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// checkVectors compares tokenize output with llama.cpp's vectors
// (vocab/README.md: texts split on the separator, one line of ids each,
// no BOS/EOS, special text not parsed), where the vocabulary has them.
func checkVectors(t *testing.T, name string, tok *tokenizer.Tokenizer) {
	t.Helper()
	base := "vocab/ggml-vocab-" + name + ".gguf"
	if _, ok := testfiles.Find(base + ".inp"); !ok {
		return
	}
	inp, err := os.ReadFile(testfiles.Path(t, base+".inp"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.ReadFile(testfiles.Path(t, base+".out"))
	if err != nil {
		t.Fatal(err)
	}
	texts := strings.Split(string(inp), "\n__ggml_vocab_test__\n")
	texts = texts[:len(texts)-1]
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(lines) != len(texts) || len(texts) == 0 {
		t.Fatalf("%d texts, %d lines of ids", len(texts), len(lines))
	}
	for i, text := range texts {
		var want []int32
		for _, f := range strings.Fields(lines[i]) {
			id, err := strconv.Atoi(f)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, int32(id))
		}
		got, err := tok.Encode(text, false, false)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("vector %d %q: got %v (%v), want %v", i, text, got, err, want)
		}
	}
}

// TestLlama2C converts stories260K's tok512.bin and compares every
// tokenizer key with llama.cpp's conversion of the same model.
func TestLlama2C(t *testing.T) {
	v, err := FromLlama2C(testfiles.Path(t, "models/stories260K/tok512.bin"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Open(testfiles.Path(t, "models/stories260K/stories260K-f32.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := gguf.NewWriter()
	v.Write(w)
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	got, err := gguf.Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, kv := range f.KVs {
		if !strings.HasPrefix(kv.Key, "tokenizer.") {
			continue
		}
		n++
		g, ok := got.Lookup(kv.Key)
		if !ok {
			t.Errorf("%s missing", kv.Key)
		} else if !g.Equal(kv.Value) {
			t.Errorf("%s = %v, want %v", kv.Key, g, kv.Value)
		}
	}
	for _, kv := range got.KVs {
		if _, ok := f.Lookup(kv.Key); !ok {
			t.Errorf("%s written, llama.cpp writes no such key", kv.Key)
		}
	}
	if n < 8 || v.Len() != 512 {
		t.Errorf("%d tokenizer keys compared, %d tokens", n, v.Len())
	}
}
