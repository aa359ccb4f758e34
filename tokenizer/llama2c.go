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
// and builds the SentencePiece tokenizer llama.cpp's converter makes of it:
// id 0 <unk>, 1 BOS, 2 EOS, "<0xXX>" tokens as byte fallback.
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
	// every token needs at least 8 bytes, which also bounds vocabSize by the file
	if vocabSize < 3 || vocabSize > maxTokens || vocabSize > (len(data)-4)/8 {
		return nil, fmt.Errorf("vocabulary size %d does not fit a %d-byte file", vocabSize, len(data))
	}
	le := binary.LittleEndian
	pos := 4 // max_token_length: not needed
	tokens := make([]string, vocabSize)
	scores := make([]float32, vocabSize)
	attrs := make([]attr, vocabSize)
	for i := range tokens {
		if len(data)-pos < 8 {
			return nil, fmt.Errorf("token %d: truncated", i)
		}
		scores[i] = math.Float32frombits(le.Uint32(data[pos:]))
		n := int32(le.Uint32(data[pos+4:]))
		pos += 8
		if n < 0 || int(n) > len(data)-pos {
			return nil, fmt.Errorf("token %d: length %d beyond the file", i, n)
		}
		tokens[i] = string(data[pos : pos+int(n)])
		pos += int(n)
		switch _, isByte := parseByteToken(tokens[i]); {
		case i == 0:
			attrs[i] = attrUnknown
		case i == 1 || i == 2:
			attrs[i] = attrControl
		case isByte:
			attrs[i] = attrByte
		default:
			attrs[i] = attrNormal
			// llama2.c stores plain spaces; SentencePiece vocabularies "▁"
			tokens[i] = strings.ReplaceAll(tokens[i], " ", spmSpace)
		}
	}
	t := &Tokenizer{kind: kindSPM, bos: 1, eos: 2, unk: 0, eot: none, eom: none, addBOS: true, addSpacePrefix: true}
	t.setVocab(tokens, scores, attrs)
	t.finish(nil)
	return t, nil
}
