package vocab

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/tokenizer"
)

// FuzzSentencePiece: any bytes parse to a model or an error, never a panic.
func FuzzSentencePiece(f *testing.F) {
	f.Add(spModelBytes(spBPE, false, tinySPM...))
	f.Add(spModelBytes(spUnigram, true, spPiece{"a", 1, 1}))
	f.Add([]byte{0x0a, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseSentencePiece(b)
		if err != nil {
			return
		}
		if len(m.pieces) == 0 {
			t.Fatal("a model without pieces parsed")
		}
		v, err := fromSentencePiece(&checkpoint{dir: "fuzz", spModel: m})
		if err == nil {
			checkWritable(t, v)
		}
	})
}

// FuzzTokenizerJSON: any tokenizer.json converts or fails with an error;
// what converts writes a GGUF that reads back.
func FuzzTokenizerJSON(f *testing.F) {
	for _, pre := range []any{llama3Pre, nil} {
		b, err := json.Marshal(tinyBPE(pre))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"model":{"type":"BPE","vocab":{"<0x41>":0,"a":1},"merges":[],"byte_fallback":true},"decoder":{"type":"Sequence"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := parseTokenizerJSON(b)
		if err != nil {
			return
		}
		// a forced name keeps each input to one tokenizer build
		v, err := fromTokenizerJSON(&checkpoint{dir: "fuzz", tok: tok}, Options{Pre: "gpt-2"})
		if err == nil {
			checkWritable(t, v)
		}
	})
}

// checkWritable writes v and reads the metadata back; the tokenizer may
// refuse it, but must not panic.
func checkWritable(t *testing.T, v *Vocab) {
	w := gguf.NewWriter()
	v.Write(w)
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Tokens) != len(v.Types) || v.Scores != nil && len(v.Scores) != len(v.Tokens) {
		t.Fatalf("%d tokens, %d types, %d scores", len(v.Tokens), len(v.Types), len(v.Scores))
	}
	if tok, err := tokenizer.FromGGUF(f); err == nil {
		_, _ = tok.Encode("a b <|endoftext|> ab", true, true)
	}
}
