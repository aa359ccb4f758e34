package server

import (
	"bytes"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
)

// Request parsing and validation never panic, whatever the body. (The
// model name is never valid here, so nothing is generated.)
func FuzzRequests(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","prompt":"x","options":{"temperature":0.5,"top_k":3,"stop":["a"]},"keep_alive":"5m"}`,
		`{"model":"m","messages":[{"role":"user","content":"x"}],"options":{"num_ctx":-1}}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"}]}],"stop":"x","n":1}`,
		`{"model":"m","prompt":["x"],"max_tokens":3,"seed":-4}`,
		`{"model":"m","context":[1,2,3],"keep_alive":-1}`,
	} {
		f.Add([]byte(s))
	}
	s, err := New(Config{ModelsDir: f.TempDir()})
	if err != nil {
		f.Fatal(err)
	}
	h := s.Handler()
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, p := range []string{"/api/generate", "/api/chat", "/api/show", "/v1/chat/completions", "/v1/completions"} {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest("POST", p, bytes.NewReader(body)))
			if w.Code < 400 && p != "/api/show" {
				t.Errorf("%s answered %d without a model: %s", p, w.Code, w.Body)
			}
			if w.Code >= 500 {
				t.Errorf("%s: %d %s", p, w.Code, w.Body)
			}
		}
	})
}

// The guard's header checks never panic, and never let a foreign Host (on
// a loopback listener) or a disallowed Origin through.
func FuzzGuardHeaders(f *testing.F) {
	for _, s := range [][3]string{
		{"localhost:11434", "", ""},
		{"evil.example", "http://localhost:3000", "Bearer k"},
		{"[::1]:80", "https://*.example.org", "Bearer "},
		{"127.0.0.1.nip.io", "null", "bearer k"},
		{"[::ffff:127.0.0.1]", "app://x", "Basic k"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	s, err := New(Config{ModelsDir: f.TempDir(), APIKey: "k"})
	if err != nil {
		f.Fatal(err)
	}
	s.loopbackOnly.Store(true)
	h := s.Handler()
	f.Fuzz(func(t *testing.T, host, origin, auth string) {
		req := httptest.NewRequest("GET", "/api/version", nil)
		req.Host = host
		if origin != "" {
			req.Header["Origin"] = []string{origin}
		}
		req.Header["Authorization"] = []string{auth}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		hostOK := loopbackHost(host)
		originOK := origin == "" || originAllowed(origin, defaultOrigins)
		switch {
		case w.Code >= 500:
			t.Errorf("%d %s", w.Code, w.Body)
		case w.Code == 200 && (!hostOK || !originOK || auth != "Bearer k"):
			t.Errorf("host %q origin %q auth %q served", host, origin, auth)
		case w.Code == 200 && !strings.HasPrefix(strings.ToLower(strings.Trim(host, "[]")), "localhost") && hostOK:
			// A loopback address, checked independently of loopbackHost.
			hn := host
			if h, _, err := net.SplitHostPort(host); err == nil {
				hn = h
			}
			hn = strings.TrimSuffix(strings.Trim(hn, "[]"), ".")
			if ip := net.ParseIP(hn); hn != "" && !strings.HasSuffix(strings.ToLower(hn), ".localhost") && (ip == nil || !ip.IsLoopback()) {
				t.Errorf("host %q served as loopback", host)
			}
		}
	})
}
