package tokenizer

import (
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/internal/testfiles"
)

// The differential test: our tokenizer against llama.cpp itself on generated
// texts, for every vocabulary of testdata/vocab and ../shared/vocab. The
// reference is docs/peer/llamacpp_tokenize (llama.cpp 57b50e1f6's
// llama_tokenize and token attributes). Its answers for a fixed set of texts
// are committed in testdata/tokenizer, so CI compares without llama.cpp;
// where the program is built, fresh random texts go through it as well.

var updateLlamaCpp = flag.Bool("update-llamacpp", false,
	"rewrite testdata/tokenizer from llama.cpp's llamacpp_tokenize (docs/peer/README.md)")

// diffVocabs are the vocabularies compared (vocab/ggml-vocab-NAME.gguf).
var diffVocabs = []string{"baichuan", "deepseek-coder", "deepseek-llm", "falcon", "gpt-2", "gpt-neox",
	"llama-spm", "mpt", "phi-3", "refact", "starcoder"}

// diffPres are pre-tokenizers that no vocabulary above uses, one name per
// regex group (and llama3's without ignore_merges: dbrx), compared on GPT-2's
// vocabulary with tokenizer.ggml.pre changed.
var diffPres = []string{"llama-bpe", "dbrx", "qwen2", "deepseek-v3", "bloom", "viking", "tekken", "chameleon",
	"gpt-4o", "bailingmoe", "seed-coder", "default"}

const (
	diffTexts   = "tokenizer/llamacpp-texts.inp"
	diffSeed    = 16  // the seed of the committed random texts
	diffN       = 300 // committed random texts
	diffPreN    = 100 // random texts a pre-tokenizer case takes
	freshN      = 200
	inpSep      = "\n__ggml_vocab_test__\n"
	maxReported = 5 // differing texts printed per vocabulary
)

// fixedTexts lead the committed texts: the cases where llama.cpp's rules are
// easy to miss.
var fixedTexts = []string{
	// \p{S} leaves out "~" where a regex runs on collapsed text
	"é~é", " ~é", "~é", "x ~ y", "é ~", "~\n", "$é", "é$ é", "a~",
	// letters and symbols Unicode 15.1 added
	"a\U0002EBF0b", " \U0002EE5D", "1\U0002EBF0", "\u2FFC~\u31EF",
	// special-token texts glued to text
	"a</s>b", "x<|endoftext|>y", " <fim_prefix>def", "<s><unk></s>",
	// invalid UTF-8
	"a\xffb", "\xe6\x97 x", "\xed\xa0\x80é",
}

// diffCase is one comparison: a vocabulary, or GPT-2's under another
// pre-tokenizer.
type diffCase struct{ vocab, pre string }

func diffCases() []diffCase {
	var cs []diffCase
	for _, v := range diffVocabs {
		cs = append(cs, diffCase{vocab: v})
	}
	for _, p := range diffPres {
		cs = append(cs, diffCase{vocab: "gpt-2", pre: p})
	}
	return cs
}

func (c diffCase) name() string {
	if c.pre == "" {
		return c.vocab
	}
	return c.vocab + ".pre-" + c.pre
}

// file is the committed llama.cpp answer for the case.
func (c diffCase) file() string { return "tokenizer/ggml-vocab-" + c.name() + ".llamacpp" }

// texts are the committed texts the case takes.
func (c diffCase) texts(all []string) []string {
	if c.pre == "" {
		return all
	}
	return all[:len(fixedTexts)+diffPreN]
}

// load builds our tokenizer for the case and returns a file llama.cpp can
// read.
func (c diffCase) load(t *testing.T) (*Tokenizer, string) {
	t.Helper()
	path := testfiles.Path(t, "vocab/ggml-vocab-"+c.vocab+".gguf")
	if c.pre == "" {
		return loadVocab(t, c.vocab), path
	}
	data := withPre(t, c.vocab, c.pre)
	f, err := gguf.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "vocab.gguf")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return tok, path
}

