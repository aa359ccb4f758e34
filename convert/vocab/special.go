package vocab

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// specialVocab fills v's special token ids, add_*_token flags, chat
// template and normalizer flags as gguf-py's SpecialVocab does, from
// tokenizer.json (added tokens, post-processor, normalizer),
// tokenizer_config.json and config.json, then generation_config.json's EOS
// ids (which SpecialVocab does not read: they fill eos_token_id only where
// nothing else did, and a list of several becomes eos_token_ids).
func (c *checkpoint) specialVocab(v *Vocab) error {
	n := len(v.Tokens)
	v.Special = map[string]int32{}
	v.AddToken = map[string]bool{}
	kinds := []string{"bos", "eos", "unk", "sep", "pad", "cls", "mask"}
	ids := map[string]int64{}
	set := func(kind string, id any) error {
		i, ok := jsonInt(id)
		if !ok {
			return nil // SpecialVocab takes ints only
		}
		if i < 0 {
			return fmt.Errorf("vocab: %s: special token %s has id %d", c.dir, kind, i)
		}
		if _, done := ids[kind]; !done && i < int64(n) {
			ids[kind] = i
		}
		return nil
	}

	// tokenizer_config.json, copied: the post-processor fills in tokens
	// it lacks, as SpecialVocab does on its own copy
	var tc map[string]any
	if c.tokConfig != nil {
		tc = make(map[string]any, len(c.tokConfig))
		for k, x := range c.tokConfig {
			tc[k] = x
		}
	}
	if t := c.tok; t != nil {
		if len(t.Normalizer) > 0 {
			parseNormalizer(t.Normalizer, v, 0)
		}
		if len(t.PostProcessor) > 0 && string(t.PostProcessor) != "null" {
			c.postProcessor(t.PostProcessor, tc, v, &kinds)
		}
	}
	if tc != nil {
		c.chatTemplate(tc, v)
		for _, kind := range kinds {
			if b, ok := tc["add_"+kind+"_token"].(bool); ok {
				v.AddToken[kind] = b
			}
			content, ok := tokenContent(tc[kind+"_token"])
			if !ok || c.tok == nil {
				continue
			}
			for _, a := range c.tok.AddedTokens {
				if a.Content == content { // the first match, as SpecialVocab
					if err := set(kind, float64(a.ID)); err != nil {
						return err
					}
					break
				}
			}
		}
	}
	textConfig, _ := c.config["text_config"].(map[string]any)
	for _, kind := range kinds {
		id, ok := c.config[kind+"_token_id"]
		if (!ok || id == nil) && textConfig != nil {
			id = textConfig[kind+"_token_id"]
		}
		if err := set(kind, id); err != nil {
			return err
		}
	}
	if err := c.generationEOS(v, ids); err != nil {
		return err
	}
	for _, k := range specialKinds {
		if id, ok := ids[k.kind]; ok {
			v.Special[k.kind] = int32(id)
		}
	}
	for k := range v.AddToken { // gguf-py writes add_bos, add_eos and add_sep only
		if k != "bos" && k != "eos" && k != "sep" {
			delete(v.AddToken, k)
		}
	}
	return nil
}

// generationEOS reads generation_config.json's eos_token_id: an int, or a
// list whose first entry stands for EOS where nothing else named one.
func (c *checkpoint) generationEOS(v *Vocab, ids map[string]int64) error {
	raw, ok := c.genConfig["eos_token_id"]
	if !ok || raw == nil {
		return nil
	}
	var list []int64
	if i, ok := jsonInt(raw); ok {
		list = []int64{i}
	} else if xs, ok := raw.([]any); ok {
		for _, x := range xs {
			i, ok := jsonInt(x)
			if !ok {
				return fmt.Errorf("vocab: %s/generation_config.json: eos_token_id %v: want an integer or a list of integers", c.dir, raw)
			}
			list = append(list, i)
		}
	} else {
		return fmt.Errorf("vocab: %s/generation_config.json: eos_token_id %v: want an integer or a list of integers", c.dir, raw)
	}
	for _, i := range list {
		if i < 0 || i >= int64(len(v.Tokens)) {
			return fmt.Errorf("vocab: %s/generation_config.json: eos_token_id %d outside the %d tokens", c.dir, i, len(v.Tokens))
		}
	}
	if len(list) == 0 {
		return nil
	}
	if _, done := ids["eos"]; !done {
		ids["eos"] = list[0]
	}
	if len(list) > 1 {
		for _, i := range list {
			v.EOSIDs = append(v.EOSIDs, int32(i))
		}
	}
	return nil
}

// tokenContent reads a tokenizer_config.json token: a string or
// {"content": string}.
func tokenContent(x any) (string, bool) {
	switch t := x.(type) {
	case string:
		return t, true
	case map[string]any:
		s, ok := t["content"].(string)
		return s, ok
	}
	return "", false
}

