package vocab

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/tokenizer"
)

// chktxt is llama.cpp's check text (get_vocab_base_pre in
// convert_hf_to_gguf.py): its token ids identify a pre-tokenizer. Written
// with escapes so no editor normalizes it.
const chktxt = "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\U0001f680 (normal) \U0001f636\u200d\U0001f32b\ufe0f (multiple emojis concatenated) \u2705 \U0001f999\U0001f999 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 \u1780\u17b6\u1793\u17cb\u178f\u17c2\u1796\u17b7\u179f\u17c1\u179f\u17a2\u17b6\u1785\U0001f601 ?\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e ------======= \u043d\u0435\u0449\u043e \u043d\u0430 \u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a\u0438 ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"

// How a byte-level BPE pre-tokenizer is identified, where llama.cpp
// tokenizes chktxt with the Hugging Face tokenizer and looks up the sha256
// of the ids (as Python's str(list)) in its table: we tokenize chktxt with
// our own tokenizer, once per behaviour it implements (tokenizer.PreClass),
// the guess from tokenizer.json's pre_tokenizer first, and accept the name
// llama.cpp's table gives that hash if it has the behaviour we tokenized
// with. Our tokenizer follows llama.cpp's, so a name found so is the one
// llama.cpp's converter writes. Where no hash matches (a vocabulary llama.cpp
// does not list), the pre_tokenizer's pattern decides if it is one we know
// (preByPattern); else it is an error naming the tokenizer, which
// Options.Pre can override.
func identifyPre(v *Vocab, hfPre json.RawMessage, forced string) error {
	if forced != "" {
		if tokenizer.PreClass(forced) == "" {
			return fmt.Errorf("pre-tokenizer %q is not one package tokenizer implements (%s)", forced, strings.Join(tokenizer.PreTokenizers(), ", "))
		}
		if _, err := chkHash(v, forced); err != nil {
			return err
		}
		v.Pre, v.PreFrom = forced, "forced"
		return nil
	}
	sig := preSignature(hfPre, 0)
	guess := preByPattern[sig]
	candidates := []string{}
	if guess != "" {
		candidates = append(candidates, guess)
	}
	candidates = append(candidates, chkhshOrder()...)
	tried := map[string]bool{}
	var unsupported []string
	var firstErr error
	for _, name := range candidates {
		class := tokenizer.PreClass(name)
		if class == "" || tried[class] {
			continue
		}
		tried[class] = true
		h, err := chkHash(v, name)
		if err != nil {
			// e.g. a name whose default adds a BOS the vocabulary lacks
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		m, ok := chkhshNames[h]
		if ok && tokenizer.PreClass(m) == class {
			v.Pre, v.PreFrom = m, "hash"
			return nil
		}
		if ok && tokenizer.PreClass(m) == "" {
			unsupported = append(unsupported, m)
		}
	}
	if guess != "" {
		v.Pre, v.PreFrom = guess, "regex"
		return nil
	}
	if sig == "" {
		sig = "none"
	}
	msg := fmt.Sprintf("unknown byte-level BPE pre-tokenizer: llama.cpp's check text tokenizes to no hash of llama.cpp's table with any pre-tokenizer package tokenizer implements, and the pre_tokenizer (%s) is no pattern we know", sig)
	if len(unsupported) > 0 {
		msg += fmt.Sprintf(" (llama.cpp's table names %s, which package tokenizer does not implement)", strings.Join(unsupported, ", "))
	}
	if firstErr != nil {
		msg += fmt.Sprintf(" (%v)", firstErr)
	}
	return fmt.Errorf("%s; the converter's pre-tokenizer option forces a name", msg)
}

// chkHash is llama.cpp's chkhsh of v tokenized with pre-tokenizer name:
// v written to an in-memory GGUF, read back by package tokenizer (what a
// converted file will do), chktxt encoded with the special tokens the
// vocabulary adds, sha256 of the ids as Python prints a list.
func chkHash(v *Vocab, name string) (string, error) {
	saved := v.Pre
	v.Pre = name
	w := gguf.NewWriter()
	v.Write(w)
	v.Pre = saved
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		return "", err
	}
	f, err := gguf.Parse(buf.Bytes())
	if err != nil {
		return "", err
	}
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		return "", fmt.Errorf("pre-tokenizer %q: %w", name, err)
	}
	ids, err := tok.Encode(chktxt, true, true)
	if err != nil {
		return "", fmt.Errorf("pre-tokenizer %q: %w", name, err)
	}
	return pyListHash(ids), nil
}

// pyListHash is sha256(str(ids).encode()).hexdigest() in Python.
func pyListHash(ids []int32) string {
	var sb strings.Builder
	sb.WriteByte('[')
	for i, id := range ids {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(strconv.Itoa(int(id)))
	}
	sb.WriteByte(']')
	sum := sha256.Sum256([]byte(sb.String()))
	return hex.EncodeToString(sum[:])
}

// chkhshOrder lists the table's names, each once, in the table's order.
func chkhshOrder() []string {
	var names []string
	seen := map[string]bool{}
	for _, e := range chkhshTable {
		if !seen[e.name] {
			seen[e.name] = true
			names = append(names, e.name)
		}
	}
	return names
}

// Hugging Face's pre-tokenizer regexes of the families the issue names,
// as tokenizer.json holds them.
const (
	hfLlama3 = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	hfQwen2  = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// preByPattern maps a tokenizer.json pre_tokenizer (as preSignature writes
// it) to the pre-tokenizer name with the same splitting, for vocabularies
// whose hash llama.cpp does not list.
var preByPattern = map[string]string{
	"ByteLevel":                    "gpt-2",
	"Split(" + hfLlama3 + ")":      "llama-bpe",
	"Split(" + hfQwen2 + ")":       "qwen2",
	"Digits(individual),ByteLevel": "starcoder",
}

// preSignature writes a pre_tokenizer's splitting steps: "ByteLevel" (with
// its regex), "Split(REGEX)", "Digits(individual)"..., comma-separated; a
// ByteLevel without its regex only maps bytes and writes nothing.
func preSignature(raw json.RawMessage, depth int) string {
	var p struct {
		Type          string            `json:"type"`
		UseRegex      *bool             `json:"use_regex"`
		Individual    bool              `json:"individual_digits"`
		Pretokenizers []json.RawMessage `json:"pretokenizers"`
		Pattern       struct {
			Regex  *string `json:"Regex"`
			String *string `json:"String"`
		} `json:"pattern"`
	}
	if depth > 8 || len(raw) == 0 || json.Unmarshal(raw, &p) != nil {
		return ""
	}
	switch p.Type {
	case "ByteLevel":
		if p.UseRegex != nil && !*p.UseRegex {
			return ""
		}
		return "ByteLevel"
	case "Split":
		switch {
		case p.Pattern.Regex != nil:
			return "Split(" + *p.Pattern.Regex + ")"
		case p.Pattern.String != nil:
			return "Split(" + strconv.Quote(*p.Pattern.String) + ")"
		}
		return "Split"
	case "Digits":
		if p.Individual {
			return "Digits(individual)"
		}
		return "Digits"
	case "Sequence":
		var parts []string
		for _, s := range p.Pretokenizers {
			if x := preSignature(s, depth+1); x != "" {
				parts = append(parts, x)
			}
		}
		return strings.Join(parts, ",")
	}
	return p.Type
}