// Pools of the generated texts. Letters come from many scripts, including
// those Unicode 15.0 (Go's tables), 15.1 (llama.cpp's), 16.0 and 17.0 added.
var (
	letterRanges = [][2]rune{
		{'a', 'z'}, {'A', 'Z'}, {0xC0, 0xFF}, {0x100, 0x17F}, {0x391, 0x3A9}, {0x3B1, 0x3C9}, {0x410, 0x44F},
		{0x561, 0x586}, {0x5D0, 0x5EA}, {0x627, 0x64A}, {0x915, 0x939}, {0xE01, 0xE2E}, {0x10D0, 0x10FA},
		{0x1200, 0x1248}, {0x13A0, 0x13F4}, {0x3041, 0x3096}, {0x30A1, 0x30FA}, {0x4E00, 0x9FFF},
		{0xAC00, 0xD7A3}, {0x1D400, 0x1D433}, // mathematical letters
	}
	// newLetterRanges are letters of scripts that Unicode 15.0 to 17.0 added.
	newLetterRanges = [][2]rune{
		{0x11F04, 0x11F10},                                                             // Kawi (15.0)
		{0x2EBF0, 0x2EE5D},                                                             // CJK Extension I (15.1)
		{0x10D4A, 0x10D65}, {0x105C0, 0x105F3}, {0x16D43, 0x16D6A}, {0x1E5D0, 0x1E5ED}, // Garay, Todhri, Kirat Rai, Ol Onal (16.0)
		{0x10940, 0x10959}, {0x11DB0, 0x11DDB}, {0x16EA0, 0x16EB8}, {0x1E6C0, 0x1E6DE}, // Sidetic, Tolong Siki, Beria Erfe, Tai Yo (17.0)
	}
	allLetterRanges = slices.Concat(letterRanges, newLetterRanges)
	markRanges      = [][2]rune{{0x300, 0x36F}, {0x64B, 0x652}, {0x93E, 0x94C}, {0x11F00, 0x11F03}}
	digitRanges     = [][2]rune{{'0', '9'}, {0x660, 0x669}, {0x966, 0x96F}, {0xFF10, 0xFF19}, {0x2160, 0x216F},
		{0x2460, 0x2473}, {0xB2, 0xB3}, {0x116D0, 0x116E3}} // Myanmar Extended-C digits (16.0)
	punct = []string{"!", "\"", "#", "$", "%", "&", "'", "(", ")", "*", "+", ",", "-", ".", "/", ":", ";", "<",
		"=", ">", "?", "@", "[", "\\", "]", "^", "_", "`", "{", "|", "}", "~", "…", "。", "，", "、", "！", "？",
		"「", "」", "—", "–", "‘", "’", "“", "”", "«", "»", "¿", "¡", "·", "•", "€", "£", "©", "°", "±", "×",
		"∑", "∞", "≤", "→", "★", "♪", "\u2FFC", "\u31EF", "~~", "...", "->", "=>", "::", "'s", "'S", "'ll",
		"'LL", "'re", "'ve", "'m", "'d", "'t", "'x"}
	spaces = []string{" ", " ", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\r", " \n", "\n ", "\u00A0",
		"\u3000", "\u2009", "\u200B", "\u0085", "\v", "\f", "\u2028", "    "}
	invalidUTF8 = []string{"\xff", "\xe6\x97", "\xc3", "\x80", "\xf0\x9f\x98", "\xed\xa0\x80", "\xc0\xaf"}
	emoji       = []string{"😀", "👍🏽", "👨‍👩‍👧", "🇫🇷", "❤️", "🔥", "✨", "🫠", "\U0001FAE8"}
	words       = []string{"Hello", "world", "the", "camelCase", "HTTPServer", "don't", "I'M", "3.14", "1234567",
		"e.g.", "http://x.y/z?a=1", "func main() {\n\treturn x\n}", "    indented", "Ἀθῆναι", "naïve",
		"Straße", "東京タワー", "서울", "привет", "مرحبا", "नमस्ते", "ﬁne", "ǅ", "\U000E0001", "\uE000",
		"\u0378", "\U0010FFFD"}
	// specialTexts are the texts of special tokens of the vocabularies
	// compared and of llama.cpp's lists of texts it recognises.
	specialTexts = []string{"<s>", "</s>", "<unk>", "<|endoftext|>", "<|padding|>", "<|im_start|>", "<|im_end|>",
		"<|eot_id|>", "<eos>", "[EOT]", "<EOT>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>",
		"<|placeholder1|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>", "<|fim_prefix|>",
		"<filename>", "<gh_stars>", "<issue_start>", "<jupyter_start>", "<empty_output>", "<commit_before>",
		"<reponame>", "<repo_name>", "<file_sep>", "<EMAIL>", "<pr>", "[PAD32022]", "[PAD50277]", "[PAD100015]",
		">>INTRODUCTION<<", ">>SUFFIX<<", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜fim▁begin｜>",
		"<｜fim▁hole｜>", "<|Assistant|>", "<mask>", "<|im_end|", "<s"}
)

