// Package vocab reads the tokenizer of a Hugging Face checkpoint
// (tokenizer.json or tokenizer.model, with tokenizer_config.json,
// generation_config.json and config.json) or a llama2.c tokenizer file, and
// writes it as the tokenizer.ggml.* metadata that llama.cpp's converters
// (convert_hf_to_gguf.py, convert-llama2c-to-ggml) write, so the file
// tokenizes alike in llama.cpp and in package tokenizer.
//
// It owns the conversion of vocabularies only: no weights, no tokenizing of
// its own (it asks package tokenizer to tokenize llama.cpp's check text when
// it identifies a byte-level BPE pre-tokenizer).
package vocab

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/edgellm/edgellm/gguf"
)

// Token types (tokenizer.ggml.token_type), as llama.cpp numbers them.
const (
	TypeNormal      int32 = 1
	TypeUnknown     int32 = 2
	TypeControl     int32 = 3
	TypeUserDefined int32 = 4
	TypeUnused      int32 = 5
	TypeByte        int32 = 6
)

// maxTokens bounds a vocabulary (package tokenizer's bound too), so a
// hostile vocab_size or token id cannot make us allocate without end.
const maxTokens = 1 << 24

// maxFileBytes bounds each JSON or protobuf file read (Llama 3's
// tokenizer.json is 9 MB); a variable so tests can lower it.
var maxFileBytes int64 = 256 << 20

// NullID is written for a special token the vocabulary names as absent
// (llama.cpp's LLAMA_TOKEN_NULL as uint32, as convert-llama2c-to-ggml does).
const NullID int32 = -1

// Vocab is a vocabulary ready to be written as GGUF metadata.
type Vocab struct {
	Model string // tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece)
	// Pre is tokenizer.ggml.pre ("" writes no key); PreFrom says how it was
	// found: "hash" (llama.cpp's chkhsh table), "regex" (the
	// tokenizer.json pre_tokenizer), "forced" (Options.Pre) or "fixed"
	// (SentencePiece: always "default").
	Pre, PreFrom string

	Tokens []string
	Types  []int32
	Scores []float32 // SentencePiece only
	Merges []string  // byte-level BPE only

	// Special token ids by kind: "bos", "eos", "unk", "sep", "pad", "mask",
	// "eot", "eom". NullID is written as 0xFFFFFFFF.
	Special map[string]int32
	// AddToken holds add_bos_token, add_eos_token and add_sep_token where
	// the checkpoint says.
	AddToken       map[string]bool
	AddSpacePrefix *bool
	// EOSIDs are generation_config.json's end-of-sequence ids when it lists
	// several: written as tokenizer.ggml.eos_token_ids (Ollama's key).
	EOSIDs []int32

	ChatTemplate string
	// ChatTemplates are named alternatives (tokenizer.chat_template.NAME).
	ChatTemplates map[string]string

	NormalizerLowercase, NormalizerStripAccents *bool
}

// Options change how Load identifies the tokenizer.
type Options struct {
	// Pre forces tokenizer.ggml.pre for a byte-level BPE tokenizer.json
	// instead of identifying it (it must be a name package tokenizer knows).
	Pre string
}

// Load reads the tokenizer of a Hugging Face checkpoint folder: tokenizer.json, else
// tokenizer.model (SentencePiece protobuf), plus tokenizer_config.json (chat_template, special
// tokens, add_bos/add_eos), generation_config.json (eos_token_id: int or list), config.json
// (bos/eos fallbacks, vocab_size: pad the vocabulary to it with [PAD{id}] tokens as llama.cpp does).
//
// As llama.cpp's Llama converter, a tokenizer.model is read first where
// both are present; a tokenizer.json whose BPE model has byte_fallback is a
// SentencePiece-style vocabulary ("llama") too.
func Load(dir string) (*Vocab, error) { return LoadOptions(dir, Options{}) }

