package tokenizer

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/edgellm/edgellm/gguf"
)

// Small vocabularies shaped like those of the models the engine runs (Gemma 3's
// SentencePiece one, Qwen2/Qwen3's and Llama 3's byte-level BPE ones),
// written as GGUF with the repository's writer and loaded as a model's would
// be. The expected ids are worked out by hand from llama.cpp's algorithms as
// read in its src/llama-vocab.cpp (llm_tokenizer_spm_session,
// llm_tokenizer_bpe_session, tokenizer_st_partition) at the peer commit.

// vtok is one vocabulary entry.
type vtok struct {
	text  string
	typ   int32
	score float32
}

// testVocab is a vocabulary, its text -> id map and the GGUF keys written
// besides tokens, scores, types and merges.
type testVocab struct {
	toks   []vtok
	merges []string
	kv     map[string]any
	id     map[string]int32
}

func newTestVocab(toks []vtok, merges []string, kv map[string]any) *testVocab {
	v := &testVocab{toks: toks, merges: merges, kv: kv, id: map[string]int32{}}
	for i, tk := range toks {
		if _, dup := v.id[tk.text]; dup {
			panic("duplicate test token " + tk.text)
		}
		v.id[tk.text] = int32(i)
	}
	return v
}

// ids maps token texts to ids, failing on a text the vocabulary lacks.
func (v *testVocab) ids(t testing.TB, texts ...string) []int32 {
	t.Helper()
	out := make([]int32, len(texts))
	for i, s := range texts {
		id, ok := v.id[s]
		if !ok {
			t.Fatalf("test vocabulary has no %q", s)
		}
		out[i] = id
	}
	return out
}

