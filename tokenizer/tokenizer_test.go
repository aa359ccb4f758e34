package tokenizer

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/edgellm/edgellm/internal/testfiles"
)

// fakeMeta is an in-memory metadata source for building small vocabularies.
type fakeMeta map[string]any

func (m fakeMeta) Has(k string) bool { _, ok := m[k]; return ok }

func get[T any](m fakeMeta, k string) (T, error) {
	var zero T
	v, ok := m[k]
	if !ok {
		return zero, fmt.Errorf("key %q: missing", k)
	}
	x, ok := v.(T)
	if !ok {
		return zero, fmt.Errorf("key %q: wrong type %T", k, v)
	}
	return x, nil
}

func (m fakeMeta) String(k string) (string, error)      { return get[string](m, k) }
func (m fakeMeta) Uint(k string) (uint64, error)        { return get[uint64](m, k) }
func (m fakeMeta) Bool(k string) (bool, error)          { return get[bool](m, k) }
func (m fakeMeta) Strings(k string) ([]string, error)   { return get[[]string](m, k) }
func (m fakeMeta) Float32s(k string) ([]float32, error) { return get[[]float32](m, k) }
func (m fakeMeta) Int32s(k string) ([]int32, error)     { return get[[]int32](m, k) }

// concat joins the pieces of ids: what a stream of generated tokens prints.
func concat(tok *Tokenizer, ids []int32) string {
	var sb strings.Builder
	for _, id := range ids {
		sb.Write(tok.Piece(id))
	}
	return sb.String()
}

// roundTripTexts exercise unicode, digits, whitespace runs and code.
var roundTripTexts = []string{
	"Hello world",
	" leading space and trailing space ",
	"multiple   spaces\t\ttabs\n\n\nnewlines\r\n",
	"digits 1 12 123 1234 12345 1234567890 3.14159 -42 1e10",
	"ünïcødé façade naïve Ärger Ελληνικά русский текст",
	"日本語のテキスト 中文文本 한국어 텍스트",
	"emoji 🙂🚀👍🏽 and symbols ©®™ ∑∫√ ← →",
	"func main() {\n\tfmt.Println(\"hi\") // comment\n\tx := a[i] + b*c - d/e\n}\n",
	"def f(x):\n    return {'a': x ** 2, \"b\": [1, 2, 3]}\n",
	"<html><body class=\"x\">&amp; &lt;tag&gt;</body></html>",
	"I'm you're we've they'll she'd it's DON'T",
	"  \n \t \u00a0 \u3000 mixed whitespace\u2003end",
	"",
	" ",
	"a",
}

func TestVocabsWithoutVectors(t *testing.T) {
	for _, tc := range []struct {
		name, model, pre string
	}{
		{"starcoder", "gpt2", "starcoder"},
		{"falcon", "gpt2", "falcon"},
		{"mpt", "gpt2", "mpt"},
		{"refact", "gpt2", "refact"},
		{"deepseek-coder", "gpt2", "deepseek-coder"},
		{"deepseek-llm", "gpt2", "deepseek-llm"},
		{"gpt-neox", "gpt2", "default"}, // no tokenizer.ggml.pre: llama.cpp's default
		{"gpt-2", "gpt2", "gpt-2"},
		{"baichuan", "llama", ""},
		{"llama-spm", "llama", ""},
		{"phi-3", "llama", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := loadVocab(t, tc.name)
			if tok.Model() != tc.model || tok.Pre() != tc.pre {
				t.Fatalf("model %q pre %q, want %q %q", tok.Model(), tok.Pre(), tc.model, tc.pre)
			}
			for _, s := range roundTripTexts {
				ids, err := tok.Encode(s, false, false)
				if err != nil {
					t.Fatalf("Encode(%q): %v", s, err)
				}
				for _, id := range ids {
					if id < 0 || int(id) >= tok.VocabSize() {
						t.Fatalf("Encode(%q): id %d out of range", s, id)
					}
				}
				want := s
				if tok.Model() == "llama" && s != "" {
					want = " " + s // the space prefix SentencePiece adds
				}
				if got := concat(tok, ids); got != want {
					t.Errorf("pieces of Encode(%q) = %q", s, got)
				}
				if tok.Model() == "llama" {
					if got := tok.Decode(ids); got != s {
						t.Errorf("Decode(Encode(%q)) = %q", s, got)
					}
				}
			}
		})
	}
}

