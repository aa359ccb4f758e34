package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgellm/edgellm/internal/testmodel"
	"github.com/ollama/ollama/api"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// rawDo sends one request to base with the given headers.
func rawDo(t *testing.T, base *url.URL, method, path, body string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, base.String()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// checkErrorShape checks an error body has the shape of path's API and a
// message mentioning want.
func checkErrorShape(t *testing.T, path, body, want string) {
	t.Helper()
	var msg string
	if isOpenAIPath(path) {
		var e struct {
			Error struct{ Message, Type string }
		}
		if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Type == "" {
			t.Errorf("%s: not OpenAI's error shape: %s", path, body)
		}
		msg = e.Error.Message
	} else {
		var e struct{ Error string }
		if err := json.Unmarshal([]byte(body), &e); err != nil {
			t.Errorf("%s: not Ollama's error shape: %s", path, body)
		}
		msg = e.Error
	}
	if !strings.Contains(msg, want) {
		t.Errorf("%s: error %q does not mention %q", path, msg, want)
	}
}

// On a loopback listener only loopback Host names are served (DNS
// rebinding); on any other listener every Host is.
func TestHostCheck(t *testing.T) {
	base := startServer(t, newTestServer(t, nil))
	for _, h := range []string{"evil.example", "evil.example:" + base.Port(), "192.168.1.1", "localhost.evil.example", "127.0.0.1.nip.io"} {
		for _, p := range []string{"/api/tags", "/v1/models", "/api/version"} {
			resp, body := rawDo(t, base, "GET", p, "", map[string]string{"Host": h})
			if resp.StatusCode != 403 {
				t.Errorf("Host %s %s: %d, want 403", h, p, resp.StatusCode)
				continue
			}
			checkErrorShape(t, p, body, "host not allowed")
		}
	}
	for _, h := range []string{"localhost", "localhost:" + base.Port(), "LOCALHOST:1", "127.0.0.1", "127.1.2.3:80", "[::1]:" + base.Port(), "app.localhost"} {
		if resp, body := rawDo(t, base, "GET", "/api/tags", "", map[string]string{"Host": h}); resp.StatusCode != 200 {
			t.Errorf("Host %s: %d %s, want 200", h, resp.StatusCode, body)
		}
	}

	// Bound beyond loopback: any Host, as Ollama.
	s := newTestServer(t, nil)
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Skip("cannot listen on 0.0.0.0:", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	any, _ := url.Parse("http://127.0.0.1:" + port)
	if resp, body := rawDo(t, any, "GET", "/api/tags", "", map[string]string{"Host": "my-server.lan"}); resp.StatusCode != 200 {
		t.Errorf("public listener, foreign Host: %d %s, want 200", resp.StatusCode, body)
	}
}

// Browsers' cross-site requests: only allowed origins are served and get
// CORS headers; requests without Origin (non-browser clients) pass.
func TestOriginCheck(t *testing.T) {
	base := startServer(t, newTestServer(t, func(c *Config) {
		c.Origins = []string{"https://app.example.com", "https://*.example.org"}
	}))
	gen := `{"model":"stories","prompt":"Once","stream":false,"options":{"num_predict":1}}`
	for _, o := range []string{"https://evil.example", "http://localhost.evil.example", "null", "https://example.org.evil.example"} {
		for _, p := range []string{"/api/generate", "/v1/completions"} {
			resp, body := rawDo(t, base, "POST", p, gen, map[string]string{"Origin": o})
			if resp.StatusCode != 403 {
				t.Errorf("Origin %s %s: %d, want 403", o, p, resp.StatusCode)
				continue
			}
			if resp.Header.Get("Access-Control-Allow-Origin") != "" {
				t.Errorf("Origin %s: CORS header on a refusal", o)
			}
			checkErrorShape(t, p, body, "origin not allowed")
		}
		// Preflight from a foreign origin: refused, no CORS headers.
		resp, _ := rawDo(t, base, "OPTIONS", "/api/generate", "", map[string]string{"Origin": o, "Access-Control-Request-Method": "POST"})
		if resp.StatusCode != 403 || resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("preflight from %s: %d %v", o, resp.StatusCode, resp.Header)
		}
	}
	for _, o := range []string{"http://localhost", "http://localhost:3000", "https://127.0.0.1:8443", "http://[::1]:5173", "http://0.0.0.0:80",
		"https://app.example.com", "https://ui.example.org", "app://obsidian.md", ""} {
		resp, body := rawDo(t, base, "POST", "/api/generate", gen, map[string]string{"Origin": o})
		if resp.StatusCode != 200 {
			t.Errorf("Origin %q: %d %s, want 200", o, resp.StatusCode, body)
		}
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != o {
			t.Errorf("Origin %q: Access-Control-Allow-Origin %q", o, got)
		}
		if o == "" {
			continue
		}
		resp, _ = rawDo(t, base, "OPTIONS", "/v1/chat/completions", "", map[string]string{"Origin": o,
			"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"})
		if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != o ||
			!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
			t.Errorf("preflight from %s: %d %v", o, resp.StatusCode, resp.Header)
		}
	}
}

