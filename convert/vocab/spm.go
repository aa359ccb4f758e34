package vocab

import (
	"errors"
	"fmt"
	"math"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
)

// spModel is the part of a SentencePiece model (sentencepiece_model.proto's
// ModelProto) the converter reads.
type spModel struct {
	pieces         []spPiece
	modelType      int64 // trainer_spec.model_type: 1 unigram (the default), 2 BPE, 3 word, 4 char
	byteFallback   bool  // trainer_spec.byte_fallback
	addDummyPrefix bool  // normalizer_spec.add_dummy_prefix (default true)
}

type spPiece struct {
	piece string
	score float32
	typ   int32 // 1 normal (the default), 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
}

const (
	spUnigram = 1
	spBPE     = 2
)

// parseSentencePiece reads a serialized ModelProto with protowire: fields
// it does not need are skipped, a field of the wrong wire type or a value
// out of range is an error.
func parseSentencePiece(b []byte) (*spModel, error) {
	m := &spModel{modelType: spUnigram, addDummyPrefix: true}
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case 1: // pieces
			if typ != protowire.BytesType {
				return wireErr("pieces", typ)
			}
			if len(m.pieces) >= maxTokens {
				return fmt.Errorf("more than %d pieces", maxTokens)
			}
			p, err := parsePiece(v)
			if err != nil {
				return fmt.Errorf("piece %d: %w", len(m.pieces), err)
			}
			m.pieces = append(m.pieces, p)
		case 2: // trainer_spec
			if typ != protowire.BytesType {
				return wireErr("trainer_spec", typ)
			}
			return fields(v, func(num protowire.Number, typ protowire.Type, _ []byte, x uint64) error {
				switch num {
				case 3:
					if typ != protowire.VarintType {
						return wireErr("trainer_spec.model_type", typ)
					}
					m.modelType = int64(x)
				case 35:
					if typ != protowire.VarintType {
						return wireErr("trainer_spec.byte_fallback", typ)
					}
					m.byteFallback = x != 0
				}
				return nil
			})
		case 3: // normalizer_spec
			if typ != protowire.BytesType {
				return wireErr("normalizer_spec", typ)
			}
			return fields(v, func(num protowire.Number, typ protowire.Type, _ []byte, x uint64) error {
				if num == 3 {
					if typ != protowire.VarintType {
						return wireErr("normalizer_spec.add_dummy_prefix", typ)
					}
					m.addDummyPrefix = x != 0
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("SentencePiece model: %w", err)
	}
	if len(m.pieces) == 0 {
		return nil, errors.New("SentencePiece model: no pieces")
	}
	return m, nil
}

func parsePiece(b []byte) (spPiece, error) {
	p := spPiece{typ: 1}
	hasPiece := false
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case 1:
			if typ != protowire.BytesType {
				return wireErr("piece", typ)
			}
			p.piece, hasPiece = string(v), true
		case 2:
			if typ != protowire.Fixed32Type {
				return wireErr("score", typ)
			}
			p.score = math.Float32frombits(uint32(x))
		case 3:
			if typ != protowire.VarintType {
				return wireErr("type", typ)
			}
			if x < 1 || x > 6 {
				return fmt.Errorf("type %d: want 1 to 6", x)
			}
			p.typ = int32(x)
		}
		return nil
	})
	if err == nil && (!hasPiece || p.piece == "") {
		err = errors.New("empty piece")
	}
	return p, err
}

func wireErr(field string, typ protowire.Type) error {
	return fmt.Errorf("field %s has wire type %d", field, typ)
}

// fields calls fn for each field of a message: v holds a length-delimited
// field's bytes, x a varint or fixed field's value. Groups are skipped.
func fields(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var u uint32
			u, n = protowire.ConsumeFixed32(b)
			x = uint64(u)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

// fromSentencePiece converts tokenizer.model as llama.cpp's
// _create_vocab_sentencepiece does: pieces with their scores and types,
// padded to config.json's vocab_size with "[PAD{id}]" (score -10000,
// unused), added_tokens.json's tokens user-defined, tokenizer_config.json's
// added_tokens_decoder control (special, or looking special) or
// user-defined, these scoring -1000. Only BPE models convert: package
// tokenizer implements SentencePiece's BPE, not its Unigram.
func fromSentencePiece(c *checkpoint) (*Vocab, error) {
	m := c.spModel
	name := c.dir + "/tokenizer.model"
	if m.modelType != spBPE {
		kind := map[int64]string{spUnigram: "Unigram", 3: "word", 4: "char"}[m.modelType]
		if kind == "" {
			kind = "type " + strconv.FormatInt(m.modelType, 10)
		}
		return nil, fmt.Errorf("vocab: %s: unsupported SentencePiece %s model: only BPE models convert", name, kind)
	}
	n := len(m.pieces)
	if c.vocabSize > 0 {
		if n > c.vocabSize {
			return nil, fmt.Errorf("vocab: %s: %d pieces do not fit config.json's vocab_size %d", name, n, c.vocabSize)
		}
		n = c.vocabSize
	}
	if err := checkPadding(n, len(m.pieces)); err != nil {
		return nil, fmt.Errorf("vocab: %s: %w", name, err)
	}
	v := &Vocab{
		Model: "llama", Pre: "default", PreFrom: "fixed",
		Tokens: make([]string, n), Scores: make([]float32, n), Types: make([]int32, n),
	}
	for i := range n {
		v.Tokens[i], v.Scores[i], v.Types[i] = padName(i), -10000, TypeUnused
	}
	for i, p := range m.pieces {
		ty := TypeNormal // user-defined pieces too, as llama.cpp reads them
		switch p.typ {
		case 2:
			ty = TypeUnknown
		case 3:
			ty = TypeControl
		case 5:
			ty = TypeUnused
		case 6:
			ty = TypeByte
		}
		v.Tokens[i], v.Scores[i], v.Types[i] = p.piece, p.score, ty
	}
	for content, x := range c.addedJSON {
		id, ok := jsonInt(x)
		if !ok || id < 0 {
			return nil, fmt.Errorf("vocab: %s/added_tokens.json: %q: bad id %v", c.dir, content, x)
		}
		if id < int64(n) {
			v.Tokens[id], v.Scores[id], v.Types[id] = content, -1000, TypeUserDefined
		}
	}
	added := map[int]hfAdded{}
	if err := c.addedTokensDecoder(added); err != nil {
		return nil, err
	}
	for id, a := range added {
		if id < n {
			v.Tokens[id], v.Types[id] = addedType(a.Content, a.Special)
			v.Scores[id] = -1000
		}
	}
	c.spacePrefix(v, m.addDummyPrefix)
	if err := c.specialVocab(v); err != nil {
		return nil, err
	}
	return v, nil
}

// spacePrefix sets add_space_prefix from tokenizer_config.json's
// add_prefix_space, as llama.cpp's Llama converter does, else from the
// model's own switch where it is off (package tokenizer's default is on).
func (c *checkpoint) spacePrefix(v *Vocab, model bool) {
	if b, ok := c.tokConfig["add_prefix_space"].(bool); ok {
		v.AddSpacePrefix = &b
	} else if !model {
		v.AddSpacePrefix = &model
	}
}
