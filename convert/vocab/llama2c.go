package vocab

import (
	"fmt"
	"path/filepath"

	"github.com/edgellm/edgellm/tokenizer"
)

// FromLlama2C reads a llama2.c tokenizer file (tok512.bin, tokenizer.bin): tokens and scores,
// written as llama.cpp's convert-llama2c-to-ggml does (tokenizer model "llama", token types, bos 1 eos 2...).
//
// The file does not record its token count: every token up to its end is
// read (the checkpoint's vocab_size should equal Len).
func FromLlama2C(path string) (*Vocab, error) {
	b, err := readOptional(filepath.Dir(path), filepath.Base(path))
	if err != nil {
		return nil, err
	}
	if b == nil {
		return nil, fmt.Errorf("vocab: %s: no such file", path)
	}
	t, err := tokenizer.ParseLlama2C(b, 0)
	if err != nil {
		return nil, fmt.Errorf("vocab: %s: %w", path, err)
	}
	return &Vocab{
		Model:  "llama",
		Tokens: t.Tokens, Scores: t.Scores, Types: t.Types,
		// convert-llama2c-to-ggml's fixed ids; no separator or padding
		Special: map[string]int32{"unk": 0, "bos": 1, "eos": 2, "sep": NullID, "pad": NullID},
	}, nil
}

// Len is the number of tokens.
func (v *Vocab) Len() int { return len(v.Tokens) }
