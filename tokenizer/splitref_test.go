package tokenizer

import (
	"math/rand/v2"
	"slices"
	"testing"
	"unicode"
	"unicode/utf8"
)

// llama.cpp does not run the llama3 (Llama 3, tokenizer.ggml.pre
// "llama-bpe") and qwen2 regexes through a regex engine: it walks the
// codepoints by hand (unicode_regex_split_custom_llama3 and _qwen2 in its
// unicode.cpp). refSplit is an independent Go transcription of that walk, as
// read there; the tests check that our regex-driven splitter cuts every text
// the same way. The two walks differ only in how many digits one word takes
// (llama3 up to 3, qwen2 1).

// refWhitespace is llama.cpp's unicode_set_whitespace.
var refWhitespace = map[rune]bool{
	0x09: true, 0x0A: true, 0x0B: true, 0x0C: true, 0x0D: true, 0x20: true, 0x85: true, 0xA0: true,
	0x1680: true, 0x2000: true, 0x2001: true, 0x2002: true, 0x2003: true, 0x2004: true, 0x2005: true,
	0x2006: true, 0x2007: true, 0x2008: true, 0x2009: true, 0x200A: true, 0x2028: true, 0x2029: true,
	0x202F: true, 0x205F: true, 0x3000: true,
}

// refFlags are the codepoint properties the walk reads; "some" is false only
// past the end of the text (llama.cpp's empty flags there; every codepoint,
// even an unassigned one, has some flag).
type refFlags struct{ letter, number, space, some bool }

func refSplit(text string, maxDigits int) []string {
	cpts := []rune(text)
	end := len(cpts)
	const outOfRange = -1
	cpt := func(p int) rune {
		if p < end {
			return cpts[p]
		}
		return outOfRange
	}
	flags := func(p int) refFlags {
		if p >= end {
			return refFlags{}
		}
		r := cpts[p]
		// letters and numbers of Unicode 15.1, llama.cpp's tables
		return refFlags{letter: isLetter(r), number: isNumber(r), space: refWhitespace[r], some: true}
	}
	var words []string
	prev := 0
	add := func(e int) int {
		n := e - prev
		if n > 0 {
			words = append(words, string(cpts[prev:e]))
		}
		prev = e
		return n
	}
	for pos := 0; pos < end; {
		c, f := cpt(pos), flags(pos)
		// (?i:'s|'t|'re|'ve|'m|'ll|'d)
		if c == '\'' && pos+1 < end {
			n := unicode.ToLower(cpt(pos + 1))
			if n == 's' || n == 't' || n == 'm' || n == 'd' {
				pos += add(pos + 2)
				continue
			}
			if pos+2 < end {
				nn := unicode.ToLower(cpt(pos + 2))
				if (n == 'r' && nn == 'e') || (n == 'v' && nn == 'e') || (n == 'l' && nn == 'l') {
					pos += add(pos + 3)
					continue
				}
			}
		}
		// [^\r\n\p{L}\p{N}]?\p{L}+
		if !(c == '\r' || c == '\n' || f.number) && (f.letter || flags(pos+1).letter) {
			pos++
			for flags(pos).letter {
				pos++
			}
			add(pos)
			continue
		}
		// \p{N}{1,maxDigits}
		if f.number {
			ini := pos
			for flags(pos).number {
				pos++
				if pos-ini >= maxDigits {
					add(pos)
					ini = pos
				}
			}
			add(pos)
			continue
		}
		// <space>?[^\s\p{L}\p{N}]+[\r\n]*
		f2 := f
		if c == ' ' {
			f2 = flags(pos + 1)
		}
		if !(f2.space || f2.letter || f2.number) && f.some {
			if c == ' ' {
				pos++
			}
			for !(f2.space || f2.letter || f2.number) && f2.some {
				pos++
				f2 = flags(pos)
			}
			for c2 := cpt(pos); c2 == '\r' || c2 == '\n'; c2 = cpt(pos) {
				pos++
			}
			add(pos)
			continue
		}
		spaces, lastNL := 0, 0
		for flags(pos + spaces).space {
			if c2 := cpt(pos + spaces); c2 == '\r' || c2 == '\n' {
				lastNL = pos + spaces + 1
			}
			spaces++
		}
		switch {
		case lastNL > 0: // \s*[\r\n]+
			pos = lastNL
			add(pos)
		case spaces > 1 && cpt(pos+spaces) != outOfRange: // \s+(?!\S)
			pos += spaces - 1
			add(pos)
		case spaces > 0: // \s+
			pos += spaces
			add(pos)
		default:
			pos++
			add(pos)
		}
	}
	return words
}