// load writes the vocabulary as a GGUF file and builds its tokenizer.
func (v *testVocab) load(t testing.TB) *Tokenizer {
	t.Helper()
	w := gguf.NewWriter()
	var texts []string
	var scores []float32
	var types []int32
	for _, tk := range v.toks {
		texts = append(texts, tk.text)
		scores = append(scores, tk.score)
		types = append(types, tk.typ)
	}
	w.AddStrings(keyTokens, texts)
	w.AddFloat32s(keyScores, scores)
	w.AddInt32s(keyTokenType, types)
	if v.merges != nil {
		w.AddStrings(keyMerges, v.merges)
	}
	for k, val := range v.kv {
		switch x := val.(type) {
		case string:
			w.AddString(k, x)
		case bool:
			w.AddBool(k, x)
		case int:
			w.AddUint32(k, uint32(x))
		case []int32:
			w.AddInt32s(k, x)
		default:
			t.Fatalf("key %s: unsupported %T", k, val)
		}
	}
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// gemmaVocab is shaped like Gemma 3's (google/gemma-3-*-it converted by
// llama.cpp's convert_hf_to_gguf.py): <pad> <eos> <bos> <unk> first, control
// turn markers, a user-defined tag and whitespace run (the converter writes
// user-defined "▁" as a space), the 256 byte tokens, then scored pieces.
// The converter writes add_space_prefix = false and the file's add_bos_token
// = true; llama.cpp's defaults for "llama" vocabularies are true and true.
func gemmaVocab(kv map[string]any) *testVocab {
	toks := []vtok{
		{"<pad>", typeControl, 0}, {"<eos>", typeControl, 0}, {"<bos>", typeControl, 0}, {"<unk>", typeUnknown, 0},
		{"<mask>", typeControl, 0}, {"<start_of_turn>", typeControl, 0}, {"<end_of_turn>", typeControl, 0},
		{"<unused0>", typeControl, 0}, {"<h1>", typeUserDefined, 0}, {"  ", typeUserDefined, 0},
	}
	for b := range 256 {
		toks = append(toks, vtok{fmt.Sprintf("<0x%02X>", b), typeByte, 0})
	}
	for _, c := range []string{spmSpace, "H", "e", "l", "o", "w", "r", "d", "u", "s", "a", "\n"} {
		toks = append(toks, vtok{c, typeNormal, -100})
	}
	for _, p := range []struct {
		s     string
		score float32
	}{
		{"ll", -1}, {"He", -2}, {"llo", -1.5}, {"Hello", -0.5}, {spmSpace + "Hello", -0.4},
		{spmSpace + "w", -3}, {"or", -2.5}, {"ld", -2.5}, {"wor", -2.2}, {spmSpace + "wor", -2},
		{spmSpace + "world", -0.1}, {"world", -0.2}, {"us", -2}, {"er", -2}, {"user", -1},
		{"aa", -1}, {"\n\n", -1},
	} {
		toks = append(toks, vtok{p.s, typeNormal, p.score})
	}
	base := map[string]any{
		keyArch: "gemma3", keyModel: "llama", keyPre: "default",
		"tokenizer.ggml.bos_token_id": 2, "tokenizer.ggml.eos_token_id": 1,
		"tokenizer.ggml.unknown_token_id": 3, "tokenizer.ggml.padding_token_id": 0,
		keyAddBOS: true, keyAddEOS: false, keyAddSpacePrefix: false,
	}
	for k, v := range kv {
		if v == nil {
			delete(base, k)
		} else {
			base[k] = v
		}
	}
	return newTestVocab(toks, nil, base)
}

func byteID(b byte) string { return fmt.Sprintf("<0x%02X>", b) }

func TestGemmaVocabulary(t *testing.T) {
	v := gemmaVocab(nil)
	tok := v.load(t)
	const sp = spmSpace
	cases := []struct {
		text                string
		addSpecial, special bool
		want                []string
	}{
		// "Hello▁world" merges as one string (SentencePiece does not pre-split):
		// ll, llo, He, Hello, then or, wor, ▁wor, ld, ▁world. No "▁" in front:
		// add_space_prefix is false.
		{"Hello world", true, false, []string{"<bos>", "Hello", sp + "world"}},
		{"world", false, false, []string{"world"}},
		// Equal scores merge leftmost first: aa|a, not a|aa.
		{"aaa", false, false, []string{"aa", "a"}},
		// Bytes with no piece fall back to <0xNN> tokens.
		{"Hé<", false, false, []string{"H", byteID(0xC3), byteID(0xA9), byteID('<')}},
		// Turn markers are control tokens: cut out only when special text is
		// parsed, and no space is put after them.
		{"<start_of_turn>user\nHello<end_of_turn>\n", false, true,
			[]string{"<start_of_turn>", "user", "\n", "Hello", "<end_of_turn>", "\n"}},
		{"<eos>", false, false, []string{byteID('<'), "e", "o", "s", byteID('>')}},
		{"<eos>", false, true, []string{"<eos>"}},
		// User-defined tokens are always cut out, whitespace runs included.
		{"a<h1>Hello  world", false, false, []string{"a", "<h1>", "Hello", "  ", "world"}},
		{"", true, false, []string{"<bos>"}},
		{"\n\n\n", false, false, []string{"\n\n", "\n"}},
	}
	for _, c := range cases {
		got, err := tok.Encode(c.text, c.addSpecial, c.special)
		if err != nil {
			t.Fatalf("%q: %v", c.text, err)
		}
		if want := v.ids(t, c.want...); !slices.Equal(got, want) {
			t.Errorf("Encode(%q, %v, %v) = %v, want %v %q", c.text, c.addSpecial, c.special, got, want, c.want)
		}
	}

	if tok.BOS() != 2 || tok.EOS() != 1 || !tok.AddBOS() || tok.AddEOS() {
		t.Errorf("BOS %d EOS %d AddBOS %v AddEOS %v", tok.BOS(), tok.EOS(), tok.AddBOS(), tok.AddEOS())
	}
	// <end_of_turn> is the end-of-turn token (by its text) and ends
	// generation, as <eos> does; <start_of_turn>, <pad>, <bos> do not.
	if eot := v.id["<end_of_turn>"]; tok.EOT() != eot {
		t.Errorf("EOT = %d, want %d", tok.EOT(), eot)
	}
	for text, want := range map[string]bool{"<eos>": true, "<end_of_turn>": true, "<start_of_turn>": false, "<pad>": false, "<bos>": false, "Hello": false} {
		if got := tok.IsEOG(v.id[text]); got != want {
			t.Errorf("IsEOG(%s) = %v", text, got)
		}
	}

	// Pieces: control tokens print nothing, user-defined ones their text,
	// byte tokens their byte, "▁" a space.
	for text, want := range map[string]string{"<end_of_turn>": "", "<h1>": "<h1>", "  ": "  ", byteID(0xC3): "\xc3", sp + "world": " world"} {
		if got := string(tok.Piece(v.id[text])); got != want {
			t.Errorf("Piece(%q) = %q, want %q", text, got, want)
		}
	}
	// Without a space prefix there is no leading space to take back.
	if got := tok.Decode(v.ids(t, "<bos>", "Hello", sp+"world")); got != "Hello world" {
		t.Errorf("Decode = %q", got)
	}
	if got := tok.Decode(v.ids(t, sp+"world")); got != " world" {
		t.Errorf("Decode(▁world) = %q, want \" world\"", got)
	}
}

// The same vocabulary under llama.cpp's defaults for "llama" (no
// add_space_prefix key: a space goes before the text and after every
// special token) and with add_eos_token / add_bos_token flipped.
func TestSPMFlags(t *testing.T) {
	const sp = spmSpace
	v := gemmaVocab(map[string]any{keyAddSpacePrefix: nil})
	tok := v.load(t)
	for _, c := range []struct {
		text string
		want []string
	}{
		{"Hello world", []string{"<bos>", sp + "Hello", sp + "world"}},
		{"<start_of_turn>world", []string{"<bos>", "<start_of_turn>", sp + "world"}},
	} {
		got, err := tok.Encode(c.text, true, true)
		if err != nil {
			t.Fatal(err)
		}
		if want := v.ids(t, c.want...); !slices.Equal(got, want) {
			t.Errorf("space prefix: Encode(%q) = %v, want %q", c.text, got, c.want)
		}
	}
	// The prefix's space is taken back when decoding, unless BOS leads.
	if got := tok.Decode(v.ids(t, sp+"world")); got != "world" {
		t.Errorf("space prefix: Decode(▁world) = %q", got)
	}
	if got := tok.Decode(v.ids(t, "<bos>", sp+"world")); got != " world" {
		t.Errorf("space prefix: Decode(<bos> ▁world) = %q", got)
	}

	v = gemmaVocab(map[string]any{keyAddBOS: false, keyAddEOS: true})
	tok = v.load(t)
	got, err := tok.Encode("world", true, false)
	if want := v.ids(t, "world", "<eos>"); err != nil || !slices.Equal(got, want) {
		t.Errorf("add_eos: %v %v, want %v", got, err, want)
	}
	// A trailing EOS the vocabulary adds is dropped when decoding.
	if got := tok.Decode(v.ids(t, "world", "<eos>")); got != "world" {
		t.Errorf("add_eos: Decode = %q", got)
	}
}

// FuzzGemmaRoundTrip: with Gemma's flags any valid UTF-8 text comes back
// byte for byte from the pieces (byte fallback covers every byte); only a
// literal "▁" cannot, as it stands for a space. Invalid UTF-8 must encode
// without error, but need not come back: as in llama.cpp, a stray lead byte
// makes one symbol of the bytes it announces, "▁" (an escaped space)
// included, so "\xff " comes back as "\xff▁".
func FuzzGemmaRoundTrip(f *testing.F) {
	for _, s := range append(roundTripTexts, "a<h1>b  c", "<start_of_turn>x<end_of_turn>", "\xff\xfe\xe6\x97", "\xff ") {
		f.Add(s)
	}
	tok := gemmaVocab(nil).load(f)
	f.Fuzz(func(t *testing.T, s string) {
		ids, err := tok.Encode(s, false, false)
		if err != nil {
			t.Fatalf("Encode(%q): %v", s, err)
		}
		if strings.Contains(s, spmSpace) || !utf8.ValidString(s) {
			return
		}
		if got := concat(tok, ids); got != s {
			t.Fatalf("pieces of %q give %q", s, got)
		}
		if got := tok.Decode(ids); got != s {
			t.Fatalf("Decode of %q gives %q", s, got)
		}
		// Parsing special text only replaces the specials' texts.
		ids, err = tok.Encode(s, true, true)
		if err != nil {
			t.Fatalf("Encode(%q, special): %v", s, err)
		}
		if ids[0] != tok.BOS() {
			t.Fatalf("no BOS: %v", ids)
		}
		var sb strings.Builder
		for _, id := range ids[1:] {
			if p := tok.Piece(id); len(p) > 0 {
				sb.Write(p)
			} else { // a control or unknown token: its text
				sb.WriteString(tok.Token(id))
			}
		}
		if got := sb.String(); got != s {
			t.Fatalf("special round trip of %q gives %q", s, got)
		}
	})
}

// bpeVocab is a byte-level BPE vocabulary: the 256 byte characters, the
// tokens the merges build, and the special tokens given.
func bpeVocab(merges []string, specials []string, kv map[string]any) *testVocab {
	var toks []vtok
	for b := range 256 {
		toks = append(toks, vtok{byteToRune[b], typeNormal, 0})
	}
	for _, m := range merges {
		toks = append(toks, vtok{strings.ReplaceAll(m, " ", ""), typeNormal, 0})
	}
	for _, s := range specials {
		toks = append(toks, vtok{s, typeControl, 0})
	}
	return newTestVocab(toks, merges, kv)
}

// qwenMerges build "Hello", " world", "user" and "12"; "Ġ" is GPT-2's
// character for the space byte, "Ċ" for "\n".
var qwenMerges = []string{"l l", "H e", "He ll", "Hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "u s", "e r", "us er", "1 2", "Ċ Ċ"}

// qwenVocab is shaped like Qwen2.5/Qwen3's: pre-tokenizer "qwen2",
// <|endoftext|> as BOS (not added: add_bos_token false) and <|im_end|> as EOS.
func qwenVocab() *testVocab {
	v := bpeVocab(qwenMerges, []string{"<|endoftext|>", "<|im_start|>", "<|im_end|>"}, nil)
	v.kv = map[string]any{
		keyArch: "qwen3", keyModel: "gpt2", keyPre: "qwen2",
		"tokenizer.ggml.bos_token_id": int(v.id["<|endoftext|>"]), "tokenizer.ggml.eos_token_id": int(v.id["<|im_end|>"]),
		"tokenizer.ggml.padding_token_id": int(v.id["<|endoftext|>"]), keyAddBOS: false,
	}
	return v
}

func TestQwenVocabulary(t *testing.T) {
	v := qwenVocab()
	tok := v.load(t)
	if tok.Pre() != "qwen2" {
		t.Fatalf("pre-tokenizer %q", tok.Pre())
	}
	for _, c := range []struct {
		text    string
		special bool
		want    []string
	}{
		{"Hello world", false, []string{"Hello", "Ġworld"}},
		// qwen2 takes one digit per word, so the "1 2" merge never applies.
		{"x 123", false, []string{"x", "Ġ", "1", "2", "3"}},
		{"<|im_start|>user\nHello<|im_end|>\n", true, []string{"<|im_start|>", "user", "Ċ", "Hello", "<|im_end|>", "Ċ"}},
		{"<|im_end|>", false, []string{"<", "|", "im", "_", "end", "|", ">"}},
		{"\n\n\n", false, []string{"ĊĊ", "Ċ"}},
	} {
		got, err := tok.Encode(c.text, true, c.special)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]int32, 0, len(c.want))
		for _, s := range c.want {
			if id, ok := v.id[s]; ok {
				want = append(want, id)
				continue
			}
			for _, r := range s { // a word with no merges: its bytes
				want = append(want, v.ids(t, string(r))...)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("Encode(%q) = %v, want %v %q", c.text, got, want, c.want)
		}
	}
	if tok.AddBOS() {
		t.Error("Qwen adds BOS")
	}
	for text, want := range map[string]bool{"<|im_end|>": true, "<|endoftext|>": true, "<|im_start|>": false} {
		if got := tok.IsEOG(v.id[text]); got != want {
			t.Errorf("IsEOG(%s) = %v", text, got)
		}
	}
	// qwen2 keeps spaces before punctuation when decoding (no clean-up).
	if got := tok.Decode(v.ids(t, "Hello", "Ġ", ".")); got != "Hello ." {
		t.Errorf("Decode = %q", got)
	}
}

// llamaVocab is shaped like Llama 3's: pre-tokenizer "llama-bpe" (up to three
// digits a word, a word that is a whole token taken as is), BOS
// <|begin_of_text|> added by default.
func llamaVocab(kv map[string]any) *testVocab {
	// No merge builds "Hello" from "Hell": only ignore_merges reaches it.
	merges := []string{"l l", "H e", "He ll", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "1 2"}
	v := bpeVocab(merges, []string{"<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>"}, nil)
	v.toks = append(v.toks, vtok{"Hello", typeNormal, 0})
	v.id["Hello"] = int32(len(v.toks) - 1)
	v.kv = map[string]any{
		keyArch: "llama", keyModel: "gpt2", keyPre: "llama-bpe",
		"tokenizer.ggml.bos_token_id": int(v.id["<|begin_of_text|>"]), "tokenizer.ggml.eos_token_id": int(v.id["<|eot_id|>"]),
	}
	for k, x := range kv {
		v.kv[k] = x
	}
	return v
}

func TestLlama3Vocabulary(t *testing.T) {
	v := llamaVocab(nil)
	tok := v.load(t)
	for _, c := range []struct {
		text string
		want []string
	}{
		{"Hello world", []string{"<|begin_of_text|>", "Hello", "Ġworld"}},
		// Up to three digits a word; merges apply inside it.
		{"x 1234", []string{"<|begin_of_text|>", "x", "Ġ", "12", "3", "4"}},
		{"<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", []string{"<|begin_of_text|>", "<|start_header_id|>", "u", "s", "e", "r", "<|end_header_id|>", "Ċ", "Ċ", "H", "i", "<|eot_id|>"}},
	} {
		got, err := tok.Encode(c.text, true, true)
		if err != nil {
			t.Fatal(err)
		}
		if want := v.ids(t, c.want...); !slices.Equal(got, want) {
			t.Errorf("Encode(%q) = %v, want %v %q", c.text, got, want, c.want)
		}
	}
	// <|eot_id|>, <|eom_id|> and <|end_of_text|> end generation; the header
	// markers do not.
	for text, want := range map[string]bool{"<|eot_id|>": true, "<|eom_id|>": true, "<|end_of_text|>": true, "<|start_header_id|>": false, "<|begin_of_text|>": false} {
		if got := tok.IsEOG(v.id[text]); got != want {
			t.Errorf("IsEOG(%s) = %v", text, got)
		}
	}
	// A leading BOS is dropped; byte-level BPE's clean-up removes the space
	// before punctuation.
	if got := tok.Decode(v.ids(t, "<|begin_of_text|>", "Hello", "Ġ", ".")); got != "Hello." {
		t.Errorf("Decode = %q", got)
	}
	// The file's add_bos_token overrides llama-bpe's default.
	tok = llamaVocab(map[string]any{keyAddBOS: false}).load(t)
	if got, _ := tok.Encode("Hello", true, false); !slices.Equal(got, v.ids(t, "Hello")) {
		t.Errorf("add_bos_token false: %v", got)
	}
}

// llama.cpp's end-of-generation rules beyond the plain text list: FIM
// tokens found by text become control tokens (by key they keep their type),
// gpt-oss's <|end|> is no end when <|return|> and <|call|> are there (it
// becomes user-defined), and Gemma 4's </s> is none next to <|tool_response>
// (it becomes normal).
func TestEOGRules(t *testing.T) {
	build := func(texts []string, kv map[string]any) (*Tokenizer, map[string]int32) {
		toks := []vtok{{"<unk>", typeUnknown, 0}, {"<s>", typeControl, 0}, {"x", typeNormal, 0}}
		for _, s := range texts {
			toks = append(toks, vtok{s, typeNormal, 0})
		}
		if kv == nil {
			kv = map[string]any{}
		}
		kv[keyModel] = "llama"
		kv[keyAddSpacePrefix] = false
		kv["tokenizer.ggml.eos_token_id"] = 1
		v := newTestVocab(toks, nil, kv)
		return v.load(t), v.id
	}
	tok, id := build([]string{"<|fim_prefix|>", "<|fim_pad|>", "<eos>", "</s>", "[EOS]", "<|end|>"}, nil)
	for s, want := range map[string]bool{"<|fim_prefix|>": false, "<|fim_pad|>": true, "<eos>": true, "</s>": true, "[EOS]": true, "<|end|>": true, "x": false} {
		if tok.IsEOG(id[s]) != want {
			t.Errorf("IsEOG(%s) = %v", s, !want)
		}
		if s != "x" && !tok.IsControl(id[s]) {
			t.Errorf("%s not made a control token", s)
		}
	}
	tok, id = build([]string{"<|fim_prefix|>"}, map[string]any{"tokenizer.ggml.fim_pre_token_id": 2})
	if tok.IsControl(id["<|fim_prefix|>"]) {
		t.Error("FIM prefix given by key still found by text")
	}

	tok, id = build([]string{"<|return|>", "<|call|>", "<|end|>"}, nil)
	end := id["<|end|>"]
	if tok.IsEOG(end) || !tok.IsEOG(id["<|return|>"]) || !tok.IsEOG(id["<|call|>"]) {
		t.Errorf("gpt-oss: IsEOG(<|end|>) = %v", tok.IsEOG(end))
	}
	if got, _ := tok.Encode("x<|end|>", false, false); !slices.Equal(got, []int32{2, end}) {
		t.Errorf("gpt-oss: <|end|> not user-defined: %v", got)
	}

	tok, id = build([]string{"<|tool_response>", "</s>"}, nil)
	if s := id["</s>"]; tok.IsEOG(s) || tok.IsControl(s) || string(tok.Piece(s)) != "</s>" {
		t.Errorf("gemma4: </s> EOG %v control %v", tok.IsEOG(s), tok.IsControl(s))
	}

	// generation_config.json's EOS ids, written as Ollama's converter does
	// (ids 3 and 4 are "stop" and "go"; 99 is out of range)
	tok, id = build([]string{"stop", "go"}, map[string]any{keyEOSIDs: []int32{3, 99}})
	if !tok.IsEOG(id["stop"]) || tok.IsEOG(id["go"]) {
		t.Errorf("eos_token_ids: IsEOG(stop) = %v, IsEOG(go) = %v", tok.IsEOG(id["stop"]), tok.IsEOG(id["go"]))
	}
}