// LoadOptions is Load with options.
func LoadOptions(dir string, opt Options) (*Vocab, error) {
	c, err := readCheckpoint(dir)
	if err != nil {
		return nil, err
	}
	var v *Vocab
	switch {
	case c.spModel != nil:
		if opt.Pre != "" {
			return nil, fmt.Errorf("vocab: %s: a pre-tokenizer (%q) applies to byte-level BPE only, not tokenizer.model", dir, opt.Pre)
		}
		v, err = fromSentencePiece(c)
	case c.tok != nil:
		v, err = fromTokenizerJSON(c, opt)
	default:
		if _, err := os.Stat(filepath.Join(dir, "tekken.json")); err == nil {
			return nil, fmt.Errorf("vocab: %s: Mistral's tekken.json is not supported (no tokenizer.json or tokenizer.model)", dir)
		}
		return nil, fmt.Errorf("vocab: %s: no tokenizer.json or tokenizer.model", dir)
	}
	if err != nil {
		return nil, err
	}
	return v, nil
}

// checkpoint is what Load reads from a folder.
type checkpoint struct {
	dir       string
	tok       *hfTokenizer   // tokenizer.json
	spModel   *spModel       // tokenizer.model
	tokConfig map[string]any // tokenizer_config.json
	config    map[string]any // config.json
	genConfig map[string]any // generation_config.json
	addedJSON map[string]any // added_tokens.json
	vocabSize int            // config.json vocab_size, 0 if absent
}

func readCheckpoint(dir string) (*checkpoint, error) {
	c := &checkpoint{dir: dir}
	var err error
	for _, f := range []struct {
		name string
		dst  *map[string]any
	}{
		{"tokenizer_config.json", &c.tokConfig},
		{"config.json", &c.config},
		{"generation_config.json", &c.genConfig},
		{"added_tokens.json", &c.addedJSON},
	} {
		if *f.dst, err = readJSONObject(dir, f.name); err != nil {
			return nil, err
		}
	}
	if c.vocabSize, err = configVocabSize(c.config); err != nil {
		return nil, fmt.Errorf("vocab: %s: %w", filepath.Join(dir, "config.json"), err)
	}
	if b, err := readOptional(dir, "tokenizer.model"); err != nil {
		return nil, err
	} else if b != nil {
		if c.spModel, err = parseSentencePiece(b); err != nil {
			return nil, fmt.Errorf("vocab: %s: %w", filepath.Join(dir, "tokenizer.model"), err)
		}
	}
	if b, err := readOptional(dir, "tokenizer.json"); err != nil {
		return nil, err
	} else if b != nil {
		if c.tok, err = parseTokenizerJSON(b); err != nil {
			return nil, fmt.Errorf("vocab: %s: %w", filepath.Join(dir, "tokenizer.json"), err)
		}
	}
	return c, nil
}

// configVocabSize reads config.json's vocab_size (or text_config's, for
// multimodal checkpoints).
func configVocabSize(cfg map[string]any) (int, error) {
	v, ok := cfg["vocab_size"]
	if !ok {
		if tc, isObj := cfg["text_config"].(map[string]any); isObj {
			v, ok = tc["vocab_size"]
		}
	}
	if !ok || v == nil {
		return 0, nil
	}
	n, isInt := jsonInt(v)
	if !isInt || n <= 0 || n > maxTokens {
		return 0, fmt.Errorf("vocab_size %v: want an integer from 1 to %d", v, maxTokens)
	}
	return int(n), nil
}

// readOptional reads dir/name, nil if absent, refusing files over
// maxFileBytes.
func readOptional(dir, name string) ([]byte, error) {
	p := filepath.Join(dir, name)
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("vocab: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("vocab: %s: %w", p, err)
	}
	if int64(len(b)) > maxFileBytes {
		return nil, fmt.Errorf("vocab: %s: larger than %d bytes", p, maxFileBytes)
	}
	return b, nil
}

// readJSONObject reads dir/name as a JSON object, nil if the file is
// absent.
func readJSONObject(dir, name string) (map[string]any, error) {
	b, err := readOptional(dir, name)
	if err != nil || b == nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("vocab: %s: %w", filepath.Join(dir, name), err)
	}
	if m == nil {
		return nil, fmt.Errorf("vocab: %s: not a JSON object", filepath.Join(dir, name))
	}
	return m, nil
}