// With an API key every endpoint but /health (and /metrics unless
// MetricsAuth) needs it, through the official clients as through raw
// requests.
func TestAPIKey(t *testing.T) {
	const key = "s3cret-key"
	for _, metricsAuth := range []bool{false, true} {
		base := startServer(t, newTestServer(t, func(c *Config) { c.APIKey, c.MetricsAuth = key, metricsAuth }))
		for _, p := range []string{"/health", "/metrics"} {
			want := 200
			if p == "/metrics" && metricsAuth {
				want = 401
			}
			if resp, _ := rawDo(t, base, "GET", p, "", nil); resp.StatusCode != want {
				t.Errorf("metricsAuth %v: %s without a key: %d, want %d", metricsAuth, p, resp.StatusCode, want)
			}
		}
		for _, p := range []string{"/api/tags", "/api/version", "/v1/models", "/"} {
			for _, auth := range []string{"", "Bearer wrong", "Bearer " + key + "x", "Basic " + key, key} {
				resp, body := rawDo(t, base, "GET", p, "", map[string]string{"Authorization": auth})
				if resp.StatusCode != 401 {
					t.Errorf("%s with Authorization %q: %d, want 401", p, auth, resp.StatusCode)
					continue
				}
				if p != "/" {
					checkErrorShape(t, p, body, "API key")
				}
			}
			if resp, body := rawDo(t, base, "GET", p, "", map[string]string{"Authorization": "Bearer " + key}); resp.StatusCode != 200 {
				t.Errorf("%s with the key: %d %s", p, resp.StatusCode, body)
			}
		}
	}

	base := startServer(t, newTestServer(t, func(c *Config) { c.APIKey = key }))
	ctx := context.Background()
	// OpenAI's SDK sends its apiKey as the Bearer token.
	params := openai.CompletionNewParams{Model: "stories", MaxTokens: openai.Int(2),
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once")}}
	good := openai.NewClient(option.WithBaseURL(base.String()+"/v1/"), option.WithAPIKey(key), option.WithMaxRetries(0))
	if _, err := good.Completions.New(ctx, params); err != nil {
		t.Errorf("openai client with the key: %v", err)
	}
	bad := openai.NewClient(option.WithBaseURL(base.String()+"/v1/"), option.WithAPIKey("nope"), option.WithMaxRetries(0))
	var oerr *openai.Error
	if _, err := bad.Completions.New(ctx, params); !errors.As(err, &oerr) || oerr.StatusCode != 401 || !strings.Contains(oerr.Message, "API key") {
		t.Errorf("openai client with a wrong key: %v", err)
	}
	// Ollama's client takes an http.Client: a transport adds the header.
	req := &api.GenerateRequest{Model: "stories", Prompt: "Once", Options: map[string]any{"num_predict": 2}}
	withKey := &http.Client{Transport: bearer{key, http.DefaultTransport}}
	if err := api.NewClient(base, withKey).Generate(ctx, req, func(api.GenerateResponse) error { return nil }); err != nil {
		t.Errorf("ollama client with the key: %v", err)
	}
	// (The client turns a 401 into its AuthorizationError.)
	var ae api.AuthorizationError
	err := api.NewClient(base, http.DefaultClient).Generate(ctx, req, func(api.GenerateResponse) error { return nil })
	if !errors.As(err, &ae) || ae.StatusCode != 401 {
		t.Errorf("ollama client without the key: %#v", err)
	}
}

// bearer adds an API key to every request.
type bearer struct {
	key  string
	next http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.key)
	return b.next.RoundTrip(r)
}

