// Package tokenizer turns text into token ids and token ids back into text,
// the way llama.cpp does for the vocabularies stored in GGUF metadata:
// SentencePiece-style BPE with scores (tokenizer.ggml.model "llama"),
// byte-level BPE with merges and a pre-tokenizer chosen by
// tokenizer.ggml.pre ("gpt2"), and no vocabulary at all ("none"). It also
// reads llama2.c's tokenizer.bin.
//
// It owns special tokens (BOS/EOS, control and user-defined tokens, the
// end-of-generation set, which llama.cpp decides by token text: Gemma's
// <end_of_turn>, ChatML's <|im_end|>, Llama 3's <|eot_id|> and <|eom_id|>...)
// and decoding to bytes that never splits a UTF-8 sequence. It must not know
// about model weights, backends or sampling.
package tokenizer

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/edgellm/edgellm/gguf"
)

// kind is the vocabulary's algorithm (llama.cpp's llama_vocab_type).
type kind int

const (
	kindNone kind = iota // token ids only, no text
	kindSPM              // SentencePiece BPE with scores
	kindBPE              // byte-level BPE with merges
)

// attr holds a token's attributes (llama.cpp's llama_token_attr bits).
type attr uint16

const (
	attrUnknown attr = 1 << iota
	attrUnused
	attrNormal
	attrControl
	attrUserDefined
	attrByte
	attrLStrip
	attrRStrip
)

// GGUF token types (tokenizer.ggml.token_type).
const (
	typeNormal      = 1
	typeUnknown     = 2
	typeControl     = 3
	typeUserDefined = 4
	typeUnused      = 5
	typeByte        = 6
)

// maxTokens bounds the vocabulary size so a hostile file cannot make us
// allocate per-token tables of arbitrary size.
const maxTokens = 1 << 24

// none marks a special token id that the vocabulary does not have.
const none int32 = -1

// Tokenizer encodes and decodes text for one vocabulary. It is safe for
// concurrent use once built.
type Tokenizer struct {
	kind   kind
	pre    string // pre-tokenizer name as resolved (BPE only)
	tokens []string
	scores []float32
	attrs  []attr
	toID   map[string]int32
	ranks  map[mergePair]int32 // BPE merges: pair -> rank
	split  *splitter           // BPE pre-tokenizer
	pieces [][]byte            // decoded bytes per token, special tokens rendered
	// special lists control, user-defined and unknown tokens, longest text
	// first: the order in which llama.cpp cuts them out of the text.
	special []int32
	eog     map[int32]bool

	bos, eos, unk, eot, eom int32

	addBOS, addEOS bool
	addSpacePrefix bool
	ignoreMerges   bool
	cleanSpaces    bool
	vocabSize      int // kindNone only
}

// metadata is the part of *gguf.File the tokenizer reads; keeping it an
// interface lets tests build vocabularies without writing files.
type metadata interface {
	Has(key string) bool
	String(key string) (string, error)
	Uint(key string) (uint64, error)
	Bool(key string) (bool, error)
	Strings(key string) ([]string, error)
	Float32s(key string) ([]float32, error)
	Int32s(key string) ([]int32, error)
}

// Metadata keys read from GGUF.
const (
	keyModel          = "tokenizer.ggml.model"
	keyPre            = "tokenizer.ggml.pre"
	keyTokens         = "tokenizer.ggml.tokens"
	keyScores         = "tokenizer.ggml.scores"
	keyTokenType      = "tokenizer.ggml.token_type"
	keyMerges         = "tokenizer.ggml.merges"
	keyAddBOS         = "tokenizer.ggml.add_bos_token"
	keyAddEOS         = "tokenizer.ggml.add_eos_token"
	keyAddSpacePrefix = "tokenizer.ggml.add_space_prefix"
	keyEOSIDs         = "tokenizer.ggml.eos_token_ids"
	keyArch           = "general.architecture"
	keyName           = "general.name"
)