// jsonInt is a JSON number (decoded as float64) that is a whole number.
func jsonInt(v any) (int64, bool) {
	f, ok := v.(float64)
	if !ok || f != float64(int64(f)) {
		return 0, false
	}
	return int64(f), true
}

// specialKinds are the special token kinds in the order keys are written,
// with their GGUF key (gguf-py's names, "seperator" misspelt as upstream).
var specialKinds = []struct{ kind, key string }{
	{"bos", "tokenizer.ggml.bos_token_id"},
	{"eos", "tokenizer.ggml.eos_token_id"},
	{"unk", "tokenizer.ggml.unknown_token_id"},
	{"sep", "tokenizer.ggml.seperator_token_id"},
	{"pad", "tokenizer.ggml.padding_token_id"},
	{"mask", "tokenizer.ggml.mask_token_id"},
	{"eot", "tokenizer.ggml.eot_token_id"},
	{"eom", "tokenizer.ggml.eom_token_id"},
}

// Write adds every tokenizer.ggml.* key (model, pre, tokens, token_type, scores, merges, bos/eos/
// unk/pad/sep ids, add_bos_token/add_eos_token, ...) and tokenizer.chat_template, with the key
// names and value types llama.cpp's gguf-py writes.
func (v *Vocab) Write(w *gguf.Writer) {
	w.AddString("tokenizer.ggml.model", v.Model)
	if v.Pre != "" {
		w.AddString("tokenizer.ggml.pre", v.Pre)
	}
	w.AddStrings("tokenizer.ggml.tokens", v.Tokens)
	if v.Scores != nil {
		w.AddFloat32s("tokenizer.ggml.scores", v.Scores)
	}
	w.AddInt32s("tokenizer.ggml.token_type", v.Types)
	if len(v.Merges) > 0 {
		w.AddStrings("tokenizer.ggml.merges", v.Merges)
	}
	for _, k := range specialKinds {
		if id, ok := v.Special[k.kind]; ok {
			w.AddUint32(k.key, uint32(id)) // NullID becomes 0xFFFFFFFF
		}
	}
	for _, k := range []string{"bos", "eos", "sep"} {
		if b, ok := v.AddToken[k]; ok {
			w.AddBool("tokenizer.ggml.add_"+k+"_token", b)
		}
	}
	if v.AddSpacePrefix != nil {
		w.AddBool("tokenizer.ggml.add_space_prefix", *v.AddSpacePrefix)
	}
	if len(v.EOSIDs) > 0 {
		w.AddInt32s("tokenizer.ggml.eos_token_ids", v.EOSIDs)
	}
	if len(v.ChatTemplates) > 0 {
		names := make([]string, 0, len(v.ChatTemplates))
		for n := range v.ChatTemplates {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			w.AddString("tokenizer.chat_template."+n, v.ChatTemplates[n])
		}
		w.AddStrings("tokenizer.chat_templates", names)
	}
	if v.ChatTemplate != "" {
		w.AddString("tokenizer.chat_template", v.ChatTemplate)
	}
	if v.NormalizerLowercase != nil {
		w.AddBool("tokenizer.ggml.normalizer.lowercase", *v.NormalizerLowercase)
	}
	if v.NormalizerStripAccents != nil {
		w.AddBool("tokenizer.ggml.normalizer.strip_accents", *v.NormalizerStripAccents)
	}
}

// maxPadding bounds the "[PAD{id}]" tokens a vocabulary may need beyond
// its own: real checkpoints pad by up to a few thousand ids (Phi-3: 53,
// Qwen2: 271), and a small hostile file must not make us write millions.
func checkPadding(size, have int) error {
	if size-have > have+1<<16 {
		return fmt.Errorf("%d ids for %d tokens: too many to pad", size, have)
	}
	return nil
}

// padName is llama.cpp's text for an id the tokenizer leaves empty.
func padName(id int) string { return "[PAD" + strconv.Itoa(id) + "]" }