// TestDigitSplitting checks the digit rules of the pre-tokenizers on real
// vocabularies: starcoder, refact and deepseek-coder isolate each digit.
func TestDigitSplitting(t *testing.T) {
	for _, name := range []string{"starcoder", "refact", "deepseek-coder"} {
		tok := loadVocab(t, name)
		ids, err := tok.Encode("x 1234567", false, false)
		if err != nil {
			t.Fatal(err)
		}
		var digits []string
		for _, id := range ids {
			p := string(tok.Piece(id))
			if strings.ContainsAny(p, "0123456789") {
				digits = append(digits, p)
			}
		}
		if strings.Join(digits, "|") != "1|2|3|4|5|6|7" {
			t.Errorf("%s: digit tokens %q, want one per digit", name, digits)
		}
	}
}

// TestPreTokenizers checks the word splits of each regex group on inputs
// whose split follows from llama.cpp's regexes.
func TestPreTokenizers(t *testing.T) {
	for _, tc := range []struct {
		pre, text string
		want      []string
	}{
		{"gpt-2", "Hello world  foo", []string{"Hello", " world", " ", " foo"}},
		{"gpt-2", "I'm 42 years!!", []string{"I", "'m", " 42", " years", "!!"}},
		{"gpt-2", "a\nb", []string{"a", "\n", "b"}},
		{"gpt-2", "end   ", []string{"end", "   "}},
		{"llama-bpe", "12345678 abc", []string{"123", "456", "78", " abc"}},
		{"llama-bpe", "Hello  World\n\n  x", []string{"Hello", " ", " World", "\n\n", " ", " x"}},
		{"llama-bpe", "DON'T ok", []string{"DON", "'T", " ok"}},
		{"llama-bpe", "foo.bar()\n", []string{"foo", ".bar", "()\n"}},
		{"qwen2", "12345 ab", []string{"1", "2", "3", "4", "5", " ab"}},
		{"starcoder", "ab 123", []string{"ab", " ", "1", "2", "3"}},
		{"deepseek-coder", "ab 12", []string{"ab", " ", "1", "2"}},
		{"deepseek-llm", "ab 123 中文", []string{"ab", " ", "123", " ", "中文"}},
		{"falcon", "a+b=12345", []string{"a", "+", "b", "=", "123", "45"}},
		{"default", "x 12345", []string{"x", " ", "123", "45"}},
		{"bloom", "Hi, you.", []string{"Hi", ",", " you", "."}},
	} {
		got, err := preSplitter(t, tc.pre).split(tc.text)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("%s %q: got %q, want %q", tc.pre, tc.text, got, tc.want)
		}
	}
}

// TestAllPreTokenizersCompile builds every named pre-tokenizer and checks
// that splitting never loses or reorders text.
func TestAllPreTokenizersCompile(t *testing.T) {
	for name, spec := range preNames {
		sp, err := newSplitter(spec.exprs)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		for _, s := range roundTripTexts {
			words, err := sp.split(s)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if strings.Join(words, "") != s {
				t.Errorf("%s: split(%q) = %q loses text", name, s, words)
			}
		}
	}
	if _, err := lookupPre("no-such-pre"); err == nil || !strings.Contains(err.Error(), "no-such-pre") {
		t.Errorf("unknown pre-tokenizer: err = %v", err)
	}
}