func pickRange(r *rand.Rand, rs [][2]rune) rune {
	x := rs[r.IntN(len(rs))]
	return x[0] + rune(r.IntN(int(x[1]-x[0]+1)))
}

// genText is one random text: a run of pieces of the pools above.
func genText(r *rand.Rand) string {
	var sb strings.Builder
	for range 1 + r.IntN(14) {
		switch k := r.IntN(100); {
		case k < 8: // letters of a new script after a space, letter or digit
			sb.WriteString([]string{" ", "a", "Z", "é", "7", "'", "\n"}[r.IntN(7)])
			for range 1 + r.IntN(3) {
				sb.WriteRune(pickRange(r, newLetterRanges))
			}
		case k < 30: // a word of one script, sometimes with marks
			rs := allLetterRanges[r.IntN(len(allLetterRanges))]
			for range 1 + r.IntN(6) {
				sb.WriteRune(rs[0] + rune(r.IntN(int(rs[1]-rs[0]+1))))
				if r.IntN(8) == 0 {
					sb.WriteRune(pickRange(r, markRanges))
				}
			}
		case k < 40:
			for range 1 + r.IntN(5) {
				sb.WriteRune(pickRange(r, digitRanges))
			}
		case k < 55:
			sb.WriteString(punct[r.IntN(len(punct))])
		case k < 75:
			sb.WriteString(spaces[r.IntN(len(spaces))])
		case k < 78:
			sb.WriteString(emoji[r.IntN(len(emoji))])
		case k < 80:
			sb.WriteString(invalidUTF8[r.IntN(len(invalidUTF8))])
		case k < 90:
			sb.WriteString(words[r.IntN(len(words))])
		default:
			sb.WriteString(specialTexts[r.IntN(len(specialTexts))])
		}
	}
	return sb.String()
}

func genTexts(seed uint64, n int) []string {
	r := rand.New(rand.NewPCG(seed, 0x746f6b3136))
	texts := make([]string, n)
	for i := range texts {
		texts[i] = genText(r)
	}
	return texts
}

// llamaCppRun is llamacpp_tokenize's answer for one vocabulary: each token's
// attributes (llama.h's bits) and the end-of-generation ids, and for each
// text the ids with special tokens parsed off and on.
type llamaCppRun struct {
	attrs map[int32]int // tokens whose attributes are not NORMAL alone
	eog   []int32
	ids   [][2][]int32
}

func parseIDs(s string) ([]int32, error) {
	var ids []int32
	for _, f := range strings.Fields(s) {
		v, err := strconv.ParseInt(f, 10, 32)
		if err != nil {
			return nil, err
		}
		ids = append(ids, int32(v))
	}
	return ids, nil
}

// parseLlamaCpp reads the --attrs output followed by the ids output.
func parseLlamaCpp(data string, nTexts int) (*llamaCppRun, error) {
	run := &llamaCppRun{attrs: map[int32]int{}}
	lines := strings.Split(strings.TrimSuffix(data, "\n"), "\n")
	i := 0
	for ; i < len(lines); i++ {
		f := strings.Fields(lines[i])
		if len(f) == 0 || (f[0] != "eog" && f[0] != "attr") {
			break
		}
		v, err := parseIDs(strings.Join(f[1:], " "))
		if err != nil || len(v) != map[string]int{"eog": 1, "attr": 2}[f[0]] {
			return nil, fmt.Errorf("line %d: %q", i+1, lines[i])
		}
		if f[0] == "eog" {
			run.eog = append(run.eog, v[0])
		} else {
			run.attrs[v[0]] = int(v[1])
		}
	}
	if len(lines)-i != 2*nTexts {
		return nil, fmt.Errorf("%d lines of ids for %d texts", len(lines)-i, nTexts)
	}
	for ; i < len(lines); i += 2 {
		var pair [2][]int32
		for j := range pair {
			ids, err := parseIDs(lines[i+j])
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", i+j+1, err)
			}
			pair[j] = ids
		}
		run.ids = append(run.ids, pair)
	}
	return run, nil
}

