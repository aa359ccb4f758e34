package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func do(t *testing.T, h http.Handler, method, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	// A local client's Host: a server that also listens on loopback (tests
	// that start one) refuses httptest's default example.com.
	req.Host = "localhost"
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

// Every bad request gets a 4xx with a clear JSON message, in the shape of
// the API it came through.
func TestHandlerErrors(t *testing.T) {
	s := newTestServer(t, nil)
	h := s.Handler()
	long := strings.Repeat("Once upon a time there was a cat. ", 40) // > 128 tokens
	cases := []struct {
		name, method, path, body string
		status                   int
		msg                      string // in the error message
	}{
		{"bad json", "POST", "/api/generate", `{"model":`, 400, "invalid JSON"},
		{"two values", "POST", "/api/generate", `{"model":"stories"} {}`, 400, "more than one"},
		{"wrong type", "POST", "/api/generate", `{"model":"stories","prompt":5}`, 400, "invalid JSON"},
		{"no model", "POST", "/api/generate", `{"prompt":"x"}`, 400, "model is required"},
		{"unknown model", "POST", "/api/generate", `{"model":"nope","prompt":"x"}`, 404, "not found"},
		{"path in name", "POST", "/api/generate", `{"model":"../stories","prompt":"x"}`, 404, "not found"},
		{"hidden name", "POST", "/api/chat", `{"model":".x","messages":[{"role":"user","content":"x"}]}`, 404, "not found"},
		{"top_p", "POST", "/api/generate", `{"model":"stories","prompt":"x","options":{"top_p":3}}`, 400, "top_p"},
		{"temperature", "POST", "/api/generate", `{"model":"stories","prompt":"x","options":{"temperature":-1}}`, 400, "temperature"},
		{"top_k", "POST", "/api/generate", `{"model":"stories","prompt":"x","options":{"top_k":-4}}`, 400, "top_k"},
		{"top_k float", "POST", "/api/generate", `{"model":"stories","prompt":"x","options":{"top_k":1.5}}`, 400, "invalid JSON"},
		{"num_ctx", "POST", "/api/generate", `{"model":"stories","prompt":"x","options":{"num_ctx":-5}}`, 400, "num_ctx"},
		{"num_ctx huge", "POST", "/api/generate", `{"model":"stories","prompt":"x","options":{"num_ctx":100000000}}`, 400, "num_ctx"},
		{"num_predict", "POST", "/api/generate", `{"model":"stories","prompt":"x","options":{"num_predict":-7}}`, 400, "num_predict"},
		{"repeat_last_n", "POST", "/api/generate", `{"model":"stories","prompt":"x","options":{"repeat_last_n":-3}}`, 400, "repeat_last_n"},
		{"repeat_penalty", "POST", "/api/generate", `{"model":"stories","prompt":"x","options":{"repeat_penalty":-1}}`, 400, "repeat_penalty"},
		{"empty stop", "POST", "/api/generate", `{"model":"stories","prompt":"x","options":{"stop":[""]}}`, 400, "stop"},
		{"seed type", "POST", "/api/generate", `{"model":"stories","prompt":"x","options":{"seed":"x"}}`, 400, "invalid JSON"},
		{"keep_alive", "POST", "/api/generate", `{"model":"stories","prompt":"x","keep_alive":"soon"}`, 400, "keep_alive"},
		{"keep_alive type", "POST", "/api/generate", `{"model":"stories","prompt":"x","keep_alive":true}`, 400, "keep_alive"},
		{"format", "POST", "/api/generate", `{"model":"stories","prompt":"x","format":"json"}`, 400, "format"},
		{"images", "POST", "/api/generate", `{"model":"stories","prompt":"x","images":["AAAA"]}`, 400, "images"},
		{"context token", "POST", "/api/generate", `{"model":"stories","context":[1,99999]}`, 400, "vocabulary"},
		{"context int32", "POST", "/api/generate", `{"model":"stories","context":[1,99999999999]}`, 400, "invalid JSON"},
		{"prompt too long", "POST", "/api/generate", `{"model":"stories","prompt":"` + long + `"}`, 400, "num_ctx"},
		{"prompt too long ctx", "POST", "/api/generate", `{"model":"stories","prompt":"Once upon a time there was","options":{"num_ctx":4}}`, 400, "longer than"},
		{"chat no role", "POST", "/api/chat", `{"model":"stories","messages":[{"content":"x"}]}`, 400, "no role"},
		{"chat tools", "POST", "/api/chat", `{"model":"stories","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]}`, 400, "tools"},
		{"show unknown", "POST", "/api/show", `{"model":"nope"}`, 404, "not found"},
		{"show bad json", "POST", "/api/show", `nope`, 400, "invalid JSON"},
		{"show no model", "POST", "/api/show", `{}`, 400, "model name is required"},
		{"too large", "POST", "/api/generate", `{"model":"stories","prompt":"` + strings.Repeat("a", DefaultMaxBody) + `"}`, 413, "larger"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := do(t, h, c.method, c.path, c.body)
			if w.Code != c.status {
				t.Fatalf("status %d, want %d; body %s", w.Code, c.status, w.Body)
			}
			var e struct{ Error string }
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || !strings.Contains(e.Error, c.msg) {
				t.Errorf("error %q (%v), want it to mention %q", e.Error, err, c.msg)
			}
		})
	}
}

