package vocab

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// hfTokenizer is the part of a Hugging Face tokenizer.json the converter
// reads.
type hfTokenizer struct {
	AddedTokens   []hfAdded       `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
	Model         struct {
		Type         string          `json:"type"`
		Vocab        json.RawMessage `json:"vocab"`
		Merges       json.RawMessage `json:"merges"`
		ByteFallback bool            `json:"byte_fallback"`
		IgnoreMerges bool            `json:"ignore_merges"`
		UnkToken     *string         `json:"unk_token"`
	} `json:"model"`

	vocab  map[string]int // BPE model's vocabulary
	merges [][2]string    // BPE model's merges, as pairs
}

type hfAdded struct {
	ID      int64  `json:"id"`
	Content string `json:"content"`
	Special bool   `json:"special"`
}

// parseTokenizerJSON reads tokenizer.json; a BPE model's vocabulary and
// merges are checked as the tokenizers library checks them (ids in range,
// each merge's parts and result in the vocabulary).
func parseTokenizerJSON(b []byte) (*hfTokenizer, error) {
	var t hfTokenizer
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, err
	}
	for _, a := range t.AddedTokens {
		if a.ID < 0 || a.ID >= maxTokens {
			return nil, fmt.Errorf("added token %q: id %d out of range", a.Content, a.ID)
		}
	}
	if t.Model.Type != "BPE" {
		return &t, nil // refused by fromTokenizerJSON if it is needed
	}
	if err := json.Unmarshal(t.Model.Vocab, &t.vocab); err != nil {
		return nil, fmt.Errorf("model.vocab: %w", err)
	}
	for s, id := range t.vocab {
		if id < 0 || id >= maxTokens {
			return nil, fmt.Errorf("model.vocab: token %q: id %d out of range", s, id)
		}
	}
	var err error
	if t.merges, err = parseMerges(t.Model.Merges); err != nil {
		return nil, fmt.Errorf("model.merges: %w", err)
	}
	for i, m := range t.merges {
		for _, s := range []string{m[0], m[1], m[0] + m[1]} {
			if _, ok := t.vocab[s]; !ok {
				return nil, fmt.Errorf("model.merges: merge %d (%q %q): %q is not in the vocabulary", i, m[0], m[1], s)
			}
		}
	}
	return &t, nil
}

// parseMerges reads merges as "a b" strings or, since transformers 4.45,
// as ["a", "b"] pairs.
func parseMerges(raw json.RawMessage) ([][2]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var strs []string
	if err := json.Unmarshal(raw, &strs); err == nil {
		out := make([][2]string, len(strs))
		for i, s := range strs {
			a, b, ok := strings.Cut(s, " ")
			if !ok || a == "" || b == "" || strings.Contains(b, " ") {
				return nil, fmt.Errorf("merge %d %q: want two parts separated by one space", i, s)
			}
			out[i] = [2]string{a, b}
		}
		return out, nil
	}
	var pairs [][]string
	if err := json.Unmarshal(raw, &pairs); err != nil {
		return nil, errors.New("want a list of strings or of string pairs")
	}
	out := make([][2]string, len(pairs))
	for i, p := range pairs {
		if len(p) != 2 || p[0] == "" || p[1] == "" {
			return nil, fmt.Errorf("merge %d: want two non-empty strings, got %q", i, p)
		}
		out[i] = [2]string{p[0], p[1]}
	}
	return out, nil
}

// typeOf reads the "type" of a JSON object ("" if none).
func typeOf(raw json.RawMessage) string {
	var o struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(raw, &o) != nil {
		return ""
	}
	return o.Type
}

// fromTokenizerJSON converts a BPE tokenizer.json: byte-level BPE ("gpt2",
// llama.cpp's _set_vocab_gpt2) or, where the model falls back to bytes and
// decodes with a Sequence (a SentencePiece model converted by transformers),
// "llama" (llama.cpp's _set_vocab_llama_hf).
func fromTokenizerJSON(c *checkpoint, opt Options) (*Vocab, error) {
	t := c.tok
	name := c.dir + "/tokenizer.json"
	if t.Model.Type != "BPE" {
		return nil, fmt.Errorf("vocab: %s: unsupported tokenizer model %q: only BPE tokenizers convert (Unigram, WordPiece and WordLevel are not supported)", name, t.Model.Type)
	}
	llama3 := t.Model.IgnoreMerges && !t.Model.ByteFallback
	spm := !llama3 && t.Model.ByteFallback && typeOf(t.Decoder) == "Sequence"
	if spm && opt.Pre != "" {
		return nil, fmt.Errorf("vocab: %s: a pre-tokenizer (%q) applies to byte-level BPE only, not a byte-fallback (SentencePiece) BPE", name, opt.Pre)
	}

	added := map[int]hfAdded{}
	for _, a := range t.AddedTokens {
		added[int(a.ID)] = a
	}
	if err := c.addedTokensDecoder(added); err != nil {
		return nil, err
	}
	n := 0
	byID := map[int]string{}
	for s, id := range t.vocab {
		if prev, dup := byID[id]; dup {
			return nil, fmt.Errorf("vocab: %s: tokens %q and %q share id %d", name, prev, s, id)
		}
		byID[id] = s
		n = max(n, id+1)
	}
	for id := range added {
		n = max(n, id+1)
	}
	if c.vocabSize > 0 {
		if n > c.vocabSize {
			return nil, fmt.Errorf("vocab: %s: token id %d does not fit config.json's vocab_size %d", name, n-1, c.vocabSize)
		}
		n = c.vocabSize
	}
	if n == 0 {
		return nil, fmt.Errorf("vocab: %s: no tokens", name)
	}
	if err := checkPadding(n, len(byID)+len(added)); err != nil {
		return nil, fmt.Errorf("vocab: %s: %w", name, err)
	}

	v := &Vocab{Tokens: make([]string, n), Types: make([]int32, n)}
	for id := range n {
		s, inVocab := byID[id]
		a, isAdded := added[id]
		switch {
		case isAdded:
			v.Tokens[id], v.Types[id] = addedType(a.Content, a.Special)
		case !inVocab:
			v.Tokens[id], v.Types[id] = padName(id), TypeUnused
		case spm && isByteToken(s):
			v.Tokens[id], v.Types[id] = s, TypeByte
		case spm && t.Model.UnkToken != nil && s == *t.Model.UnkToken:
			v.Tokens[id], v.Types[id] = s, TypeUnknown
		default:
			v.Tokens[id], v.Types[id] = s, TypeNormal
		}
	}
	if spm {
		v.Model, v.Pre, v.PreFrom = "llama", "default", "fixed"
		v.Scores = mergeScores(v, t.merges, added)
		c.spacePrefix(v, true)
	} else {
		v.Model = "gpt2"
		if len(t.merges) == 0 {
			return nil, fmt.Errorf("vocab: %s: a byte-level BPE model without merges", name)
		}
		v.Merges = make([]string, len(t.merges))
		for i, m := range t.merges {
			v.Merges[i] = mergeString(m)
		}
	}
	if err := c.specialVocab(v); err != nil {
		return nil, err
	}
	if !spm {
		if err := identifyPre(v, t.PreTokenizer, opt.Pre); err != nil {
			return nil, fmt.Errorf("vocab: %s: %w", name, err)
		}
	}
	return v, nil
}

// mergeString writes a merge as gguf-py does: "a b", with a space inside a
// part written as U+0120 so the pair still splits at its one space.
func mergeString(m [2]string) string {
	enc := func(s string) string { return strings.ReplaceAll(s, " ", "\u0120") }
	return enc(m[0]) + " " + enc(m[1])
}

// mergeScores gives a byte-fallback BPE's tokens SentencePiece scores that
// merge in the same order: a token made by merges gets minus the rank of
// its first merge, so llama.cpp's SentencePiece tokenizer (which merges the
// adjacent pair whose joined token scores highest) follows the merge list.
// llama.cpp's _set_vocab_llama_hf scores every token -1000, which leaves
// the order to chance; merges are the only order a tokenizer.json records.
// Tokens no merge makes score 0 (single characters, bytes, specials: their
// score is never compared) or, if longer than a character, -1e9 (merged last,
// like SentencePiece's whitespace runs); added tokens -1000 as llama.cpp.
func mergeScores(v *Vocab, merges [][2]string, added map[int]hfAdded) []float32 {
	first := make(map[string]int, len(merges))
	for r, m := range merges {
		s := m[0] + m[1]
		if _, ok := first[s]; !ok {
			first[s] = r
		}
	}
	scores := make([]float32, len(v.Tokens))
	for id, s := range v.Tokens {
		_, isAdded := added[id]
		r, merged := first[s]
		switch {
		case isAdded:
			scores[id] = -1000
		case v.Types[id] == TypeUnused:
			scores[id] = -10000
		case merged:
			scores[id] = -float32(r + 1)
		case v.Types[id] == TypeNormal && utf8.RuneCountInString(s) > 1:
			scores[id] = -1e9
		}
	}
	return scores
}

var byteToken = regexp.MustCompile(`^<0x[0-9A-Fa-f]{2}>$`)

func isByteToken(s string) bool { return byteToken.MatchString(s) }

// addedType is the text and type llama.cpp gives an added token: control
// if marked special or if it looks special, else user-defined with
// SentencePiece's "▁" written as a space (llama.cpp expects user-defined
// tokens pre-normalized).
func addedType(content string, special bool) (string, int32) {
	if special || looksSpecial(content) {
		return content, TypeControl
	}
	return strings.ReplaceAll(content, "\u2581", " "), TypeUserDefined
}

// looksSpecial is llama.cpp's does_token_look_special: added tokens some
// models forget to mark special.
func looksSpecial(s string) bool {
	switch s {
	case "<pad>", "<mask>", "<2mass>", "[@BOS@]":
		return true
	}
	return strings.HasPrefix(s, "<|") && strings.HasSuffix(s, "|>") ||
		strings.HasPrefix(s, "<\uff5c") && strings.HasSuffix(s, "\uff5c>") ||
		strings.HasPrefix(s, "<unused") && strings.HasSuffix(s, ">")
}

// addedTokensDecoder adds tokenizer_config.json's added_tokens_decoder
// ({"id": {"content": ..., "special": ...}}) to added, overriding
// tokenizer.json's entry for the same id as transformers does.
func (c *checkpoint) addedTokensDecoder(added map[int]hfAdded) error {
	raw, ok := c.tokConfig["added_tokens_decoder"]
	if !ok {
		return nil
	}
	m, ok := raw.(map[string]any)
	if !ok {
		return fmt.Errorf("vocab: %s/tokenizer_config.json: added_tokens_decoder is not an object", c.dir)
	}
	for k, e := range m {
		id, err := strconv.Atoi(k)
		if err != nil || id < 0 || id >= maxTokens {
			return fmt.Errorf("vocab: %s/tokenizer_config.json: added_tokens_decoder: bad id %q", c.dir, k)
		}
		o, _ := e.(map[string]any)
		content, ok := o["content"].(string)
		if !ok {
			return fmt.Errorf("vocab: %s/tokenizer_config.json: added_tokens_decoder[%s]: no content", c.dir, k)
		}
		special, _ := o["special"].(bool)
		added[id] = hfAdded{ID: int64(id), Content: content, Special: special}
	}
	return nil
}