// runLlamaCpp runs llamacpp_tokenize on a vocabulary, returning its output in
// the committed files' format.
func runLlamaCpp(t *testing.T, tool, vocab string, texts []string) string {
	t.Helper()
	attrs, err := exec.Command(tool, vocab, "--attrs").Output()
	if err != nil {
		t.Fatalf("%s --attrs: %v", tool, err)
	}
	cmd := exec.Command(tool, vocab)
	cmd.Stdin = strings.NewReader(strings.Join(texts, inpSep) + inpSep)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	ids, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v: %s", tool, err, stderr.String())
	}
	return string(attrs) + string(ids)
}

// llamaUnused is llama.h's LLAMA_TOKEN_ATTR_UNUSED, left out of the
// comparison: llama.cpp sets it on control tokens named "unused", and it
// changes no tokenization.
const llamaUnused = 1 << 1

// llamaAttr is our attributes in llama.h's bits (the same bits up to BYTE,
// LSTRIP and RSTRIP elsewhere), without UNUSED.
func llamaAttr(a attr) int {
	v := int(a & (attrUnknown | attrNormal | attrControl | attrUserDefined | attrByte))
	if a&attrLStrip != 0 {
		v |= 1 << 7
	}
	if a&attrRStrip != 0 {
		v |= 1 << 8
	}
	return v
}

