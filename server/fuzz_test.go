package server

import (
	"bytes"
	"net/http/httptest"
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
