package tokenizer

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// fragment is a piece of the input: raw text, or a special token cut out of
// it (token >= 0).
type fragment struct {
	text  string
	token int32
}

// Encode turns text into token ids. With addSpecial, BOS and EOS are added
// as the vocabulary's flags say; with parseSpecial, the texts of control
// tokens (e.g. "<|im_end|>") in the input become those tokens. User-defined
// tokens are always matched, as in llama.cpp.
func (t *Tokenizer) Encode(text string, addSpecial, parseSpecial bool) ([]int32, error) {
	if t.kind == kindNone {
		return t.encodeIDs(text)
	}
	var out []int32
	if addSpecial && t.addBOS {
		if t.bos == none {
			return nil, errors.New("tokenizer: vocabulary asks for BOS but has no BOS token")
		}
		out = append(out, t.bos)
	}
	frags := t.partition(text, parseSpecial)
	var err error
	switch t.kind {
	case kindSPM:
		prevSpecial := true // the first text fragment gets the space prefix
		for _, f := range frags {
			if f.token >= 0 {
				out = append(out, f.token)
				prevSpecial = true
				continue
			}
			s := f.text
			if t.addSpacePrefix && prevSpecial {
				s = " " + s
			}
			if out, err = t.encodeSPM(strings.ReplaceAll(s, " ", spmSpace), out); err != nil {
				return nil, err
			}
			prevSpecial = false
		}
	case kindBPE:
		for _, f := range frags {
			if f.token >= 0 {
				out = append(out, f.token)
				continue
			}
			if out, err = t.encodeBPE(f.text, out); err != nil {
				return nil, err
			}
		}
	}
	if addSpecial && t.addEOS {
		if t.eos == none {
			return nil, errors.New("tokenizer: vocabulary asks for EOS but has no EOS token")
		}
		out = append(out, t.eos)
	}
	return out, nil
}

// encodeIDs is Encode for a model without vocabulary: the text must be
// whitespace-separated decimal token ids.
func (t *Tokenizer) encodeIDs(text string) ([]int32, error) {
	fields := strings.Fields(text)
	out := make([]int32, 0, len(fields))
	for _, f := range fields {
		id, err := strconv.ParseInt(f, 10, 32)
		if err != nil || id < 0 || id >= int64(t.vocabSize) {
			return nil, fmt.Errorf("tokenizer: the model has no vocabulary, so the prompt must be token ids in [0, %d) separated by spaces; got %q", t.vocabSize, f)
		}
		out = append(out, int32(id))
	}
	return out, nil
}

// partition cuts special tokens out of text, longest token first, as
// llama.cpp's tokenizer_st_partition does. Control and unknown tokens are
// cut only when parseSpecial is set; user-defined ones always.
func (t *Tokenizer) partition(text string, parseSpecial bool) []fragment {
	if text == "" {
		return nil
	}
	frags := []fragment{{text: text, token: none}}
	for _, id := range t.special {
		a := t.attrs[id]
		if !parseSpecial && a&(attrControl|attrUnknown) != 0 {
			continue
		}
		tok := t.tokens[id]
		var next []fragment
		changed := false
		for _, f := range frags {
			if f.token >= 0 || !strings.Contains(f.text, tok) {
				next = append(next, f)
				continue
			}
			changed = true
			rest := f.text
			for {
				i := strings.Index(rest, tok)
				if i < 0 {
					if rest != "" {
						next = append(next, fragment{text: rest, token: none})
					}
					break
				}
				left := rest[:i]
				if a&attrLStrip != 0 {
					left = strings.TrimRight(left, cSpace)
				}
				if left != "" {
					next = append(next, fragment{text: left, token: none})
				}
				next = append(next, fragment{token: id})
				rest = rest[i+len(tok):]
				if a&attrRStrip != 0 {
					rest = strings.TrimLeft(rest, cSpace)
				}
			}
		}
		if changed {
			frags = next
		}
	}
	return frags
}

// cSpace is what C's isspace accepts, which llama.cpp uses to strip around
// special tokens.
const cSpace = " \t\n\v\f\r"