// compareLlamaCpp compares tok with llama.cpp's run and returns how many
// texts agree in both modes.
func compareLlamaCpp(t *testing.T, name string, tok *Tokenizer, run *llamaCppRun, texts []string) int {
	t.Helper()
	bad := 0
	for id := range tok.attrs {
		want := 1 << 2 // NORMAL
		if a, ok := run.attrs[int32(id)]; ok {
			want = a &^ llamaUnused
		}
		if got := llamaAttr(tok.attrs[id]); got != want {
			if bad++; bad <= maxReported {
				t.Errorf("%s: token %d %q: attributes %#x, llama.cpp %#x", name, id, tok.tokens[id], got, want)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d tokens' attributes differ", name, bad)
	}
	var eog []int32
	for id := range tok.attrs {
		if tok.IsEOG(int32(id)) {
			eog = append(eog, int32(id))
		}
	}
	if !slices.Equal(eog, run.eog) {
		t.Errorf("%s: end-of-generation ids %v, llama.cpp %v", name, eog, run.eog)
	}
	agree, reported := 0, 0
	for i, text := range texts {
		ok := true
		for j, special := range []bool{false, true} {
			got, err := tok.Encode(text, false, special)
			if err != nil {
				t.Errorf("%s: text %d %q: %v", name, i, text, err)
				ok = false
				continue
			}
			if want := run.ids[i][j]; !slices.Equal(got, want) {
				ok = false
				if reported < maxReported {
					reported++
					t.Errorf("%s: text %d %q (parse special %v):\n got %v\nwant %v", name, i, text, special, got, want)
				}
			}
		}
		if ok {
			agree++
		}
	}
	return agree
}

func readInp(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	texts := strings.Split(string(data), inpSep)
	if texts[len(texts)-1] != "" {
		t.Fatalf("%s does not end with the separator", path)
	}
	return texts[:len(texts)-1]
}

// writeFixture writes testdata/REL.gz as gzip -9n would (no name, no time).
func writeFixture(t *testing.T, rel, data string) {
	t.Helper()
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write([]byte(data))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(testfiles.Root(), "testdata", rel+".gz")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestLlamaCppCommitted compares with llama.cpp's committed answers for the
// committed texts (-update-llamacpp rewrites them, with llama.cpp built).
func TestLlamaCppCommitted(t *testing.T) {
	if *updateLlamaCpp {
		tool := testfiles.LlamaCppTool(t, "llamacpp_tokenize")
		texts := append(slices.Clone(fixedTexts), genTexts(diffSeed, diffN)...)
		writeFixture(t, diffTexts, strings.Join(texts, inpSep)+inpSep)
		for _, c := range diffCases() {
			_, path := c.load(t)
			writeFixture(t, c.file(), runLlamaCpp(t, tool, path, c.texts(texts)))
		}
	}
	all := readInp(t, testfiles.Path(t, diffTexts))
	for _, c := range diffCases() {
		t.Run(c.name(), func(t *testing.T) {
			data, err := os.ReadFile(testfiles.Path(t, c.file()))
			if err != nil {
				t.Fatal(err)
			}
			texts := c.texts(all)
			run, err := parseLlamaCpp(string(data), len(texts))
			if err != nil {
				t.Fatalf("%s: %v", c.file(), err)
			}
			tok, _ := c.load(t)
			agree := compareLlamaCpp(t, c.name(), tok, run, texts)
			t.Logf("%s: %d of %d texts tokenized as llama.cpp does (special tokens parsed and not)", c.name(), agree, len(texts))
		})
	}
}

// freshTexts are n random texts (EDGELLM_TOKENIZE_N of them if set), of
// seed EDGELLM_TOKENIZE_SEED if set, else of the time.
func freshTexts(t *testing.T, n int) ([]string, uint64) {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("EDGELLM_TOKENIZE_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("EDGELLM_TOKENIZE_SEED: %v", err)
		}
		seed = v
	}
	if s := os.Getenv("EDGELLM_TOKENIZE_N"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("EDGELLM_TOKENIZE_N: %q", s)
		}
		n = v
	}
	t.Logf("seed %d (EDGELLM_TOKENIZE_SEED repeats it)", seed)
	return genTexts(seed, n), seed
}

// TestLlamaCppFresh runs new random texts, and the texts of vocab/*.inp,
// through llama.cpp where it is built; EDGELLM_TOKENIZE_SEED repeats a run, EDGELLM_TOKENIZE_N sets how
// many texts.
func TestLlamaCppFresh(t *testing.T) {
	tool := testfiles.LlamaCppTool(t, "llamacpp_tokenize")
	texts, seed := freshTexts(t, freshN)
	// llama.cpp's own test texts, through every vocabulary
	for _, name := range []string{"gpt-2", "deepseek-llm", "llama-spm", "phi-3"} {
		inp, _ := readVectors(t, name)
		texts = append(texts, inp...)
	}
	for _, name := range diffVocabs {
		t.Run(name, func(t *testing.T) {
			vocab := testfiles.Path(t, "vocab/ggml-vocab-"+name+".gguf")
			tok := loadVocab(t, name)
			run, err := parseLlamaCpp(runLlamaCpp(t, tool, vocab, texts), len(texts))
			if err != nil {
				t.Fatal(err)
			}
			agree := compareLlamaCpp(t, name, tok, run, texts)
			t.Logf("%s: %d of %d texts tokenized as llama.cpp does (seed %d)", name, agree, len(texts), seed)
		})
	}
}

// withPre writes vocabulary NAME again with tokenizer.ggml.pre set to pre.
func withPre(t *testing.T, name, pre string) []byte {
	t.Helper()
	f, err := gguf.Open(testfiles.Path(t, "vocab/ggml-vocab-"+name+".gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := gguf.NewWriter()
	for _, kv := range f.KVs {
		w.Add(kv.Key, kv.Value)
	}
	w.AddString(keyPre, pre)
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestLlamaCppPreTokenizers runs every pre-tokenizer name we know over
// GPT-2's vocabulary, here and in llama.cpp, where it is built.
func TestLlamaCppPreTokenizers(t *testing.T) {
	tool := testfiles.LlamaCppTool(t, "llamacpp_tokenize")
	texts, _ := freshTexts(t, 100)
	texts = append(texts, fixedTexts...)
	var names []string
	for n := range preNames {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, pre := range names {
		t.Run(pre, func(t *testing.T) {
			tok, path := diffCase{vocab: "gpt-2", pre: pre}.load(t)
			run, err := parseLlamaCpp(runLlamaCpp(t, tool, path, texts), len(texts))
			if err != nil {
				t.Fatal(err)
			}
			agree := compareLlamaCpp(t, pre, tok, run, texts)
			t.Logf("%s: %d of %d texts as llama.cpp", pre, agree, len(texts))
		})
	}
}
