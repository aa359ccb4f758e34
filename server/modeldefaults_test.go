package server

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/edgellm/edgellm/server/chattmpl"
	"github.com/ollama/ollama/api"
	otmpl "github.com/ollama/ollama/template"
)

// promptLog keeps the prompts the server logs at debug level.
type promptLog struct {
	mu      sync.Mutex
	prompts []string
	debug   []string // every debug message with its attributes
}

func (p *promptLog) Enabled(context.Context, slog.Level) bool { return true }
func (p *promptLog) WithAttrs([]slog.Attr) slog.Handler       { return p }
func (p *promptLog) WithGroup(string) slog.Handler            { return p }
func (p *promptLog) Handle(_ context.Context, r slog.Record) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	line := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if r.Message == "prompt" && a.Key == "text" {
			p.prompts = append(p.prompts, a.Value.String())
		}
		line += " " + a.String()
		return true
	})
	if r.Level == slog.LevelDebug {
		p.debug = append(p.debug, line)
	}
	return nil
}

func (p *promptLog) last(t *testing.T) string {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.prompts) == 0 {
		t.Fatal("no prompt logged")
	}
	return p.prompts[len(p.prompts)-1]
}

// withLayers makes NAME.gguf (stories260K) in s's models directory and
// gives its entry an Ollama model's layers, as the store does.
func withLayers(t *testing.T, s *Server, name, template, system, params string) {
	t.Helper()
	if err := os.Symlink(storiesPath(t), filepath.Join(s.cfg.ModelsDir, name+".gguf")); err != nil {
		t.Fatal(err)
	}
	e, err := s.reg.lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	d, err := newModelDefaults(template, system, []byte(params), s.log)
	if err != nil {
		t.Fatal(err)
	}
	e.modelDefaults = d
}