func TestSpecialTokens(t *testing.T) {
	tok := loadVocab(t, "gpt-2")
	const eot = 50256 // <|endoftext|>
	if !tok.IsEOG(eot) || tok.IsEOG(0) {
		t.Errorf("IsEOG(%d) = %v", eot, tok.IsEOG(eot))
	}
	ids, err := tok.Encode("a<|endoftext|>b", false, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 3 || ids[1] != eot {
		t.Errorf("parseSpecial: %v", ids)
	}
	ids, err = tok.Encode("a<|endoftext|>b", false, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if id == eot {
			t.Errorf("special token matched with parseSpecial=false: %v", ids)
		}
	}
	if got := concat(tok, ids); got != "a<|endoftext|>b" {
		t.Errorf("round trip %q", got)
	}
	if len(tok.Piece(eot)) != 0 {
		t.Errorf("control token piece = %q, want empty", tok.Piece(eot))
	}

	// SentencePiece: BOS/EOS text is matched only with parseSpecial, and a
	// text fragment after a special token gets the space prefix again.
	spm := loadVocab(t, "llama-spm")
	ids, err = spm.Encode("Hi</s>there", true, true)
	if err != nil {
		t.Fatal(err)
	}
	if ids[0] != spm.BOS() || !contains(ids, spm.EOS()) {
		t.Errorf("SPM parseSpecial: %v", ids)
	}
	if got := concat(spm, ids); got != " Hi there" {
		t.Errorf("SPM pieces %q", got)
	}
	ids, _ = spm.Encode("Hi</s>there", false, false)
	if contains(ids, spm.EOS()) {
		t.Errorf("SPM </s> matched without parseSpecial: %v", ids)
	}
}

func contains(ids []int32, id int32) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// TestEOGByText builds a small vocabulary with chat tokens and checks the
// end-of-generation set llama.cpp derives from token texts.
func TestEOGByText(t *testing.T) {
	tokens := []string{"<unk>", "<s>", "</s>", "a", "b", "<|im_end|>", "<|eot_id|>", "<|im_start|>", "<|eom_id|>"}
	types := []int32{2, 3, 3, 1, 1, 3, 4, 3, 3}
	tok, err := fromMetadata(fakeMeta{
		keyModel: "llama", keyTokens: tokens, keyTokenType: types,
		keyScores: make([]float32, len(tokens)),
	})
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range []bool{false, false, true, false, false, true, true, false, true} {
		if tok.IsEOG(int32(id)) != want {
			t.Errorf("IsEOG(%d %q) = %v", id, tokens[id], !want)
		}
	}
	if tok.EOT() != 5 { // lowest id among the EOT texts
		t.Errorf("EOT = %d", tok.EOT())
	}
	if !tok.IsControl(6) { // llama.cpp forces EOG tokens to control
		t.Error("<|eot_id|> not control")
	}
}

func TestBadMetadata(t *testing.T) {
	tokens := []string{"a", "b", "ab"}
	base := func() fakeMeta {
		return fakeMeta{keyModel: "gpt2", keyTokens: tokens, keyMerges: []string{"a b"}}
	}
	for name, mod := range map[string]func(m fakeMeta){
		"no model":        func(m fakeMeta) { delete(m, keyModel) },
		"unknown model":   func(m fakeMeta) { m[keyModel] = "wordpiece" },
		"no tokens":       func(m fakeMeta) { delete(m, keyTokens) },
		"empty tokens":    func(m fakeMeta) { m[keyTokens] = []string{} },
		"no merges":       func(m fakeMeta) { delete(m, keyMerges) },
		"unknown pre":     func(m fakeMeta) { m[keyPre] = "whatever" },
		"short types":     func(m fakeMeta) { m[keyTokenType] = []int32{1} },
		"short scores":    func(m fakeMeta) { m[keyScores] = []float32{1, 2} },
		"bad bos type":    func(m fakeMeta) { m["tokenizer.ggml.bos_token_id"] = "x" },
		"bad add_bos":     func(m fakeMeta) { m[keyAddBOS] = uint64(1) },
		"none, no arch":   func(m fakeMeta) { m[keyModel] = "none" },
		"none, no size":   func(m fakeMeta) { m[keyModel] = "none"; m[keyArch] = "llama" },
		"none, zero size": func(m fakeMeta) { m[keyModel] = "none"; m[keyArch] = "llama"; m["llama.vocab_size"] = uint64(0) },
	} {
		m := base()
		mod(m)
		if _, err := fromMetadata(m); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	tok, err := fromMetadata(base())
	if err != nil {
		t.Fatal(err)
	}
	ids, err := tok.Encode("abab ba", false, false)
	if err != nil {
		t.Fatal(err)
	}
	// "abab" -> ab ab; " ba": the space has no token and is dropped as llama.cpp does
	if fmt.Sprint(ids) != "[2 2 1 0]" {
		t.Errorf("tiny BPE: %v", ids)
	}
	// out-of-range special ids are ignored
	m := base()
	m["tokenizer.ggml.eos_token_id"] = uint64(99)
	if tok, err = fromMetadata(m); err != nil || tok.EOS() != none {
		t.Errorf("eos out of range: %v %d", err, tok.EOS())
	}
	if _, err := FromGGUF(nil); err == nil {
		t.Error("nil file: no error")
	}
}

func TestNoVocabulary(t *testing.T) {
	tok := loadGGUF(t, testfiles.Path(t, "models/tiny-random/tiny-llama-tq2_0.gguf"))
	if tok.Model() != "none" || tok.VocabSize() != 1024 || tok.BOS() != -1 || tok.AddBOS() {
		t.Fatalf("model %q vocab %d bos %d", tok.Model(), tok.VocabSize(), tok.BOS())
	}
	ids, err := tok.Encode(" 5 42\n79\t1023 ", true, true)
	if err != nil || fmt.Sprint(ids) != "[5 42 79 1023]" {
		t.Errorf("Encode ids: %v %v", ids, err)
	}
	for _, bad := range []string{"hello", "1024", "-1", "5 x", "99999999999"} {
		if _, err := tok.Encode(bad, false, false); err == nil || !strings.Contains(err.Error(), "no vocabulary") {
			t.Errorf("Encode(%q): err = %v", bad, err)
		}
	}
	if got := concat(tok, []int32{5, 42}); got != " 5 42" {
		t.Errorf("pieces %q", got)
	}
	if tok.Piece(1024) != nil || tok.Piece(-1) != nil || tok.IsEOG(0) {
		t.Error("out-of-range piece or EOG")
	}
}

// TestStreamDecoder feeds pieces that split UTF-8 characters (SentencePiece
// byte fallback) and checks every chunk is valid UTF-8 and nothing is lost.
func TestStreamDecoder(t *testing.T) {
	tok := loadVocab(t, "llama-spm")
	s := "naïve 🙂 日本語 🚀🚀 end"
	ids, err := tok.Encode(s, false, false)
	if err != nil {
		t.Fatal(err)
	}
	d := tok.NewDecoder()
	var sb strings.Builder
	held := false
	for _, id := range ids {
		chunk := d.Add(id)
		if !utf8.ValidString(chunk) {
			t.Fatalf("chunk %q is not valid UTF-8", chunk)
		}
		if chunk == "" && len(tok.Piece(id)) > 0 {
			held = true
		}
		sb.WriteString(chunk)
	}
	sb.WriteString(d.Flush())
	if sb.String() != " "+s {
		t.Errorf("stream %q", sb.String())
	}
	if !held {
		t.Error("expected some byte tokens to be held back")
	}
}

// TestCompletePrefix checks the cut point against a plain definition on
// random byte strings: the longest prefix such that the rest is a proper
// prefix of a valid UTF-8 character (or empty).
func TestCompletePrefix(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	alphabet := []byte{'a', 0x80, 0xBF, 0xC3, 0xA9, 0xE6, 0x97, 0xA5, 0xF0, 0x9F, 0x99, 0x82, 0xFF}
	for iter := 0; iter < 20000; iter++ {
		b := make([]byte, rng.Intn(8))
		for i := range b {
			b[i] = alphabet[rng.Intn(len(alphabet))]
		}
		want := len(b)
		for k := 1; k <= 3 && k <= len(b); k++ {
			tail := b[len(b)-k:]
			if tail[0] >= 0xC0 && tail[0] < 0xF8 && utf8Len(tail[0]) > k && validPrefix(tail) {
				want = len(b) - k
				break
			}
		}
		if got := completePrefix(b); got != want {
			t.Fatalf("completePrefix(% x) = %d, want %d", b, got, want)
		}
	}
}

// validPrefix reports whether b can be completed into a valid character.
func validPrefix(b []byte) bool {
	for _, c := range []byte{0x80, 0x90, 0xA0, 0xBF} {
		full := append(append([]byte{}, b...), c, c, c)[:utf8Len(b[0])]
		if utf8.Valid(full) {
			return true
		}
	}
	return false
}

func TestCleanSpaces(t *testing.T) {
	for in, want := range map[string]string{
		"Hello , world ! I 'm here ' quoted ' ok":      "Hello, world! I'm here'quoted'ok",
		"they 're and we 've , it 's , I 'd , you 'll": "they're and we've, it's, I 'd, you 'll",
		" .":  ".",
		"":    "",
		"a":   "a",
		" ' ": "'",
	} {
		if got := string(cleanSpaces([]byte(in))); got != want {
			t.Errorf("cleanSpaces(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDecode(t *testing.T) {
	gpt2 := loadVocab(t, "gpt-2")
	ids, err := gpt2.Encode("Hello , world", false, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := gpt2.Decode(ids); got != "Hello, world" { // gpt-2 cleans spaces
		t.Errorf("gpt-2 Decode = %q", got)
	}
	dsl := loadVocab(t, "deepseek-llm") // deepseek-llm keeps them
	ids, err = dsl.Encode("Hello , world", false, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := dsl.Decode(ids); got != "Hello , world" {
		t.Errorf("deepseek-llm Decode = %q", got)
	}
	spm := loadVocab(t, "llama-spm")
	ids, err = spm.Encode("Hi there", true, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := spm.Decode(ids); got != " Hi there" {
		t.Errorf("SPM Decode with BOS = %q", got)
	}
	if got := spm.Decode(ids[1:]); got != "Hi there" {
		t.Errorf("SPM Decode without BOS = %q", got)
	}
}

// TestIgnoreMerges: llama3-style pre-tokenizers take a word that is a whole
// token as is, where plain BPE can only reach what its merges build.
func TestIgnoreMerges(t *testing.T) {
	meta := func(pre string) fakeMeta {
		return fakeMeta{
			keyModel: "gpt2", keyPre: pre,
			keyTokens:                     []string{"a", "b", "c", "abc", "bc", "<|begin_of_text|>"},
			keyTokenType:                  []int32{1, 1, 1, 1, 1, 3},
			keyMerges:                     []string{"b c"},
			"tokenizer.ggml.bos_token_id": uint64(5),
		}
	}
	for pre, want := range map[string]string{"gpt-2": "[0 4]", "llama-bpe": "[5 3]"} {
		tok, err := fromMetadata(meta(pre))
		if err != nil {
			t.Fatal(err)
		}
		ids, err := tok.Encode("abc", true, false)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(ids) != want {
			t.Errorf("%s: %v, want %s", pre, ids, want)
		}
	}
	// llama3 adds BOS by default; a vocabulary without one is an error, not a panic
	m := meta("llama-bpe")
	delete(m, "tokenizer.ggml.bos_token_id")
	tok, err := fromMetadata(m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tok.Encode("abc", true, false); err == nil {
		t.Error("BOS required but missing: no error")
	}
}

// TestConcurrentEncode: one Tokenizer serves many goroutines (run with -race).
func TestConcurrentEncode(t *testing.T) {
	tok := loadVocab(t, "gpt-2")
	want, err := tok.Encode(roundTripTexts[7], false, false)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 4)
	for g := 0; g < 4; g++ {
		go func() {
			for i := 0; i < 20; i++ {
				got, err := tok.Encode(roundTripTexts[7], false, false)
				if err == nil && !equalIDs(got, want) {
					err = fmt.Errorf("got %v, want %v", got, want)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for g := 0; g < 4; g++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