// parseNormalizer records Lowercase and StripAccents normalizers, which
// llama.cpp writes as keys.
func parseNormalizer(raw json.RawMessage, v *Vocab, depth int) {
	var n struct {
		Type         string            `json:"type"`
		Lowercase    *bool             `json:"lowercase"`
		StripAccents *bool             `json:"strip_accents"`
		Normalizers  []json.RawMessage `json:"normalizers"`
	}
	if depth > 8 || json.Unmarshal(raw, &n) != nil {
		return
	}
	yes := true
	switch n.Type {
	case "Lowercase":
		v.NormalizerLowercase = &yes
	case "StripAccents":
		v.NormalizerStripAccents = &yes
	case "BertNormalizer":
		if n.Lowercase != nil {
			v.NormalizerLowercase = n.Lowercase
		}
		if n.StripAccents != nil {
			v.NormalizerStripAccents = n.StripAccents
		}
	case "Sequence":
		for _, s := range n.Normalizers {
			parseNormalizer(s, v, depth+1)
		}
	}
}

// postProcessor reads a RobertaProcessing or TemplateProcessing
// post-processor (or a Sequence of them) as SpecialVocab does: the special
// tokens a single sequence starts and ends with set add_bos_token and
// add_eos_token, and name BOS and EOS where tokenizer_config.json does not
// (an end token other than EOS takes EOS's place, the old EOS moving to
// EOT). The pair template's separator is not read.
func (c *checkpoint) postProcessor(raw json.RawMessage, tc map[string]any, v *Vocab, kinds *[]string) {
	type special struct {
		ID string `json:"id"`
	}
	type piece struct {
		SpecialToken *special `json:"SpecialToken"`
	}
	type proc struct {
		Type       string            `json:"type"`
		Single     []piece           `json:"single"`
		Processors []json.RawMessage `json:"processors"`
	}
	var top proc
	if json.Unmarshal(raw, &top) != nil {
		return
	}
	procs := []json.RawMessage{raw}
	if top.Processors != nil {
		procs = top.Processors
	}
	str := func(k string) string {
		s, _ := tokenContent(tc[k+"_token"])
		return s
	}
	for _, r := range procs {
		var p proc
		if json.Unmarshal(r, &p) != nil {
			continue
		}
		switch p.Type {
		case "RobertaProcessing":
			v.AddToken["bos"], v.AddToken["eos"], v.AddToken["sep"] = true, true, true
		case "TemplateProcessing":
			if len(p.Single) < 2 {
				continue
			}
			bos, cls, eos := str("bos"), str("cls"), str("eos")
			if bos == "" && cls != "" && tc != nil {
				tc["bos_token"], bos = cls, cls
			}
			if eos == "" && str("sep") != "" && tc != nil {
				tc["eos_token"], eos = str("sep"), str("sep")
			}
			if f := p.Single[0].SpecialToken; f != nil && f.ID != "" {
				switch {
				case tc == nil:
					bos = f.ID
				case f.ID != bos && f.ID != cls:
					if bos == "" {
						tc["bos_token"], bos = f.ID, f.ID
					}
					if cls == "" {
						tc["cls_token"], cls = f.ID, f.ID
					}
				}
				v.AddToken["bos"] = f.ID == bos || f.ID == cls
			}
			if l := p.Single[len(p.Single)-1].SpecialToken; l != nil && l.ID != "" {
				if tc == nil {
					eos = l.ID
				} else if l.ID != eos {
					switch {
					case !slices.Contains(*kinds, "eot"):
						*kinds = append(*kinds, "eot")
						tc["eot_token"] = eos
					case !slices.Contains(*kinds, "eom"):
						*kinds = append(*kinds, "eom")
						tc["eom_token"] = eos
					}
					tc["eos_token"], eos = l.ID, l.ID
				}
				v.AddToken["eos"] = l.ID == eos
			}
		}
	}
}

// chatTemplate reads tokenizer_config.json's chat_template (a string, or a
// list of {"name", "template"}), else chat_template.jinja (with
// additional_chat_templates/*.jinja as named ones) or chat_template.json.
func (c *checkpoint) chatTemplate(tc map[string]any, v *Vocab) {
	var tmpl any
	if x, ok := tc["chat_template"]; ok {
		tmpl = x
	} else if b, _ := readOptional(c.dir, "chat_template.jinja"); b != nil {
		tmpl = string(b)
		extra, _ := filepath.Glob(filepath.Join(c.dir, "additional_chat_templates", "*.jinja"))
		if len(extra) > 0 {
			list := []any{map[string]any{"name": "default", "template": tmpl}}
			for _, p := range extra {
				if b, err := os.ReadFile(p); err == nil && int64(len(b)) <= maxFileBytes {
					name := strings.TrimSuffix(filepath.Base(p), ".jinja")
					list = append(list, map[string]any{"name": name, "template": string(b)})
				}
			}
			tmpl = list
		}
	} else if m, _ := readJSONObject(c.dir, "chat_template.json"); m != nil {
		tmpl = m["chat_template"]
	}
	switch t := tmpl.(type) {
	case string:
		v.ChatTemplate = t
	case []any:
		for _, e := range t {
			o, _ := e.(map[string]any)
			name, _ := o["name"].(string)
			body, ok := o["template"].(string)
			if name == "" || !ok {
				continue
			}
			// gguf-py keeps letters and digits of a name, the rest as "_"
			name = strings.Map(func(r rune) rune {
				if r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
					return r
				}
				return '_'
			}, name)
			if name == "default" {
				v.ChatTemplate = body
				continue
			}
			if v.ChatTemplates == nil {
				v.ChatTemplates = map[string]string{}
			}
			v.ChatTemplates[name] = body
		}
	}
}
