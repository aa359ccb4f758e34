package tokenizer

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/internal/testfiles"
)

// textSpecials are token texts that llama.cpp's vocabulary loader
// recognises (end of turn and generation, fill-in-the-middle, gpt-oss's
// markers), plus <|user|>, which it does not. Written into a real
// vocabulary as user-defined tokens, as some converters store them, each
// must come out as llama.cpp makes it.
var textSpecials = []string{"</s>", "<|eot_id|>", "<|im_end|>", "[EOT]", "<eos>", "<|fim_prefix|>", "<|fim_pad|>",
	"<|file_sep|>", "<|channel|>", "<|return|>", "<|call|>", "<|end|>", "<|user|>"}

// withUserDefined writes vocabulary NAME again with the texts given as
// user-defined tokens (control ones for those in control) in place of the
// last normal ones, returning the file
// and the texts' ids. A text the vocabulary has already is left out
// (llama.cpp refuses a vocabulary with a text twice).
func withUserDefined(t *testing.T, name string, texts []string, control map[string]bool) ([]byte, map[string]int32) {
	t.Helper()
	f, err := gguf.Open(testfiles.Path(t, "vocab/ggml-vocab-"+name+".gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tokens, err := f.Strings(keyTokens)
	if err != nil {
		t.Fatal(err)
	}
	tokens = slices.Clone(tokens)
	types := make([]int32, len(tokens))
	for i := range types {
		types[i] = typeNormal
	}
	if f.Has(keyTokenType) {
		tt, err := f.Int32s(keyTokenType)
		if err != nil {
			t.Fatal(err)
		}
		copy(types, tt)
	}
	ids := map[string]int32{}
	id := len(tokens)
	for _, s := range texts {
		if slices.Contains(tokens, s) {
			continue
		}
		for id--; types[id] != typeNormal; id-- {
		}
		tokens[id], types[id] = s, typeUserDefined
		if control[s] {
			types[id] = typeControl
		}
		ids[s] = int32(id)
	}
	w := gguf.NewWriter()
	for _, kv := range f.KVs {
		w.Add(kv.Key, kv.Value)
	}
	w.AddStrings(keyTokens, tokens)
	w.AddInt32s(keyTokenType, types)
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), ids
}

// TestSpecialTextsForcedToControl: llama.cpp makes the tokens it recognises
// by text control tokens, so with special tokens not parsed their text is
// plain text; it makes gpt-oss's <|channel|> user-defined and, next to
// <|return|> and <|call|>, <|end|> too (no end of generation); a
// user-defined token it does not recognise is matched in any text.
func TestSpecialTextsForcedToControl(t *testing.T) {
	for _, name := range []string{"gpt-2", "llama-spm"} {
		t.Run(name, func(t *testing.T) {
			// gpt-oss's <|channel|> written as a control token: llama.cpp
			// makes it user-defined all the same.
			data, ids := withUserDefined(t, name, textSpecials, map[string]bool{"<|channel|>": true})
			f, err := gguf.Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := FromGGUF(f)
			if err != nil {
				t.Fatal(err)
			}
			userDefined := map[string]bool{"<|channel|>": true, "<|end|>": true, "<|user|>": true}
			eog := map[string]bool{"</s>": true, "<|eot_id|>": true, "<|im_end|>": true, "[EOT]": true, "<eos>": true,
				"<|fim_pad|>": true, "<|file_sep|>": true, "<|return|>": true, "<|call|>": true}
			for _, s := range textSpecials {
				id, ok := ids[s]
				if !ok {
					continue
				}
				if got := tok.IsControl(id); got == userDefined[s] {
					t.Errorf("%s: control %v", s, got)
				}
				if got := tok.IsEOG(id); got != eog[s] {
					t.Errorf("%s: end of generation %v", s, got)
				}
				for _, special := range []bool{false, true} {
					got, err := tok.Encode("a"+s+"b", false, special)
					if err != nil {
						t.Fatal(err)
					}
					if want := special || userDefined[s]; slices.Contains(got, id) != want {
						t.Errorf("%s (parse special %v): %v, token %d matched: %v", s, special, got, id, !want)
					}
				}
			}

			// The same file through llama.cpp, where it is built.
			t.Run("llama.cpp", func(t *testing.T) {
				tool := testfiles.LlamaCppTool(t, "llamacpp_tokenize")
				path := filepath.Join(t.TempDir(), "vocab.gguf")
				if err := os.WriteFile(path, data, 0o644); err != nil {
					t.Fatal(err)
				}
				var texts []string
				for _, s := range textSpecials {
					texts = append(texts, s, "a"+s+"b", " "+s+"\n"+s)
				}
				texts = append(texts, genTexts(diffSeed, 50)...)
				run, err := parseLlamaCpp(runLlamaCpp(t, tool, path, texts), len(texts))
				if err != nil {
					t.Fatal(err)
				}
				agree := compareLlamaCpp(t, name, tok, run, texts)
				t.Logf("%s with user-defined special texts: %d of %d texts as llama.cpp", name, agree, len(texts))
			})
		})
	}
}

// TestMaskStripsSpaceBefore: llama.cpp's rules by model name: the mask token
// of Jina v2 (by pre-tokenizer) and Jina/Nomic BERT (by architecture)
// vocabularies, and ModernBERT's [MASK] (by name), swallow the whitespace
// before them; elsewhere the whitespace stays.
func TestMaskStripsSpaceBefore(t *testing.T) {
	for _, c := range []struct {
		mask  string
		kv    map[string]any
		strip bool
	}{
		{"<mask>", map[string]any{keyPre: "jina-v2-de"}, true},
		{"<mask>", map[string]any{keyArch: "jina-bert-v3"}, true},
		{"[MASK]", map[string]any{keyName: "modern-bert-base"}, true},
		{"<mask>", nil, false},
		{"[MASK]", map[string]any{keyPre: "jina-v2-es"}, false},
	} {
		kv := map[string]any{keyModel: "gpt2", keyPre: "gpt-2", keyArch: "gpt2"}
		for k, x := range c.kv {
			kv[k] = x
		}
		v := bpeVocab([]string{"a b"}, []string{c.mask}, kv)
		got, err := v.load(t).Encode("a "+c.mask, false, true)
		if err != nil {
			t.Fatal(err)
		}
		want := v.ids(t, "a", "Ġ", c.mask)
		if c.strip {
			want = v.ids(t, "a", c.mask)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s %v: %v, want %v", c.mask, c.kv, got, want)
		}
	}
}