// FromGGUF builds the tokenizer described by a GGUF file's metadata.
func FromGGUF(f *gguf.File) (*Tokenizer, error) {
	if f == nil {
		return nil, errors.New("tokenizer: nil GGUF file")
	}
	return fromMetadata(f)
}

func fromMetadata(md metadata) (*Tokenizer, error) {
	model, err := md.String(keyModel)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	t := &Tokenizer{bos: none, eos: none, unk: none, eot: none, eom: none}
	switch model {
	case "none", "no_vocab":
		return loadNone(md)
	case "llama":
		t.kind = kindSPM
		t.bos, t.eos, t.unk = 1, 2, 0
		t.addSpacePrefix, t.addBOS = true, true
	case "gpt2":
		t.kind = kindBPE
		t.bos, t.eos = 11, 11
		t.cleanSpaces = true
		pre := "default"
		if md.Has(keyPre) {
			if pre, err = md.String(keyPre); err != nil {
				return nil, fmt.Errorf("tokenizer: %w", err)
			}
		}
		spec, err := lookupPre(pre)
		if err != nil {
			return nil, err
		}
		t.pre = pre
		t.ignoreMerges = spec.ignoreMerges
		t.addBOS = spec.addBOS
		t.cleanSpaces = !spec.keepSpaces
		if spec.noBOS {
			t.bos = none
		}
		if t.split, err = newSplitter(spec.exprs); err != nil {
			return nil, fmt.Errorf("tokenizer: pre-tokenizer %q: %w", pre, err)
		}
	default:
		return nil, fmt.Errorf("tokenizer: unsupported tokenizer model %q (want llama, gpt2 or none)", model)
	}
	if err := t.loadTokens(md); err != nil {
		return nil, err
	}
	if t.kind == kindBPE {
		if err := t.loadMerges(md); err != nil {
			return nil, err
		}
	}
	if err := t.loadFlags(md); err != nil {
		return nil, err
	}
	t.finish(md)
	return t, nil
}

func loadNone(md metadata) (*Tokenizer, error) {
	arch, err := md.String(keyArch)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: model without vocabulary: %w", err)
	}
	n, err := md.Uint(arch + ".vocab_size")
	if err != nil {
		return nil, fmt.Errorf("tokenizer: model without vocabulary: %w", err)
	}
	if n == 0 || n > maxTokens {
		return nil, fmt.Errorf("tokenizer: %s.vocab_size = %d out of range", arch, n)
	}
	return &Tokenizer{kind: kindNone, vocabSize: int(n), bos: none, eos: none, unk: none, eot: none, eom: none}, nil
}

func (t *Tokenizer) loadTokens(md metadata) error {
	tokens, err := md.Strings(keyTokens)
	if err != nil {
		return fmt.Errorf("tokenizer: %w", err)
	}
	n := len(tokens)
	if n == 0 || n > maxTokens {
		return fmt.Errorf("tokenizer: %s has %d tokens", keyTokens, n)
	}
	scores := make([]float32, n)
	if md.Has(keyScores) {
		s, err := md.Float32s(keyScores)
		if err != nil {
			return fmt.Errorf("tokenizer: %w", err)
		}
		if len(s) != n {
			return fmt.Errorf("tokenizer: %s has %d entries for %d tokens", keyScores, len(s), n)
		}
		copy(scores, s)
	}
	attrs := make([]attr, n)
	for i := range attrs {
		attrs[i] = attrNormal
	}
	if md.Has(keyTokenType) {
		types, err := md.Int32s(keyTokenType)
		if err != nil {
			return fmt.Errorf("tokenizer: %w", err)
		}
		if len(types) != n {
			return fmt.Errorf("tokenizer: %s has %d entries for %d tokens", keyTokenType, len(types), n)
		}
		for i, ty := range types {
			attrs[i] = attrFromType(ty)
		}
	}
	t.setVocab(tokens, scores, attrs)
	return nil
}

