package tokenizer

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/internal/testfiles"
)

var (
	vocabMu    sync.Mutex
	vocabCache = map[string]*Tokenizer{}
)

// loadVocab loads vocab/ggml-vocab-NAME.gguf (testdata/ or ../shared) once
// per test binary.
func loadVocab(t testing.TB, name string) *Tokenizer {
	t.Helper()
	vocabMu.Lock()
	defer vocabMu.Unlock()
	if tok, ok := vocabCache[name]; ok {
		return tok
	}
	f, err := gguf.Open(testfiles.Path(t, "vocab/ggml-vocab-"+name+".gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tok, err := FromGGUF(f)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	vocabCache[name] = tok
	return tok
}

// readVectors reads NAME.gguf.inp/.out as described in vocab/README.md.
func readVectors(t *testing.T, name string) (texts []string, want [][]int32) {
	t.Helper()
	base := "vocab/ggml-vocab-" + name + ".gguf"
	inp, err := os.ReadFile(testfiles.Path(t, base+".inp"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.ReadFile(testfiles.Path(t, base+".out"))
	if err != nil {
		t.Fatal(err)
	}
	const sep = "\n__ggml_vocab_test__\n"
	texts = strings.Split(string(inp), sep)
	if texts[len(texts)-1] != "" {
		t.Fatalf("%s.inp does not end with the separator", name)
	}
	texts = texts[:len(texts)-1]
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(lines) != len(texts) {
		t.Fatalf("%s: %d texts but %d expected lines", name, len(texts), len(lines))
	}
	for _, l := range lines {
		var ids []int32
		for _, f := range strings.Fields(l) {
			v, err := strconv.Atoi(f)
			if err != nil {
				t.Fatalf("%s.out: %v", name, err)
			}
			ids = append(ids, int32(v))
		}
		want = append(want, ids)
	}
	return texts, want
}

func TestVectors(t *testing.T) {
	for _, name := range []string{"gpt-2", "deepseek-llm", "llama-spm", "phi-3"} {
		t.Run(name, func(t *testing.T) {
			tok := loadVocab(t, name)
			texts, want := readVectors(t, name)
			for i, text := range texts {
				got, err := tok.Encode(text, false, false)
				if err != nil {
					t.Errorf("text %d %q: %v", i, text, err)
					continue
				}
				if !equalIDs(got, want[i]) {
					t.Errorf("text %d %q:\n got %v\nwant %v", i, text, got, want[i])
				}
			}
		})
	}
}

func equalIDs(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestPreClass(t *testing.T) {
	if c := PreClass("llama-bpe"); c == "" || c != PreClass("falcon3") {
		t.Errorf("llama-bpe %q and falcon3 %q differ", c, PreClass("falcon3"))
	}
	// dbrx splits as llama3 but adds no BOS by default
	if PreClass("dbrx") == PreClass("llama-bpe") || PreClass("gpt-2") == PreClass("starcoder") {
		t.Error("classes that tokenize differently are equal")
	}
	if PreClass("no-such-pre") != "" {
		t.Error("unknown name has a class")
	}
	for _, n := range PreTokenizers() {
		if PreClass(n) == "" {
			t.Errorf("%s listed without a class", n)
		}
	}
}