// splitTexts are the inputs both splitters must cut the same way, besides
// whatever the fuzzer finds.
var splitTexts = append([]string{
	"I've 12345 apples, don't I? 3.14159 I'LL", "'s'S'tt're 'Ve 'LL 'dd x'y",
	"a  b   c\t\td \n\n e\r\n f \u00a0 g\u3000h  ", "   ", " \n", "\n ", "x \n ", "trailing   ",
	"١٢٣٤ ⅠⅡⅢ ½¼ ²³ 𝟘𝟙𝟚", "über-cool résumé, naïve; ÄÖÜ", "日本語のテキスト、中文。한국어!",
	"tab\tand\u2028line\u2029sep\u0085nel", "emoji 🙂🚀👍🏽 ©®™ ∑∫√", "((x)) [[y]] {{z}}!!!\n\n\n?",
	" 'a' '", "'", "a'", "ǅungla ᾈ", "\u0378\u0378b a\U000E0001b", "x\u0301y e\u0301", "\x00\x01 \x7f",
	"a\U0002EBF0b \U0002EE5D'S 1\U0002EBF0", // CJK Extension I: letters since Unicode 15.1
}, roundTripTexts...)

// refPres are the pre-tokenizers llama.cpp splits by hand, with the digits
// one word takes.
var refPres = []struct {
	pre    string
	digits int
}{{"llama-bpe", 3}, {"qwen2", 1}}

// preSplitter is the splitter a tokenizer.ggml.pre name selects.
func preSplitter(t testing.TB, pre string) *splitter {
	t.Helper()
	spec, err := lookupPre(pre)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := newSplitter(spec.exprs)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

// refSplitters are the splitters of refPres, in order.
func refSplitters(t testing.TB) []*splitter {
	var sps []*splitter
	for _, r := range refPres {
		sps = append(sps, preSplitter(t, r.pre))
	}
	return sps
}

// matchRef checks that each splitter cuts s as llama.cpp's walk does.
func matchRef(t testing.TB, sps []*splitter, s string) {
	t.Helper()
	for i, r := range refPres {
		got, err := sps[i].split(s)
		if err != nil {
			t.Fatal(err)
		}
		if want := refSplit(s, r.digits); !slices.Equal(got, want) {
			t.Errorf("%s %q:\n got %q\nwant %q", r.pre, s, got, want)
		}
	}
}

func TestLlama3AndQwen2SplitLikeLlamaCpp(t *testing.T) {
	sps := refSplitters(t)
	for _, s := range splitTexts {
		matchRef(t, sps, s)
	}
}

// FuzzLlama3AndQwen2Split: the regex splitters and llama.cpp's hand-written
// walk agree on any valid UTF-8 text.
func FuzzLlama3AndQwen2Split(f *testing.F) {
	for _, s := range splitTexts {
		f.Add(s)
	}
	sps := refSplitters(f)
	f.Fuzz(func(t *testing.T, s string) {
		if utf8.ValidString(s) {
			matchRef(t, sps, s)
		}
	})
}

// TestSplitRandomUnicode draws texts from all of Unicode (weighted towards
// ASCII, where the rules interact most) so that letters, digits and spaces
// of every script meet the splitters, not only those a fuzzer reaches.
func TestSplitRandomUnicode(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 2))
	ascii := " \t\n\r'aAsStTlLdD09.,!?-_ "
	sps := refSplitters(t)
	for range 3000 {
		rs := make([]rune, 1+rng.IntN(24))
		for i := range rs {
			switch rng.IntN(4) {
			case 0, 1:
				rs[i] = rune(ascii[rng.IntN(len(ascii))])
			case 2:
				rs[i] = rune(rng.IntN(0x3400))
			default:
				rs[i] = rune(rng.IntN(0x110000))
			}
			if !utf8.ValidRune(rs[i]) {
				rs[i] = 'x'
			}
		}
		matchRef(t, sps, string(rs))
		if t.Failed() {
			return
		}
	}
}