// ollamaRender is Ollama's rendering of msgs with its template package.
func ollamaRender(t *testing.T, src string, msgs ...api.Message) string {
	t.Helper()
	tm, err := otmpl.Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := tm.Execute(&b, otmpl.Values{Messages: msgs}); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// The registry's qwen2.5 template (server/chattmpl/testdata/ollama), with a
// .Messages path and a legacy one.
func qwenTemplate(t *testing.T) string {
	b, err := os.ReadFile(filepath.Join("chattmpl", "testdata", "ollama", "qwen2.5.gotmpl"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A model's template and system layers make the prompt as Ollama's server
// does on /api/chat and /api/generate (the system layer where the request
// has none), seen through the official client.
func TestOllamaLayersPrompt(t *testing.T) {
	logs := &promptLog{}
	s := newTestServer(t, func(c *Config) { c.Logger = slog.New(logs) })
	tmpl := qwenTemplate(t)
	const sys = "You are a storyteller."
	withLayers(t, s, "qwen", tmpl, sys, "")
	c := api.NewClient(startServer(t, s), http.DefaultClient)
	ctx := context.Background()
	no := false
	opts := greedy(map[string]any{"num_predict": 2, "num_ctx": 512})
	chat := func(msgs ...api.Message) string {
		t.Helper()
		err := c.Chat(ctx, &api.ChatRequest{Model: "qwen", Messages: msgs, Stream: &no, Options: opts},
			func(api.ChatResponse) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		return logs.last(t)
	}
	generate := func(req api.GenerateRequest) string {
		t.Helper()
		req.Model, req.Stream, req.Options = "qwen", &no, opts
		if err := c.Generate(ctx, &req, func(api.GenerateResponse) error { return nil }); err != nil {
			t.Fatal(err)
		}
		return logs.last(t)
	}
	user := api.Message{Role: "user", Content: "Once upon a time"}
	sysMsg := api.Message{Role: "system", Content: sys}
	own := api.Message{Role: "system", Content: "Be brief."}
	turns := []api.Message{user, {Role: "assistant", Content: "there was"}, {Role: "user", Content: "Go on."}}

	if got, want := chat(user), ollamaRender(t, tmpl, sysMsg, user); got != want {
		t.Errorf("chat, system layer:\n got %q\nwant %q", got, want)
	}
	if got, want := chat(own, user), ollamaRender(t, tmpl, own, user); got != want || strings.Contains(got, sys) {
		t.Errorf("chat, own system:\n got %q\nwant %q", got, want)
	}
	if got, want := chat(turns...), ollamaRender(t, tmpl, append([]api.Message{sysMsg}, turns...)...); got != want {
		t.Errorf("chat, turns:\n got %q\nwant %q", got, want)
	}
	// A trailing assistant message is continued.
	prefill := []api.Message{user, {Role: "assistant", Content: "there"}}
	if got, want := chat(prefill...), ollamaRender(t, tmpl, append([]api.Message{sysMsg}, prefill...)...); got != want || !strings.HasSuffix(got, "there") {
		t.Errorf("chat, prefill:\n got %q\nwant %q", got, want)
	}
	if got, want := generate(api.GenerateRequest{Prompt: user.Content}), ollamaRender(t, tmpl, sysMsg, user); got != want {
		t.Errorf("generate, system layer:\n got %q\nwant %q", got, want)
	}
	if got, want := generate(api.GenerateRequest{Prompt: user.Content, System: own.Content}), ollamaRender(t, tmpl, own, user); got != want {
		t.Errorf("generate, own system:\n got %q\nwant %q", got, want)
	}
	if got := generate(api.GenerateRequest{Prompt: user.Content, Raw: true}); got != user.Content {
		t.Errorf("generate raw: %q", got)
	}
	// Spelled out once, so that a mistake shared with the oracle shows.
	want := "<|im_start|>system\n" + sys + "<|im_end|>\n<|im_start|>user\nOnce upon a time<|im_end|>\n<|im_start|>assistant\n"
	if got := generate(api.GenerateRequest{Prompt: user.Content}); got != want {
		t.Errorf("generate:\n got %q\nwant %q", got, want)
	}
}

// /api/show gives a model's template and system layers, and its params'
// stops and num_ctx as its parameters.
func TestOllamaLayersShow(t *testing.T) {
	s := newTestServer(t, nil)
	withLayers(t, s, "layered", "{{ .Prompt }}", "Be kind.", `{"num_ctx":256,"stop":["<|eot_id|>","END"],"temperature":0.5}`)
	c := api.NewClient(startServer(t, s), http.DefaultClient)
	got, err := c.Show(context.Background(), &api.ShowRequest{Model: "layered"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Template != "{{ .Prompt }}" || got.System != "Be kind." || got.Parameters != "num_ctx 256\nstop \"<|eot_id|>\"\nstop \"END\"" {
		t.Errorf("show: template %q system %q parameters %q", got.Template, got.System, got.Parameters)
	}
	plain, err := c.Show(context.Background(), &api.ShowRequest{Model: "stories"})
	if err != nil || plain.System != "" || plain.Template == got.Template || !strings.HasPrefix(plain.Parameters, "num_ctx 128") {
		t.Errorf("plain model: %+v %v", plain, err)
	}
}

// A template layer that does not parse falls back to the file's template
// (stories260K has none: the plain one) with a warning.
func TestOllamaBadTemplateLayer(t *testing.T) {
	logs := &promptLog{}
	s := newTestServer(t, func(c *Config) { c.Logger = slog.New(logs) })
	withLayers(t, s, "bad", "{{ .Prompt ", "", "")
	w := do(t, s.Handler(), "POST", "/api/chat", `{"model":"bad","stream":false,"messages":[{"role":"user","content":"Hi"}],"options":{"num_predict":1}}`)
	if w.Code != 200 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	if got := logs.last(t); got != "user: Hi\nassistant: " {
		t.Errorf("prompt %q, want the plain template's", got)
	}
}

// A params layer's options are the model's defaults: temperature, stop,
// num_predict and num_ctx take effect, and a request's options override
// them one by one.
func TestOllamaParamsLayer(t *testing.T) {
	logs := &promptLog{}
	s := newTestServer(t, func(c *Config) { c.Logger = slog.New(logs) })
	withLayers(t, s, "tuned", "", "", `{"temperature":0,"num_predict":12,"num_ctx":256,"stop":["little"],"num_keep":24,"mirostat":0}`)
	h := s.Handler()
	c := api.NewClient(startServer(t, s), http.DefaultClient)
	ctx := context.Background()
	gen := func(model string, opts map[string]any) api.GenerateResponse {
		t.Helper()
		var out api.GenerateResponse
		no := false
		err := c.Generate(ctx, &api.GenerateRequest{Model: model, Prompt: "Once upon a time", Stream: &no, Options: opts},
			func(r api.GenerateResponse) error { out = r; return nil })
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	// The reference: the plain model, told the same options by the request.
	ref := gen("stories", greedy(map[string]any{"num_predict": 12, "num_ctx": 256}))
	cut, _, found := strings.Cut(ref.Response, "little")
	if !found {
		t.Fatalf("reference %q has no %q to stop at", ref.Response, "little")
	}
	got := gen("tuned", nil)
	if got.Response != cut || got.DoneReason != "stop" {
		t.Errorf("params: %q (%s), want %q (stop)", got.Response, got.DoneReason, cut)
	}
	if m := psOf(t, h); len(m) != 2 || m[1].Name != "tuned" || m[1].ContextLength != 256 {
		t.Errorf("params num_ctx 256: %+v", m)
	}
	// The request's stop list replaces the model's (Ollama's field-by-field
	// override); num_predict and num_ctx likewise.
	got = gen("tuned", map[string]any{"stop": []string{"zzz"}, "num_predict": 12})
	if got.Response != ref.Response || got.DoneReason != "length" || got.EvalCount != 12 {
		t.Errorf("request stop: %q (%s, %d), want %q", got.Response, got.DoneReason, got.EvalCount, ref.Response)
	}
	got = gen("tuned", map[string]any{"stop": []string{}, "num_predict": 5, "num_ctx": 128})
	if got.EvalCount != 5 || !strings.HasPrefix(ref.Response, got.Response) {
		t.Errorf("request num_predict 5: %d tokens %q", got.EvalCount, got.Response)
	}
	if m := psOf(t, h); len(m) != 2 || m[1].ContextLength != 128 {
		t.Errorf("request num_ctx 128: %+v", m)
	}
	// The request's temperature overrides the model's 0: with it, two
	// seeds give two texts (greedy would give one).
	a := gen("tuned", map[string]any{"temperature": 1.5, "seed": 1, "stop": []string{}, "num_predict": 24, "top_k": 0, "top_p": 1, "min_p": 0})
	b := gen("tuned", map[string]any{"temperature": 1.5, "seed": 2, "stop": []string{}, "num_predict": 24, "top_k": 0, "top_p": 1, "min_p": 0})
	if a.Response == b.Response {
		t.Errorf("temperature 1.5: seeds 1 and 2 both gave %q", a.Response)
	}
	// Loading with an empty prompt uses the params' num_ctx too.
	do(t, h, "POST", "/api/chat", `{"model":"tuned","messages":[],"keep_alive":0}`)
	do(t, h, "POST", "/api/generate", `{"model":"tuned"}`)
	if m := psOf(t, h); len(m) != 2 || m[1].ContextLength != 256 {
		t.Errorf("load: %+v", m)
	}
	// OpenAI requests sample at temperature 1 unless they say (as through
	// Ollama's OpenAI layer), the params' other options still applying.
	oai := func(body string) string {
		t.Helper()
		w := do(t, h, "POST", "/v1/completions", body)
		var r struct{ Choices []struct{ Text string } }
		if err := json.Unmarshal(w.Body.Bytes(), &r); err != nil || w.Code != 200 || len(r.Choices) != 1 {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
		return r.Choices[0].Text
	}
	dflt := oai(`{"model":"tuned","prompt":"Once upon a time","seed":3,"max_tokens":24,"stop":"zzz"}`)
	hot := oai(`{"model":"tuned","prompt":"Once upon a time","seed":3,"max_tokens":24,"stop":"zzz","temperature":1,"top_p":1}`)
	cold := oai(`{"model":"tuned","prompt":"Once upon a time","seed":3,"max_tokens":24,"stop":"zzz","temperature":0}`)
	if dflt != hot || dflt == cold {
		t.Errorf("OpenAI defaults: %q, at temperature 1 %q, at 0 %q", dflt, hot, cold)
	}
	if got := oai(`{"model":"tuned","prompt":"Once upon a time","temperature":0}`); got != cut {
		t.Errorf("OpenAI with the params' stop: %q, want %q", got, cut)
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	found = false
	for _, l := range logs.debug {
		found = found || strings.Contains(l, "params layer: options not used options=mirostat,num_keep")
	}
	if !found {
		t.Errorf("no debug log of the unused options in %q", logs.debug)
	}
}

func psOf(t *testing.T, h http.Handler) []psModel {
	var out struct{ Models []psModel }
	if err := json.Unmarshal(do(t, h, "GET", "/api/ps", "").Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	return out.Models
}

// A params layer is read by store.ParseParams (tested there); here its
// options reach samplingIn, and a bad one is the model's fault (a plain
// error, status 500), not a request's 400.
func TestParseParams(t *testing.T) {
	p, err := parseParams([]byte(`{"stop":["<|eot_id|>"],"temperature":0.7,"num_ctx":8192,"repeat_last_n":-1,"num_gpu":99}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if *p.Temperature != 0.7 || *p.NumCtx != 8192 || *p.RepeatLastN != -1 || !reflect.DeepEqual(p.Stop, []string{"<|eot_id|>"}) {
		t.Errorf("parsed %+v", p)
	}
	for _, bad := range []struct{ js, says string }{
		{`{"temperature":-1}`, "temperature"},
		{`{"stop":[""]}`, "stop"},
		{`[1,2]`, "params layer"},
	} {
		_, err := parseParams([]byte(bad.js), nil)
		if err == nil || !strings.Contains(err.Error(), bad.says) || !strings.HasPrefix(err.Error(), "params layer") || statusOf(err) != 500 {
			t.Errorf("%.40s: %v (status %d)", bad.js, err, statusOf(err))
		}
	}
	if d, err := newModelDefaults("", "", []byte(" \n"), nil); err != nil || !reflect.ValueOf(d.params).IsZero() {
		t.Errorf("empty params layer: %+v %v", d, err)
	}
}

// overlay takes each option a request gives, whatever the option: every
// field of samplingIn is covered.
func TestOverlayEveryField(t *testing.T) {
	var model, req samplingIn
	mv, rv := reflect.ValueOf(&model).Elem(), reflect.ValueOf(&req).Elem()
	for i := range mv.NumField() {
		for _, v := range []reflect.Value{mv.Field(i), rv.Field(i)} {
			switch v.Kind() {
			case reflect.Pointer:
				v.Set(reflect.New(v.Type().Elem()))
			case reflect.Slice:
				v.Set(reflect.MakeSlice(v.Type(), 1, 1))
			default:
				t.Fatalf("field %s: kind %s", mv.Type().Field(i).Name, v.Kind())
			}
		}
	}
	got := model.overlay(&req)
	gv := reflect.ValueOf(got)
	for i := range gv.NumField() {
		name := gv.Type().Field(i).Name
		if gv.Field(i).Pointer() != rv.Field(i).Pointer() {
			t.Errorf("%s: the model's kept over the request's", name)
		}
	}
	if got := model.overlay(&samplingIn{}); !reflect.DeepEqual(got, model) {
		t.Errorf("an empty request changed the model's options")
	}
	if got := model.overlay(nil); !reflect.DeepEqual(got, model) {
		t.Errorf("no request changed the model's options")
	}
}

// The system layer is the default system message, as Ollama's.
func TestApplySystem(t *testing.T) {
	d := modelDefaults{system: "S"}
	sys := chattmpl.Message{Role: "system", Content: "mine"}
	user := chattmpl.Message{Role: "user", Content: "u"}
	cases := []struct {
		req        genRequest
		wantMsgs   []chattmpl.Message
		wantSystem string
	}{
		{genRequest{chat: true, messages: []chattmpl.Message{user}}, []chattmpl.Message{{Role: "system", Content: "S"}, user}, ""},
		{genRequest{chat: true, messages: []chattmpl.Message{sys, user}}, []chattmpl.Message{sys, user}, ""},
		// Only a first system message counts, as in Ollama's ChatHandler.
		{genRequest{chat: true, messages: []chattmpl.Message{user, sys}}, []chattmpl.Message{{Role: "system", Content: "S"}, user, sys}, ""},
		{genRequest{prompt: "p"}, nil, "S"},
		{genRequest{prompt: "p", system: "mine"}, nil, "mine"},
		{genRequest{prompt: "p", raw: true}, nil, ""},
	}
	for i, c := range cases {
		req := c.req
		d.applySystem(&req)
		if !reflect.DeepEqual(req.messages, c.wantMsgs) || req.system != c.wantSystem {
			t.Errorf("case %d: messages %+v system %q", i, req.messages, req.system)
		}
	}
	req := genRequest{chat: true, messages: []chattmpl.Message{user}}
	(&modelDefaults{}).applySystem(&req)
	if len(req.messages) != 1 {
		t.Errorf("no system layer added %+v", req.messages)
	}
}

func TestModelTemplate(t *testing.T) {
	plain := func() (*chattmpl.Template, error) { return chattmpl.Builtin(chattmpl.Plain, "", "") }
	if tm, err := modelTemplate("", plain); err != nil || tm.Name() != chattmpl.Plain {
		t.Errorf("no layer: %v %v", tm, err)
	}
	if tm, err := modelTemplate("{{ .Prompt }}", plain); err != nil || tm.Name() != chattmpl.Ollama {
		t.Errorf("layer: %v %v", tm, err)
	}
	tm, err := modelTemplate("{{ .Prompt ", plain)
	if err == nil || tm == nil || tm.Name() != chattmpl.Plain || !strings.Contains(err.Error(), "template layer") {
		t.Errorf("bad layer: %v %v", tm, err)
	}
}
