package tokenizer

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzGPT2RoundTrip: Encode never fails or panics on any input, and for
// valid UTF-8 the pieces give the text back exactly. (Invalid UTF-8 is
// decoded as llama.cpp decodes it, cptsFromUTF8.)
func FuzzGPT2RoundTrip(f *testing.F) {
	for _, s := range roundTripTexts {
		f.Add(s)
	}
	f.Add("\xff\xfe broken \xe6\x97")
	f.Add("<|endoftext|> special")
	tok := loadVocab(f, "gpt-2")
	f.Fuzz(func(t *testing.T, s string) {
		for _, parse := range []bool{false, true} {
			ids, err := tok.Encode(s, true, parse)
			if err != nil {
				t.Fatalf("Encode(%q): %v", s, err)
			}
			if utf8.ValidString(s) {
				if got := concat(tok, ids); got != s && !(parse && strings.Contains(s, "<|endoftext|>")) {
					t.Fatalf("round trip of %q gave %q", s, got)
				}
			}
		}
	})
}

// FuzzSPMRoundTrip: the SentencePiece path round-trips any valid UTF-8 via
// byte fallback.
func FuzzSPMRoundTrip(f *testing.F) {
	for _, s := range roundTripTexts {
		f.Add(s)
	}
	tok := loadVocab(f, "llama-spm")
	f.Fuzz(func(t *testing.T, s string) {
		ids, err := tok.Encode(s, false, false)
		if err != nil {
			t.Fatalf("Encode(%q): %v", s, err)
		}
		if utf8.ValidString(s) && !strings.Contains(s, "\u2581") {
			if got := tok.Decode(ids); got != s {
				t.Fatalf("round trip of %q gave %q", s, got)
			}
		}
	})
}

// BenchmarkEncode tokenizes about 4 KB of mixed text.
func BenchmarkEncode(b *testing.B) {
	text := strings.Repeat(strings.Join(roundTripTexts, " "), 6)
	for _, name := range []string{"gpt-2", "llama-spm", "deepseek-llm"} {
		tok := loadVocab(b, name)
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				if _, err := tok.Encode(text, true, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
