package tokenizer

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"strings"
)

// FromLlama2C reads llama2.c's tokenizer.bin (int32 max_token_length, then
// per token: float32 score, int32 length, bytes) holding vocabSize tokens,
// and builds the SentencePiece tokenizer llama.cpp's converter makes of it
// (see ParseLlama2C).
func FromLlama2C(path string, vocabSize int) (*Tokenizer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	t, err := parseLlama2C(data, vocabSize)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", path, err)
	}
	return t, nil
}

func parseLlama2C(data []byte, vocabSize int) (*Tokenizer, error) {
	if vocabSize < 3 {
		return nil, fmt.Errorf("vocabulary size %d: want at least 3 tokens", vocabSize)
	}
	v, err := ParseLlama2C(data, vocabSize)
	if err != nil {
		return nil, err
	}
	attrs := make([]attr, len(v.Types))
	for i, ty := range v.Types {
		attrs[i] = attrFromType(ty)
	}
	t := &Tokenizer{kind: kindSPM, bos: 1, eos: 2, unk: 0, eot: none, eom: none, addBOS: true, addSpacePrefix: true}
	t.setVocab(v.Tokens, v.Scores, attrs)
	t.finish(nil)
	return t, nil
}

// Llama2CVocab is a llama2.c tokenizer file as llama.cpp's
// convert-llama2c-to-ggml turns it into a GGUF vocabulary: id 0 "<unk>"
// (unknown), 1 "<s>" and 2 "</s>" (control), empty tokens control,
// "<0xXX>" tokens bytes, the rest normal; spaces written as "▁".
type Llama2CVocab struct {
	Tokens []string
	Scores []float32
	Types  []int32 // tokenizer.ggml.token_type values
}

// ParseLlama2C reads n tokens of a llama2.c tokenizer file, or with n <= 0
// every token up to the end of data (the file does not record its count).
func ParseLlama2C(data []byte, n int) (*Llama2CVocab, error) {
	// every token needs at least 8 bytes, which also bounds n by the file
	if len(data) < 4 || n > maxTokens || n > (len(data)-4)/8 {
		return nil, fmt.Errorf("vocabulary size %d does not fit a %d-byte file", n, len(data))
	}
	le := binary.LittleEndian
	pos := 4 // max_token_length: not needed
	v := &Llama2CVocab{}
	for i := 0; n <= 0 && pos < len(data) || i < n; i++ {
		if i >= maxTokens {
			return nil, fmt.Errorf("more than %d tokens", maxTokens)
		}
		if len(data)-pos < 8 {
			return nil, fmt.Errorf("token %d: truncated", i)
		}
		score := math.Float32frombits(le.Uint32(data[pos:]))
		l := int32(le.Uint32(data[pos+4:]))
		pos += 8
		if l < 0 || int(l) > len(data)-pos {
			return nil, fmt.Errorf("token %d: length %d beyond the file", i, l)
		}
		text := string(data[pos : pos+int(l)])
		pos += int(l)
		ty := int32(typeNormal)
		switch _, isByte := parseByteToken(text); {
		case i == 0:
			text, ty = "<unk>", typeUnknown
		case i == 1:
			text, ty = "<s>", typeControl
		case i == 2:
			text, ty = "</s>", typeControl
		case text == "":
			ty = typeControl
		case isByte:
			ty = typeByte
		}
		// llama2.c stores plain spaces; SentencePiece vocabularies "▁"
		v.Tokens = append(v.Tokens, strings.ReplaceAll(text, " ", spmSpace))
		v.Scores = append(v.Scores, score)
		v.Types = append(v.Types, ty)
	}
	if len(v.Tokens) < 3 {
		return nil, fmt.Errorf("%d tokens: want at least 3", len(v.Tokens))
	}
	return v, nil
}
