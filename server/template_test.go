package server

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/gguf"
)

// withTemplate writes a copy of stories260K whose metadata carries a chat
// template, into dir as NAME.gguf.
func withTemplate(t *testing.T, dir, name, tmpl string) {
	t.Helper()
	f, err := gguf.Open(storiesPath(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := gguf.NewWriter()
	for _, kv := range f.KVs {
		w.Add(kv.Key, kv.Value)
	}
	w.AddString("tokenizer.chat_template", tmpl)
	for _, ti := range f.Tensors {
		if err := w.AddTensor(ti.Name, ti.Type, ti.Dims, ti.Data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WriteFile(filepath.Join(dir, name+".gguf")); err != nil {
		t.Fatal(err)
	}
}

// A file's own Jinja template is used for chat and for /api/generate
// (unless raw); its spelled-out BOS is parsed as the BOS token and not
// doubled, so a template that writes only BOS + the user's text gives the
// same tokens as the raw prompt.
func TestFileChatTemplate(t *testing.T) {
	s := newTestServer(t, nil)
	withTemplate(t, s.cfg.ModelsDir, "tmpl",
		"{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}{{ m.content }}{% endif %}{% endfor %}")
	h := s.Handler()
	type resp struct {
		Response        string
		Message         struct{ Content string }
		Context         []int32
		PromptEvalCount int `json:"prompt_eval_count"`
	}
	run := func(path, body string) resp {
		w := do(t, h, "POST", path, body)
		if w.Code != 200 {
			t.Fatalf("%s: %d %s", path, w.Code, w.Body)
		}
		var r resp
		json.Unmarshal(w.Body.Bytes(), &r)
		return r
	}
	raw := run("/api/generate", `{"model":"stories","prompt":"Once upon a time","stream":false,"options":{"temperature":0,"num_predict":12}}`)
	chat := run("/api/chat", `{"model":"tmpl","stream":false,"messages":[{"role":"system","content":"ignored"},{"role":"user","content":"Once upon a time"}],"options":{"temperature":0,"num_predict":12}}`)
	gen := run("/api/generate", `{"model":"tmpl","prompt":"Once upon a time","system":"ignored","stream":false,"options":{"temperature":0,"num_predict":12}}`)
	if raw.PromptEvalCount != 5 || chat.PromptEvalCount != 5 || gen.PromptEvalCount != 5 {
		t.Errorf("prompt tokens raw %d chat %d generate %d, want 5 (one BOS)", raw.PromptEvalCount, chat.PromptEvalCount, gen.PromptEvalCount)
	}
	if chat.Message.Content != raw.Response || gen.Response != raw.Response || raw.Response == "" {
		t.Errorf("raw %q, chat %q, templated generate %q", raw.Response, chat.Message.Content, gen.Response)
	}
	// /api/show reports the file's template.
	w := do(t, h, "POST", "/api/show", `{"model":"tmpl"}`)
	if !strings.Contains(w.Body.String(), "bos_token") {
		t.Errorf("show: no template in %s", w.Body)
	}
}

// A template that fails at render time is a 400, not a crash.
func TestTemplateRaises(t *testing.T) {
	s := newTestServer(t, nil)
	withTemplate(t, s.cfg.ModelsDir, "strict",
		"{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system role') }}{% endif %}{{ m.content }}{% endfor %}")
	w := do(t, s.Handler(), "POST", "/api/chat", `{"model":"strict","stream":false,"messages":[{"role":"system","content":"x"}]}`)
	if w.Code != 400 || !strings.Contains(w.Body.String(), "no system role") {
		t.Errorf("%d %s", w.Code, w.Body)
	}
}
