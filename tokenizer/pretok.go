package tokenizer

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"unicode"

	"github.com/dlclark/regexp2/v2"
)

// The pre-tokenizer regexes of llama.cpp (llm_tokenizer_bpe), grouped as it
// groups the tokenizer.ggml.pre names. Each list is applied in order; every
// regex splits each piece left by the previous ones into its matches and
// the text between them (nothing is dropped).
const (
	reGPT2 = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`
	// (?i:'s|...) rewritten with explicit classes, as llama.cpp does.
	reContractions = `(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])`
	reLlama3       = reContractions + `|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	reQwen2        = reContractions + `|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	reBloom        = ` ?[^(\s|.,!?…。，、।۔،)]+`
	reCJK          = `[一-龥ࠀ-一가-퟿]+`
	reTekken       = `[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	reGPT4o        = `[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+` + reContractions + `?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*` + reContractions + `?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	reASCIIPunct   = "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~]"
)

// preGroups are the pre-tokenizers by llama.cpp's pre-type.
var preGroups = map[string][]string{
	"default":        {`[\p{P}\$\+<=>\^~\|]+`, reGPT2, `\p{N}+`, `[0-9][0-9][0-9]`},
	"llama3":         {reLlama3},
	"deepseek-llm":   {`[\r\n]`, `\s?[` + runeClass(deepseekLetters) + `]+`, `\s?[!-/:-~！-／：-～‘-‟　-。]+`, `\s+$`, reCJK, `\p{N}+`},
	"deepseek-v3":    {`\p{N}{1,3}`, `[一-龥぀-ゟ゠-ヿ]+`, reASCIIPunct + `[A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`},
	"deepseek-coder": {`[\r\n]`, `\s?\p{L}+`, `\s?\p{P}+`, reCJK, `\p{N}`},
	"falcon":         {`[\p{P}\$\+<=>\^~\|` + "`" + `]+`, reGPT2, `[0-9][0-9][0-9]`},
	"starcoder":      {`\p{N}`, reGPT2},
	"gpt2":           {reGPT2},
	"qwen2":          {reQwen2},
	"bloom":          {reBloom},
	"viking":         {reBloom, `\p{N}`},
	"tekken":         {reTekken},
	"chameleon":      {`<sentinel:[0-9]+>`, `(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z`, `([\t\n]|    |  )`, `\p{N}`, `[\p{P}!-/:-@\[-` + "`" + `{-~]`, reGPT2},
	"gpt4o":          {reGPT4o},
	"bailingmoe":     {`'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+`},
	"seed-coder":     {reContractions + `|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+`},
}

// deepseekLetters are the ranges of DeepSeek LLM's letter class (cased
// letters), as code points: written as text, some of them would be changed
// by Unicode normalization on the way through editors.
var deepseekLetters = [][2]rune{
	{'A', 'Z'}, {'a', 'z'}, {0xB5, 0xB5}, {0xC0, 0xD6}, {0xD8, 0xF6}, {0xF8, 0x1BA}, {0x1BC, 0x1BF},
	{0x1C4, 0x293}, {0x295, 0x2AF}, {0x370, 0x373}, {0x376, 0x377}, {0x37B, 0x37D}, {0x37F, 0x37F},
	{0x386, 0x386}, {0x388, 0x38A}, {0x38C, 0x38C}, {0x38E, 0x3A1}, {0x3A3, 0x3F5}, {0x3F7, 0x481},
	{0x48A, 0x52F}, {0x531, 0x556}, {0x10A0, 0x10C5}, {0x13A0, 0x13F5}, {0x13F8, 0x13FD},
	{0x1C90, 0x1CBA}, {0x1CBD, 0x1CBF}, {0x1D00, 0x1D2B}, {0x1D6B, 0x1D77}, {0x1D79, 0x1D9A},
	{0x1E00, 0x1F15}, {0x1F18, 0x1F1D}, {0x1F20, 0x1F45}, {0x1F48, 0x1F4D}, {0x1F50, 0x1F57},
	{0x1F59, 0x1F59}, {0x1F5B, 0x1F5B}, {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4},
	{0x1FB6, 0x1FBC}, {0x1FBE, 0x1FBE}, {0x1FC2, 0x1FC4}, {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3},
	{0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC}, {0x2102, 0x2102},
	{0x2107, 0x2107}, {0x210A, 0x2113}, {0x2115, 0x2115}, {0x2119, 0x211D}, {0x2124, 0x2124},
	{0x2126, 0x2126}, {0x2128, 0x2128}, {0x212A, 0x212D}, {0x212F, 0x2134}, {0x2139, 0x2139},
	{0x213C, 0x213F}, {0x2145, 0x2149}, {0x214E, 0x214E}, {0x2183, 0x2184}, {0x2C00, 0x2C7B},
	{0x2C7E, 0x2CE4}, {0x2CEB, 0x2CEE}, {0x2CF2, 0x2CF3}, {0xA640, 0xA66D}, {0xA680, 0xA69B},
	{0xA722, 0xA76F}, {0xA771, 0xA787}, {0xA78B, 0xA78E}, {0xAB70, 0xABBF}, {0xFB00, 0xFB06},
	{0xFB13, 0xFB17}, {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A}, {0x10400, 0x1044F}, {0x104B0, 0x104D3},
	{0x104D8, 0x104FB}, {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2}, {0x118A0, 0x118DF}, {0x1E900, 0x1E943},
}

// runeClass writes ranges as the inside of a regex character class.
func runeClass(ranges [][2]rune) string {
	var sb strings.Builder
	for _, r := range ranges {
		sb.WriteRune(r[0])
		if r[1] != r[0] {
			sb.WriteByte('-')
			sb.WriteRune(r[1])
		}
	}
	return sb.String()
}

// preSpec is what a tokenizer.ggml.pre name selects.
type preSpec struct {
	group        string
	exprs        []string
	ignoreMerges bool // a word that is a whole token is taken as is
	addBOS       bool // default for tokenizer.ggml.add_bos_token
	keepSpaces   bool // llama.cpp's clean_spaces = false
	noBOS        bool // the vocabulary has no BOS token
}

// preNames maps tokenizer.ggml.pre names to their spec, following
// llama.cpp's llama_vocab::impl::load.
var preNames = map[string]preSpec{}

func init() {
	add := func(s preSpec, names ...string) {
		s.exprs = preGroups[s.group]
		if s.exprs == nil {
			panic("tokenizer: no regexes for pre-tokenizer group " + s.group)
		}
		for _, n := range names {
			preNames[n] = s
		}
	}
	add(preSpec{group: "default"}, "default")
	add(preSpec{group: "llama3", ignoreMerges: true, addBOS: true},
		"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2")
	add(preSpec{group: "llama3"}, "dbrx", "smaug-bpe")
	add(preSpec{group: "llama3", noBOS: true}, "glm4", "chatglm-bpe")
	add(preSpec{group: "deepseek-llm", keepSpaces: true}, "deepseek-llm")
	add(preSpec{group: "deepseek-coder", keepSpaces: true}, "deepseek-coder")
	add(preSpec{group: "deepseek-v3", keepSpaces: true}, "deepseek-v3", "hunyuan-dense")
	add(preSpec{group: "falcon"}, "falcon")
	add(preSpec{group: "starcoder"}, "starcoder", "refact", "codeshell", "exaone", "minerva-7b")
	add(preSpec{group: "starcoder", keepSpaces: true}, "command-r", "smollm")
	add(preSpec{group: "gpt2"}, "gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de",
		"a.x-4.0", "mellum", "jina-v1-en", "jina-v2-code", "roberta-bpe", "mpt", "olmo", "jais", "exaone4")
	add(preSpec{group: "gpt2", keepSpaces: true}, "trillion", "granite-docling")
	add(preSpec{group: "qwen2", keepSpaces: true}, "qwen2", "deepseek-r1-qwen", "kormo", "hunyuan", "grok-2")
	add(preSpec{group: "qwen2"}, "stablelm2", "megrez")
	add(preSpec{group: "bloom", keepSpaces: true}, "poro-chat")
	add(preSpec{group: "bloom"}, "bloom", "gpt3-finnish")
	add(preSpec{group: "viking", keepSpaces: true}, "viking")
	add(preSpec{group: "tekken", keepSpaces: true, ignoreMerges: true, addBOS: true}, "tekken")
	add(preSpec{group: "chameleon", keepSpaces: true, addBOS: true}, "chameleon")
	add(preSpec{group: "gpt4o", keepSpaces: true}, "gpt-4o", "llama4", "minimax-m2")
	add(preSpec{group: "bailingmoe", keepSpaces: true}, "bailingmoe", "bailingmoe2", "llada-moe")
	add(preSpec{group: "seed-coder", keepSpaces: true}, "seed-coder")
}

func lookupPre(name string) (preSpec, error) {
	s, ok := preNames[name]
	if !ok {
		return preSpec{}, fmt.Errorf("tokenizer: unknown pre-tokenizer %q (tokenizer.ggml.pre)", name)
	}
	return s, nil
}

// splitter applies a pre-tokenizer's regexes.
type splitter struct {
	res []*regexp2.Regexp
}

func newSplitter(exprs []string) (*splitter, error) {
	s := &splitter{}
	for _, e := range exprs {
		// .NET's $ also matches before a final newline; llama.cpp's
		// ECMAScript $ only at the end.
		if strings.HasSuffix(e, "$") && !strings.HasSuffix(e, `\$`) {
			e = e[:len(e)-1] + `\z`
		}
		re, err := regexp2.Compile(e, regexp2.None)
		if err != nil {
			return nil, fmt.Errorf("regex %q: %w", e, err)
		}
		s.res = append(s.res, re)
	}
	return s, nil
}

// split cuts text into pre-tokenizer words, as llama.cpp's
// unicode_regex_split does: each regex runs on each piece separately (so
// look-ahead and $ stop at the piece's end), and non-ASCII whitespace is
// matched as if it were "\v", as llama.cpp's fallback does. Invalid UTF-8
// bytes become U+FFFD.
func (s *splitter) split(text string) ([]string, error) {
	var words []string
	err := s.eachWord(text, func(w string) { words = append(words, w) })
	return words, err
}

// eachWord calls fn with each word of split(text) in order, without
// holding them all: its memory is two runes and at most two int32 piece
// lengths a character of text, whatever the number of words.
func (s *splitter) eachWord(text string, fn func(word string)) error {
	if len(text) > math.MaxInt32 {
		return fmt.Errorf("tokenizer: text of %d bytes is too long", len(text))
	}
	cpts := []rune(text)
	match := make([]rune, len(cpts))
	for i, r := range cpts {
		if r > 0x7F && unicode.IsSpace(r) {
			r = '\v'
		}
		match[i] = r
	}
	lens := []int32{int32(len(cpts))}
	var next []int32
	for _, re := range s.res {
		next = next[:0]
		start := 0
		for _, n32 := range lens {
			n := int(n32)
			seg := match[start : start+n]
			pos := 0
			// Matches are streamed (no slice of them); an empty match
			// cuts nothing.
			err := re.FindRunesMatches(seg, 0, func(m regexp2.MatchView) bool {
				i, l, _ := m.GroupRange(0)
				if i > pos {
					next = append(next, int32(i-pos))
				}
				if l > 0 {
					next = append(next, int32(l))
				}
				pos = i + l
				return true
			})
			if err != nil {
				return fmt.Errorf("tokenizer: pre-tokenizer: %w", err)
			}
			if pos < n {
				next = append(next, int32(n-pos))
			}
			start += n
		}
		lens, next = next, lens
	}
	match = nil
	start := 0
	for _, n := range lens {
		fn(string(cpts[start : start+int(n)]))
		start += int(n)
	}
	return nil
}

// PreTokenizers lists the tokenizer.ggml.pre names this package
// implements, sorted.
func PreTokenizers() []string {
	names := make([]string, 0, len(preNames))
	for n := range preNames {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// PreClass names what a pre-tokenizer name does to Encode: two names of
// one class split every text alike and add BOS alike by default (they may
// still decode differently). A converter identifying a vocabulary's
// pre-tokenizer needs to try one name per class. "" for an unknown name.
func PreClass(name string) string {
	s, ok := preNames[name]
	if !ok {
		return ""
	}
	return fmt.Sprintf("%s ignore_merges=%t add_bos=%t no_bos=%t", s.group, s.ignoreMerges, s.addBOS, s.noBOS)
}