func attrFromType(ty int32) attr {
	switch ty {
	case typeNormal:
		return attrNormal
	case typeUnknown:
		return attrUnknown
	case typeControl:
		return attrControl
	case typeUserDefined:
		return attrUserDefined
	case typeUnused:
		return attrUnused
	case typeByte:
		return attrByte
	}
	return 0 // undefined
}

// setVocab installs the token table. As in llama.cpp an empty token gets a
// placeholder text and a repeated text maps to its last id.
func (t *Tokenizer) setVocab(tokens []string, scores []float32, attrs []attr) {
	t.tokens = make([]string, len(tokens))
	t.toID = make(map[string]int32, len(tokens))
	for i, s := range tokens {
		if s == "" {
			s = "[EMPTY_" + strconv.Itoa(i) + "]"
		}
		t.tokens[i] = s
		t.toID[s] = int32(i)
	}
	t.scores, t.attrs = scores, attrs
}

func (t *Tokenizer) loadMerges(md metadata) error {
	merges, err := md.Strings(keyMerges)
	if err != nil {
		return fmt.Errorf("tokenizer: gpt2 vocabulary needs merges: %w", err)
	}
	t.ranks = make(map[mergePair]int32, len(merges))
	for i, m := range merges {
		// Split at the first space after the first byte, so a merge whose
		// left part starts with a space still parses (llama.cpp does the same).
		if len(m) < 2 {
			continue
		}
		j := strings.IndexByte(m[1:], ' ')
		if j < 0 {
			continue
		}
		p := mergePair{m[:j+1], m[j+2:]}
		if _, dup := t.ranks[p]; !dup {
			t.ranks[p] = int32(i)
		}
	}
	return nil
}

// specialKeys are the GGUF keys naming special token ids, with the field
// each one sets. Ids outside the vocabulary are ignored, as llama.cpp does.
var specialKeys = []struct {
	key string
	dst func(t *Tokenizer) *int32
}{
	{"tokenizer.ggml.bos_token_id", func(t *Tokenizer) *int32 { return &t.bos }},
	{"tokenizer.ggml.eos_token_id", func(t *Tokenizer) *int32 { return &t.eos }},
	{"tokenizer.ggml.eot_token_id", func(t *Tokenizer) *int32 { return &t.eot }},
	{"tokenizer.ggml.eom_token_id", func(t *Tokenizer) *int32 { return &t.eom }},
	{"tokenizer.ggml.unknown_token_id", func(t *Tokenizer) *int32 { return &t.unk }},
}

func (t *Tokenizer) loadFlags(md metadata) error {
	n := uint64(len(t.tokens))
	for _, k := range specialKeys {
		if !md.Has(k.key) {
			continue
		}
		id, err := md.Uint(k.key)
		if err != nil {
			return fmt.Errorf("tokenizer: %w", err)
		}
		if id < n {
			*k.dst(t) = int32(id)
		}
	}
	for _, b := range []struct {
		key string
		dst *bool
	}{{keyAddBOS, &t.addBOS}, {keyAddEOS, &t.addEOS}, {keyAddSpacePrefix, &t.addSpacePrefix}} {
		if !md.Has(b.key) {
			continue
		}
		v, err := md.Bool(b.key)
		if err != nil {
			return fmt.Errorf("tokenizer: %w", err)
		}
		*b.dst = v
	}
	return nil
}

// The token texts below are llama.cpp's (llama_vocab::impl::load at the
// peer commit 57b50e1f6): which tokens end a turn or generation is decided by
// text, as converters do not mark it.

// eotTexts are taken as the end-of-turn token when
// tokenizer.ggml.eot_token_id is absent.
var eotTexts = []string{
	"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
	"<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>",
}

// eogTexts end generation.
var eogTexts = []string{
	"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
	"<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
	"<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>",
}

