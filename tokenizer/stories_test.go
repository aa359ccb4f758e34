package tokenizer

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/internal/testfiles"
)

// stories is one of stories260K's files.
func stories(t *testing.T, name string) string {
	t.Helper()
	return testfiles.Path(t, "models/stories260K/"+name)
}

func loadGGUF(t *testing.T, path string) *Tokenizer {
	t.Helper()
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tok, err := FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// greedyRef is one prompt of reference-greedy.md.
type greedyRef struct {
	prompt    string
	promptIDs []int32
	genIDs    []int32
	genText   string
}

// readGreedy parses reference-greedy.md (llama.cpp's output for stories260K).
func readGreedy(t *testing.T) []greedyRef {
	data, err := os.ReadFile(stories(t, "reference-greedy.md"))
	if err != nil {
		t.Fatal(err)
	}
	var refs []greedyRef
	ids := func(s string) []int32 {
		var out []int32
		for _, f := range strings.Fields(s) {
			v, err := strconv.Atoi(f)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, int32(v))
		}
		return out
	}
	for _, line := range strings.Split(string(data), "\n") {
		switch {
		case strings.HasPrefix(line, "## prompt: "):
			p, err := strconv.Unquote(strings.TrimPrefix(line, "## prompt: "))
			if err != nil {
				t.Fatal(err)
			}
			refs = append(refs, greedyRef{prompt: p})
		case strings.HasPrefix(line, "prompt_ids: "):
			refs[len(refs)-1].promptIDs = ids(strings.TrimPrefix(line, "prompt_ids: "))
		case strings.HasPrefix(line, "generated_ids (100): "):
			refs[len(refs)-1].genIDs = ids(strings.TrimPrefix(line, "generated_ids (100): "))
		case strings.HasPrefix(line, "generated_text (C-escaped): "):
			s, err := strconv.Unquote(strings.TrimPrefix(line, "generated_text (C-escaped): "))
			if err != nil {
				t.Fatal(err)
			}
			refs[len(refs)-1].genText = s
		}
	}
	if len(refs) != 2 {
		t.Fatalf("reference-greedy.md: found %d prompts, want 2", len(refs))
	}
	return refs
}

func TestStoriesGGUFAndLlama2C(t *testing.T) {
	fromGGUF := loadGGUF(t, stories(t, "stories260K-f32.gguf"))
	fromBin, err := FromLlama2C(stories(t, "tok512.bin"), 512)
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]*Tokenizer{"gguf": fromGGUF, "llama2c": fromBin} {
		if tok.VocabSize() != 512 || tok.BOS() != 1 || tok.EOS() != 2 || !tok.AddBOS() || tok.AddEOS() {
			t.Errorf("%s: vocab %d bos %d eos %d addBOS %v addEOS %v", name, tok.VocabSize(), tok.BOS(), tok.EOS(), tok.AddBOS(), tok.AddEOS())
		}
		if !tok.IsEOG(2) || tok.IsEOG(1) || tok.IsEOG(403) {
			t.Errorf("%s: IsEOG wrong", name)
		}
		for _, ref := range readGreedy(t) {
			got, err := tok.Encode(ref.prompt, true, false)
			if err != nil {
				t.Fatal(err)
			}
			if !equalIDs(got, ref.promptIDs) {
				t.Errorf("%s: Encode(%q) = %v, want %v", name, ref.prompt, got, ref.promptIDs)
			}
			// llama.cpp prints each generated token's piece as it comes.
			d := tok.NewDecoder()
			var sb strings.Builder
			for _, id := range ref.genIDs {
				sb.WriteString(d.Add(id))
			}
			sb.WriteString(d.Flush())
			if sb.String() != ref.genText {
				t.Errorf("%s: decoded %q\nwant %q", name, sb.String(), ref.genText)
			}
		}
	}
	// Both sources describe the same vocabulary: same texts, pieces and
	// tokenization of every token's own text.
	for id := int32(0); id < 512; id++ {
		if fromGGUF.Token(id) != fromBin.Token(id) && id > 2 {
			t.Errorf("token %d: gguf %q, llama2c %q", id, fromGGUF.Token(id), fromBin.Token(id))
		}
		if string(fromGGUF.Piece(id)) != string(fromBin.Piece(id)) {
			t.Errorf("piece %d: gguf %q, llama2c %q", id, fromGGUF.Piece(id), fromBin.Piece(id))
		}
	}
	for _, s := range []string{"Lily and Tom went to the park.\nThey saw a dog!", "  two  spaces", "ünïcødé 日本 🙂", ""} {
		a, errA := fromGGUF.Encode(s, true, true)
		b, errB := fromBin.Encode(s, true, true)
		if errA != nil || errB != nil || !equalIDs(a, b) {
			t.Errorf("Encode(%q): gguf %v %v, llama2c %v %v", s, a, errA, b, errB)
		}
		// llama.cpp's detokenizer keeps the prefix space after a BOS and
		// drops it from a sequence that starts without one.
		if got := fromGGUF.Decode(a); s != "" && got != " "+s {
			t.Errorf("Decode(Encode(%q, BOS)) = %q", s, got)
		}
		noBOS, _ := fromGGUF.Encode(s, false, false)
		if got := fromGGUF.Decode(noBOS); got != s {
			t.Errorf("Decode(Encode(%q)) = %q", s, got)
		}
	}
}

func TestLlama2CErrors(t *testing.T) {
	good, err := os.ReadFile(stories(t, "tok512.bin"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data []byte
		n    int
	}{
		{"empty", nil, 512},
		{"too many tokens", good, 513},
		{"huge vocab", good, 1 << 30},
		{"zero vocab", good, 0},
		{"truncated", good[:len(good)-3], 512},
		{"bad length", append(append([]byte{}, good[:8]...), 0xff, 0xff, 0xff, 0x7f), 1},
	} {
		if _, err := parseLlama2C(tc.data, tc.n); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	if _, err := FromLlama2C(filepath.Join(t.TempDir(), "missing.bin"), 512); err == nil {
		t.Error("missing file: no error")
	}
}