// Bodies past MaxBody get 413 (declared or streamed); bodies that do not
// arrive within BodyTimeout get 408, and the connection is not held.
func TestBodyLimits(t *testing.T) {
	base := startServer(t, newTestServer(t, func(c *Config) { c.MaxBody, c.BodyTimeout = 1000, 300*time.Millisecond }))
	big := `{"model":"stories","prompt":"` + strings.Repeat("a", 1000) + `"}`
	for _, p := range []string{"/api/generate", "/v1/completions"} {
		resp, body := rawDo(t, base, "POST", p, big, nil)
		if resp.StatusCode != 413 {
			t.Errorf("%s: %d, want 413", p, resp.StatusCode)
		}
		checkErrorShape(t, p, body, "larger than 1000 bytes")
		// Chunked, no declared length: counted as it arrives.
		req, _ := http.NewRequest("POST", base.String()+p, io.MultiReader(strings.NewReader(big)))
		req.ContentLength = -1
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 413 {
			t.Errorf("%s chunked: %d, want 413", p, resp.StatusCode)
		}
	}
	// A slow client: headers promise 100 bytes, 10 come.
	conn, err := net.Dial("tcp", base.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	fmt.Fprintf(conn, "POST /api/generate HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":", base.Host)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("slow body: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 408 || time.Since(start) > 5*time.Second {
		t.Errorf("slow body: %d after %v: %s", resp.StatusCode, time.Since(start), b)
	}
	checkErrorShape(t, "/api/generate", string(b), "not received")
}

// No error response tells the client the models directory, a file path or
// an internal error's text: a table of bad requests, a broken model file
// among them, scanned for those.
func TestErrorsTellNothingOfTheHost(t *testing.T) {
	dir := modelsDir(t)
	// A file that is not a model: loading it is an internal error.
	if err := os.WriteFile(filepath.Join(dir, "broken.gguf"), []byte("GGUF\x03\x00\x00\x00garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A pulled model whose GGUF blob is broken: its path is the blob's.
	bad := filepath.Join(t.TempDir(), "bad.gguf")
	if err := os.WriteFile(bad, []byte("GGUF\x03\x00\x00\x00garbage and more garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	testmodel.AddPulled(t, dir, "pulled-broken", bad, nil)
	s := newTestServer(t, func(c *Config) { c.ModelsDir = dir })
	base := startServer(t, s)
	leaks := []string{dir, filepath.Base(dir), storiesPath(t), bad, "/tmp/", "blobs", "sha256-", "gguf:", "engine:", ".go:", "goroutine", "runtime."}
	type req struct{ method, path, body string }
	var reqs []req
	for _, m := range []string{"nope", "../stories", "broken", "pulled-broken", "stories/../../etc/passwd", ".hidden", "x:tag"} {
		reqs = append(reqs,
			req{"POST", "/api/generate", `{"model":"` + m + `","prompt":"x"}`},
			req{"POST", "/api/generate", `{"model":"` + m + `","prompt":"x","stream":false}`},
			req{"POST", "/api/generate", `{"model":"` + m + `"}`},
			req{"POST", "/api/chat", `{"model":"` + m + `","messages":[{"role":"user","content":"x"}]}`},
			req{"POST", "/api/show", `{"model":"` + m + `"}`},
			req{"POST", "/v1/chat/completions", `{"model":"` + m + `","messages":[{"role":"user","content":"x"}]}`},
			req{"POST", "/v1/chat/completions", `{"model":"` + m + `","stream":true,"messages":[{"role":"user","content":"x"}]}`},
			req{"POST", "/v1/completions", `{"model":"` + m + `","prompt":"x"}`},
		)
	}
	reqs = append(reqs, req{"POST", "/api/generate", `{`}, req{"POST", "/api/generate", `{"model":"stories","prompt":"x","options":{"num_ctx":100000000}}`},
		req{"GET", "/api/nope", ""}, req{"POST", "/v1/completions", `{"model":"stories","prompt":"` + strings.Repeat("a b ", 20000) + `"}`})
	internal := 0
	for _, r := range reqs {
		resp, body := rawDo(t, base, r.method, r.path, r.body, nil)
		if resp.StatusCode < 400 {
			t.Errorf("%s %s: %d", r.path, r.body[:min(len(r.body), 80)], resp.StatusCode)
		}
		// The request id is random hex: it may contain the models
		// directory's base name (t.TempDir's "001") by chance.
		scanned := body
		if id := resp.Header.Get(requestIDHeader); id != "" {
			scanned = strings.ReplaceAll(scanned, id, "<id>")
		}
		for _, l := range leaks {
			if strings.Contains(scanned, l) {
				t.Errorf("%s %.80s: the answer tells %q: %s", r.path, r.body, l, body)
			}
		}
		if resp.StatusCode >= 500 {
			internal++
			if id := resp.Header.Get(requestIDHeader); id == "" || !strings.Contains(body, id) {
				t.Errorf("%s: internal error without its request id: %s", r.path, body)
			}
		}
	}
	if internal == 0 {
		t.Error("no request reached an internal error: the broken model should")
	}
}

// EDGELLM_ORIGINS: comma-separated, spaces and empty entries ignored.
func TestOriginsFromEnv(t *testing.T) {
	t.Setenv("EDGELLM_ORIGINS", " https://a.example ,,https://*.b.example,")
	got := OriginsFromEnv()
	if len(got) != 2 || got[0] != "https://a.example" || got[1] != "https://*.b.example" {
		t.Fatalf("%q", got)
	}
	for o, want := range map[string]bool{"https://a.example": true, "https://x.b.example": true, "https://b.example": false, "http://a.example": false} {
		if originAllowed(o, got) != want {
			t.Errorf("%s: allowed %v, want %v", o, !want, want)
		}
	}
	t.Setenv("EDGELLM_ORIGINS", "")
	if got := OriginsFromEnv(); len(got) != 0 {
		t.Errorf("unset: %q", got)
	}
}