func TestOpenAIHandlerErrors(t *testing.T) {
	s := newTestServer(t, nil)
	h := s.Handler()
	cases := []struct {
		name, path, body string
		status           int
		msg              string
	}{
		{"bad json", "/v1/chat/completions", `{`, 400, "invalid JSON"},
		{"no model", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}]}`, 400, "model is required"},
		{"unknown model", "/v1/chat/completions", `{"model":"nope","messages":[{"role":"user","content":"x"}]}`, 404, "not found"},
		{"no messages", "/v1/chat/completions", `{"model":"stories","messages":[]}`, 400, "messages"},
		{"n", "/v1/chat/completions", `{"model":"stories","n":2,"messages":[{"role":"user","content":"x"}]}`, 400, "one choice"},
		{"temperature", "/v1/chat/completions", `{"model":"stories","temperature":3,"messages":[{"role":"user","content":"x"}]}`, 400, "temperature"},
		{"stop type", "/v1/chat/completions", `{"model":"stories","stop":5,"messages":[{"role":"user","content":"x"}]}`, 400, "stop"},
		{"image part", "/v1/chat/completions", `{"model":"stories","messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, 400, "image_url"},
		{"max_tokens", "/v1/completions", `{"model":"stories","prompt":"x","max_tokens":-1}`, 400, "max_tokens"},
		{"prompt list", "/v1/completions", `{"model":"stories","prompt":["a","b"]}`, 400, "prompt"},
		{"empty prompt", "/v1/completions", `{"model":"stories","prompt":""}`, 200, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := do(t, h, "POST", c.path, c.body)
			if w.Code != c.status {
				t.Fatalf("status %d, want %d; body %s", w.Code, c.status, w.Body)
			}
			if c.status == 200 {
				return
			}
			var e struct {
				Error struct{ Message, Type string }
			}
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || !strings.Contains(e.Error.Message, c.msg) || e.Error.Type == "" {
				t.Errorf("error %+v (%v), want it to mention %q", e.Error, err, c.msg)
			}
		})
	}
}

