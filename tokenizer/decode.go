package tokenizer

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// renderPiece is llama.cpp's token_to_piece with special = true: the bytes
// a token stands for, control tokens as their text.
func (t *Tokenizer) renderPiece(id int32) []byte {
	a, text := t.attrs[id], t.tokens[id]
	if a&(attrControl|attrUnknown|attrUserDefined) != 0 {
		return []byte(text)
	}
	switch t.kind {
	case kindSPM:
		if a&attrNormal != 0 {
			return []byte(strings.ReplaceAll(text, spmSpace, " "))
		}
		if a&attrByte != 0 {
			if b, ok := parseByteToken(text); ok {
				return []byte{b}
			}
		}
	case kindBPE:
		if a&attrNormal != 0 {
			return bpeDecode(text)
		}
	}
	return nil // unused and undefined tokens render as nothing
}

// parseByteToken reads "<0xXX>".
func parseByteToken(s string) (byte, bool) {
	if len(s) != 6 || s[:3] != "<0x" || s[5] != '>' {
		return 0, false
	}
	v, err := strconv.ParseUint(s[3:5], 16, 8)
	return byte(v), err == nil
}

// Piece is the text a token stands for, as bytes (a piece may be part of a
// UTF-8 character). Control and unknown tokens give nothing; user-defined
// tokens give their text. For a model without vocabulary it is " <id>".
// The returned slice must not be modified.
func (t *Tokenizer) Piece(id int32) []byte {
	if t.kind == kindNone {
		if id < 0 || int(id) >= t.vocabSize {
			return nil
		}
		return []byte(" " + strconv.Itoa(int(id)))
	}
	if id < 0 || int(id) >= len(t.pieces) || t.attrs[id]&(attrControl|attrUnknown) != 0 {
		return nil
	}
	return t.pieces[id]
}

// Decode turns a whole sequence into text as llama.cpp's llama_detokenize
// does with remove_special: a leading BOS (and a trailing EOS) the
// vocabulary adds are dropped; for vocabularies that add a space prefix, the
// first piece's leading space is dropped unless the sequence started with
// BOS; byte-level BPE vocabularies get llama.cpp's clean-up of spaces
// before punctuation and contractions.
func (t *Tokenizer) Decode(ids []int32) string {
	removeSpace := t.addSpacePrefix
	if t.addBOS && len(ids) > 0 && ids[0] == t.bos && t.bos != none {
		removeSpace = false
		ids = ids[1:]
	}
	if t.addEOS && len(ids) > 0 && ids[len(ids)-1] == t.eos && t.eos != none {
		ids = ids[:len(ids)-1]
	}
	var out []byte
	for _, id := range ids {
		p := t.Piece(id)
		if removeSpace && len(p) > 0 && p[0] == ' ' {
			p = p[1:]
		}
		removeSpace = false
		out = append(out, p...)
	}
	if t.cleanSpaces {
		out = cleanSpaces(out)
	}
	return string(out)
}

// cleanSpaces is llama.cpp's clean_up_tokenization_spaces in three passes:
// " ?", " !", " .", " ," lose the space; " ' " becomes "'"; " 's", " 'm",
// " 're", " 've" lose the space.
func cleanSpaces(s []byte) []byte {
	if len(s) == 0 {
		return s
	}
	out := []byte{s[0]}
	for i := 1; i < len(s); i++ {
		x := s[i]
		if s[i-1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',') {
			out = out[:len(out)-1]
		}
		out = append(out, x)
	}
	s, out = out, []byte{out[0]}
	for i := 1; i < len(s); i++ {
		x := s[i]
		if x == '\'' && i+1 < len(s) && s[i-1] == ' ' && s[i+1] == ' ' {
			out = out[:len(out)-1]
			s[i+1] = 0 // llama.cpp blanks the space after in place, then skips it
			i++
		}
		out = append(out, x)
	}
	s, out = out, []byte{out[0]}
	for i := 1; i < len(s); i++ {
		x := s[i]
		if s[i-1] == ' ' && x == '\'' && i+1 < len(s) {
			x1 := s[i+1]
			switch {
			case x1 == 's' || x1 == 'm':
				out = out[:len(out)-1]
			case i+2 < len(s) && ((x1 == 'r' && s[i+2] == 'e') || (x1 == 'v' && s[i+2] == 'e')):
				out = out[:len(out)-1]
			}
		}
		out = append(out, x)
	}
	return out
}

// StreamDecoder turns generated tokens into text one at a time, holding
// back the bytes of a UTF-8 character split across tokens so it never
// returns half a character. Pieces are concatenated as llama.cpp's
// generation output does (no space stripping: a first generated " Once"
// stays " Once").
type StreamDecoder struct {
	t   *Tokenizer
	buf []byte
}

// NewDecoder starts a stream decoder.
func (t *Tokenizer) NewDecoder() *StreamDecoder { return &StreamDecoder{t: t} }

// Add appends one token and returns the text that is now complete.
func (d *StreamDecoder) Add(id int32) string {
	d.buf = append(d.buf, d.t.Piece(id)...)
	cut := completePrefix(d.buf)
	s := string(d.buf[:cut])
	d.buf = append(d.buf[:0], d.buf[cut:]...)
	return s
}

// Flush returns whatever is held back (an incomplete character's bytes).
func (d *StreamDecoder) Flush() string {
	s := string(d.buf)
	d.buf = d.buf[:0]
	return s
}

// completePrefix is the length of b without a trailing incomplete UTF-8
// sequence. Bytes that can never start or continue a valid character are
// let through: holding them would only delay them.
func completePrefix(b []byte) int {
	n := len(b)
	for i := n - 1; i >= 0 && i >= n-4; i-- {
		c := b[i]
		if c&0xC0 == 0x80 {
			continue // continuation byte: look for its lead
		}
		if c >= 0xC0 && !utf8.FullRune(b[i:]) {
			return i
		}
		return n
	}
	return n
}