// fimTokens are the fill-in-the-middle tokens, found by key or else by
// text; pad, repo and file separator also end generation.
var fimTokens = []struct {
	keys  []string // later keys win, as in llama.cpp's list of keys
	texts []string
	eog   bool
}{
	{[]string{"tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.prefix_token_id"},
		[]string{"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>", "<|prefix|>"}, false},
	{[]string{"tokenizer.ggml.fim_suf_token_id", "tokenizer.ggml.suffix_token_id"},
		[]string{"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>"}, false},
	{[]string{"tokenizer.ggml.fim_mid_token_id", "tokenizer.ggml.middle_token_id"},
		[]string{"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>", "<|middle|>"}, false},
	{[]string{"tokenizer.ggml.fim_pad_token_id"}, []string{"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"}, true},
	{[]string{"tokenizer.ggml.fim_rep_token_id"}, []string{"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"}, true},
	{[]string{"tokenizer.ggml.fim_sep_token_id"}, []string{"<|file_sep|>"}, true},
}

// finish derives what llama.cpp derives after loading: EOT/EOM and FIM
// tokens by text, the end-of-generation set, model-specific attribute fixes,
// the special-token list and the piece cache.
func (t *Tokenizer) finish(md metadata) {
	n := int32(len(t.tokens))
	valid := func(id int32) bool { return id >= 0 && id < n }
	for _, p := range []*int32{&t.bos, &t.eos, &t.unk} {
		if !valid(*p) {
			*p = none
		}
	}
	// first (lowest id) match wins; llama.cpp's pick among several is unspecified
	byText := func(texts []string) int32 {
		best := none
		for _, s := range texts {
			if id, ok := t.toID[s]; ok && (best == none || id < best) {
				best = id
			}
		}
		return best
	}
	// A token found by its text is a control token whatever the file says.
	markControl := func(id int32) { t.attrs[id] |= attrControl }
	if t.eot == none {
		if t.eot = byText(eotTexts); t.eot != none {
			markControl(t.eot)
		}
	}
	if t.eom == none {
		if t.eom = byText([]string{"<|eom_id|>"}); t.eom != none {
			markControl(t.eom)
		}
	}
	t.eog = map[int32]bool{}
	for _, fim := range fimTokens {
		id := none
		for _, k := range fim.keys {
			if md != nil && md.Has(k) {
				if v, err := md.Uint(k); err == nil && v < uint64(n) {
					id = int32(v)
				}
			}
		}
		if id == none {
			if id = byText(fim.texts); id != none {
				markControl(id)
			}
		}
		if id != none && fim.eog {
			t.eog[id] = true
		}
	}
	for _, s := range eogTexts {
		if id, ok := t.toID[s]; ok {
			t.eog[id] = true
			markControl(id)
		}
	}
	for _, id := range []int32{t.eos, t.eot, t.eom} {
		if id != none {
			t.eog[id] = true
		}
	}
	// generation_config.json's list of EOS ids, as Ollama's converter
	// writes it (llama.cpp does not read the key)
	if md != nil && md.Has(keyEOSIDs) {
		if ids, err := md.Int32s(keyEOSIDs); err == nil {
			for _, id := range ids {
				if valid(id) {
					t.eog[id] = true
				}
			}
		}
	}
	t.eogExceptions()

	for id, a := range t.attrs {
		if a&(attrControl|attrUserDefined|attrUnknown) != 0 {
			t.special = append(t.special, int32(id))
		}
	}
	sort.SliceStable(t.special, func(i, j int) bool {
		return len(t.tokens[t.special[i]]) > len(t.tokens[t.special[j]])
	})

	// Phi-3's special tokens swallow the whitespace after them, except
	// <unk>, <s> and <|endoftext|> (llama.cpp keys this on general.name).
	if md != nil {
		name, _ := md.String(keyName)
		name = strings.ToLower(name)
		if strings.Contains(name, "phi-3") || strings.Contains(name, "phi3") {
			for _, id := range t.special {
				t.attrs[id] |= attrRStrip
			}
			if id, ok := t.toID["</s>"]; ok {
				t.attrs[id] |= attrRStrip
			}
			for _, s := range []string{"<unk>", "<s>", "<|endoftext|>"} {
				if id, ok := t.toID[s]; ok {
					t.attrs[id] &^= attrRStrip
				}
			}
		}
	}

	t.pieces = make([][]byte, n)
	for id := range t.pieces {
		t.pieces[id] = t.renderPiece(int32(id))
	}
}