// Generation that reaches the end of the context stops with "length".
func TestContextEnd(t *testing.T) {
	s := newTestServer(t, nil)
	w := do(t, s.Handler(), "POST", "/api/generate",
		`{"model":"stories","prompt":"Once upon a time","stream":false,"options":{"temperature":0,"num_ctx":16}}`)
	var r struct {
		DoneReason      string `json:"done_reason"`
		EvalCount       int    `json:"eval_count"`
		PromptEvalCount int    `json:"prompt_eval_count"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &r); err != nil || w.Code != 200 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	// The last sampled token needs no KV slot, so the engine may produce
	// num_ctx+1 tokens in all.
	if n := r.PromptEvalCount + r.EvalCount; r.DoneReason != "length" || n < 16 || n > 17 {
		t.Errorf("done %q after %d+%d tokens, want length at 16", r.DoneReason, r.PromptEvalCount, r.EvalCount)
	}
	// A stop string ends it with "stop", the string itself not included.
	w = do(t, s.Handler(), "POST", "/api/generate",
		`{"model":"stories","prompt":"Once upon a time","stream":false,"options":{"temperature":0,"stop":["Lily"]}}`)
	var r2 struct {
		Response   string `json:"response"`
		DoneReason string `json:"done_reason"`
	}
	json.Unmarshal(w.Body.Bytes(), &r2)
	if r2.DoneReason != "stop" || r2.Response != ", there was a little girl named " {
		t.Errorf("stop string: %q %q", r2.Response, r2.DoneReason)
	}
}

// Load on first use, keep_alive, an empty prompt to load, keep_alive 0 to
// unload, and num_ctx changes reload.
func TestLoadUnload(t *testing.T) {
	s := newTestServer(t, nil)
	h := s.Handler()
	ps := func() []psModel {
		var out struct{ Models []psModel }
		json.Unmarshal(do(t, h, "GET", "/api/ps", "").Body.Bytes(), &out)
		return out.Models
	}
	if len(ps()) != 0 {
		t.Fatal("loaded before use")
	}
	w := do(t, h, "POST", "/api/generate", `{"model":"stories"}`)
	if !strings.Contains(w.Body.String(), `"done_reason":"load"`) || len(ps()) != 1 {
		t.Fatalf("load: %s, ps %v", w.Body, ps())
	}
	do(t, h, "POST", "/api/generate", `{"model":"stories","prompt":"x","stream":false,"options":{"num_predict":1,"num_ctx":64}}`)
	if m := ps(); len(m) != 1 || m[0].ContextLength != 64 {
		t.Fatalf("num_ctx 64: %+v", m)
	}
	// Asking for the file's length explicitly, or not at all, after a
	// default load does not reload.
	do(t, h, "POST", "/api/generate", `{"model":"stories","prompt":"x","stream":false,"options":{"num_predict":1}}`)
	loads := func() string {
		return metricLine(do(t, h, "GET", "/metrics", "").Body.String(), `edgellm_model_loads_total{model="stories"}`)
	}
	before := loads()
	do(t, h, "POST", "/api/generate", `{"model":"stories","prompt":"x","stream":false,"options":{"num_predict":1,"num_ctx":128}}`)
	do(t, h, "POST", "/api/generate", `{"model":"stories","prompt":"x","stream":false,"options":{"num_predict":1}}`)
	if m := ps(); len(m) != 1 || m[0].ContextLength != 128 || before == "" || loads() != before {
		t.Fatalf("num_ctx 128 then default: %+v, loads %s -> %s", m, before, loads())
	}
	w = do(t, h, "POST", "/api/chat", `{"model":"stories","messages":[],"keep_alive":0}`)
	if !strings.Contains(w.Body.String(), `"done_reason":"unload"`) || len(ps()) != 0 {
		t.Fatalf("unload: %s, ps %v", w.Body, ps())
	}
	// keep_alive 0 on a generation unloads once it ends.
	do(t, h, "POST", "/api/generate", `{"model":"stories","prompt":"x","stream":false,"keep_alive":0,"options":{"num_predict":1}}`)
	if len(ps()) != 0 {
		t.Error("keep_alive 0: still loaded")
	}
	// A short keep_alive unloads by itself.
	do(t, h, "POST", "/api/generate", `{"model":"stories","prompt":"x","stream":false,"keep_alive":"10ms","options":{"num_predict":1}}`)
	for i := 0; len(ps()) != 0; i++ {
		if i > 2000 {
			t.Fatal("keep_alive 10ms: never unloaded")
		}
		waitABit()
	}
}

func TestMiscEndpoints(t *testing.T) {
	s := newTestServer(t, nil)
	h := s.Handler()
	if w := do(t, h, "GET", "/health", ""); w.Code != 200 || !strings.Contains(w.Body.String(), "ok") {
		t.Errorf("health: %d %s", w.Code, w.Body)
	}
	if w := do(t, h, "GET", "/api/generate", ""); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET generate: %d", w.Code)
	}
	if w := do(t, h, "GET", "/nope", ""); w.Code != http.StatusNotFound {
		t.Errorf("unknown path: %d", w.Code)
	}
	w := do(t, h, "GET", "/metrics", "")
	for _, m := range []string{"edgellm_http_requests_total", "edgellm_models_loaded"} {
		if !strings.Contains(w.Body.String(), m) {
			t.Errorf("metrics lack %s", m)
		}
	}
	// A panicking handler answers 500 and the server lives on; the client
	// gets the request id, the log the panic.
	ph := s.guard(s.wrap("boom", func(http.ResponseWriter, *http.Request) { panic("boom") }))
	if w := do(t, ph, "GET", "/", ""); w.Code != 500 || strings.Contains(w.Body.String(), "boom") ||
		!strings.Contains(w.Body.String(), "request id "+w.Header().Get(requestIDHeader)) {
		t.Errorf("panic: %d %s", w.Code, w.Body)
	}
}

func TestParseKeepAlive(t *testing.T) {
	def := 5 * 60e9
	cases := []struct {
		in   any
		want float64 // ns; -1 forever
		ok   bool
	}{
		{nil, def, true}, {"", def, true}, {float64(30), 30e9, true}, {"1m", 60e9, true}, {"-1", -1, true},
		{float64(-1), -1, true}, {"0", 0, true}, {"45", 45e9, true}, {"soon", 0, false}, {true, 0, false},
	}
	for _, c := range cases {
		d, err := parseKeepAlive(c.in, 5*60e9)
		if (err == nil) != c.ok || (c.ok && float64(d) != c.want) {
			t.Errorf("parseKeepAlive(%v) = %v, %v", c.in, d, err)
		}
	}
}

// With MaxLoaded 1, using a second model unloads the idle first one.
func TestMaxLoaded(t *testing.T) {
	s := newTestServer(t, func(c *Config) { c.MaxLoaded = 1 })
	if err := os.Symlink(storiesPath(t), filepath.Join(s.cfg.ModelsDir, "other.gguf")); err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	for _, m := range []string{"stories", "other", "stories"} {
		w := do(t, h, "POST", "/api/generate", `{"model":"`+m+`","prompt":"x","stream":false,"options":{"num_predict":1}}`)
		if w.Code != 200 {
			t.Fatalf("%s: %d %s", m, w.Code, w.Body)
		}
		lm := s.reg.loaded()
		if len(lm) != 1 || lm[0].name != m {
			t.Fatalf("after %s: loaded %+v", m, lm)
		}
	}
}

func TestHumanCount(t *testing.T) {
	for n, want := range map[uint64]string{999: "999", 292800: "292.8K", 134_515_008: "134.5M", 2_412_000_000: "2.4B"} {
		if got := humanCount(n); got != want {
			t.Errorf("humanCount(%d) = %q, want %q", n, got, want)
		}
	}
}