// eogExceptions are llama.cpp's two vocabularies where a text in eogTexts
// is not an end: gpt-oss's and Solar Open's <|end|> (it ends a message, not
// the answer; <|return|>/<|call|> or <|calls|>/<|flush|> do) becomes a
// user-defined token, and Gemma 4's and PaddleOCR's </s> (next to
// <|tool_response>) a normal one.
func (t *Tokenizer) eogExceptions() {
	inEOG := func(s string) (int32, bool) {
		id, ok := t.toID[s]
		return id, ok && t.eog[id]
	}
	_, ret := inEOG("<|return|>")
	_, call := inEOG("<|call|>")
	_, calls := inEOG("<|calls|>")
	_, flush := inEOG("<|flush|>")
	call = call || calls
	if end, ok := inEOG("<|end|>"); ok && call && (ret || flush) {
		delete(t.eog, end)
		t.attrs[end] = attrUserDefined
	}
	if _, ok := inEOG("<|tool_response>"); ok {
		if s, ok := inEOG("</s>"); ok {
			delete(t.eog, s)
			t.attrs[s] = attrNormal
		}
	}
}

// VocabSize is the number of token ids.
func (t *Tokenizer) VocabSize() int {
	if t.kind == kindNone {
		return t.vocabSize
	}
	return len(t.tokens)
}

// BOS is the beginning-of-sequence id, or -1 if the vocabulary has none.
func (t *Tokenizer) BOS() int32 { return t.bos }

// EOS is the end-of-sequence id, or -1 if the vocabulary has none.
func (t *Tokenizer) EOS() int32 { return t.eos }

// EOT is the end-of-turn id, or -1 if the vocabulary has none.
func (t *Tokenizer) EOT() int32 { return t.eot }

// AddBOS reports whether Encode with addSpecial prepends BOS.
func (t *Tokenizer) AddBOS() bool { return t.addBOS && t.bos != none }

// AddEOS reports whether Encode with addSpecial appends EOS.
func (t *Tokenizer) AddEOS() bool { return t.addEOS && t.eos != none }

// IsEOG reports whether generating id should end generation: EOS, EOT, EOM
// and the tokens llama.cpp recognises by text (<|eot_id|>, <|im_end|>, ...).
func (t *Tokenizer) IsEOG(id int32) bool { return t.eog[id] }

// Model names the tokenizer algorithm: "llama", "gpt2" or "none".
func (t *Tokenizer) Model() string {
	switch t.kind {
	case kindSPM:
		return "llama"
	case kindBPE:
		return "gpt2"
	}
	return "none"
}

// Pre names the pre-tokenizer of a gpt2 vocabulary ("default" when the
// file names none); empty for other models.
func (t *Tokenizer) Pre() string { return t.pre }

// Token is a token's text as stored in the vocabulary ("" if out of range).
func (t *Tokenizer) Token(id int32) string {
	if id < 0 || int(id) >= len(t.tokens) {
		return ""
	}
	return t.tokens[id]
}

// IsControl reports whether id is a control token (BOS, EOS, <|im_end|>...).
func (t *Tokenizer) IsControl(id int32) bool {
	return id >= 0 && int(id) < len(t.attrs) && t.attrs[id]&attrControl != 0
}
