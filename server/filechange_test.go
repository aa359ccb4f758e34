package server

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// copyStories puts a copy of stories260K (not a link: the tests change
// the file) in a new models directory as stories.gguf.
func copyStories(t *testing.T) (dir, path string) {
	t.Helper()
	b, err := os.ReadFile(storiesPath(t))
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	path = filepath.Join(dir, "stories.gguf")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, path
}

// psContext is the context length /api/ps reports for the loaded stories
// (0: not loaded).
func psContext(t *testing.T, s *Server) int {
	t.Helper()
	w := do(t, s.Handler(), "GET", "/api/ps", "")
	var ps struct {
		Models []struct {
			Name          string `json:"name"`
			ContextLength int    `json:"context_length"`
		} `json:"models"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &ps); err != nil {
		t.Fatal(err)
	}
	for _, m := range ps.Models {
		if m.Name == "stories" {
			return m.ContextLength
		}
	}
	return 0
}

const greedyOnce = `{"model":"stories","prompt":"Once upon a time","raw":true,"stream":false,"keep_alive":-1,"options":{"temperature":0,"num_predict":8}}`

func responseText(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	var r struct{ Response string }
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &r) != nil {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	return r.Response
}

// A model file replaced by rename while loaded: the loaded model keeps
// serving from its old mapping until unloaded; the next load takes the
// new file.
func TestModelFileReplacedByRename(t *testing.T) {
	dir, path := copyStories(t)
	s := newTestServer(t, func(c *Config) { c.ModelsDir = dir })
	h := s.Handler()
	before := responseText(t, do(t, h, "POST", "/api/generate", greedyOnce))
	oldCtx := psContext(t, s)
	if oldCtx == 0 || oldCtx == 256 {
		t.Fatalf("stories loaded with context %d; the test tells files apart by 256", oldCtx)
	}
	// Another model (context_length 256) written beside it, renamed over it.
	tmp := filepath.Join(dir, "next.tmp")
	successorGGUF(t, tmp, chatFamilies()[0])
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	if got := responseText(t, do(t, h, "POST", "/api/generate", greedyOnce)); got != before {
		t.Errorf("after the rename, still loaded: %q, want the old model's %q", got, before)
	}
	if c := psContext(t, s); c != oldCtx {
		t.Errorf("after the rename, still loaded: context %d, want the old %d", c, oldCtx)
	}
	// Unload (keep_alive 0), then the next request loads the new file.
	if w := do(t, h, "POST", "/api/generate", `{"model":"stories","keep_alive":0}`); w.Code != 200 {
		t.Fatalf("unload: %d %s", w.Code, w.Body)
	}
	if w := do(t, h, "POST", "/api/generate", `{"model":"stories","keep_alive":-1}`); w.Code != 200 {
		t.Fatalf("load: %d %s", w.Code, w.Body)
	}
	if c := psContext(t, s); c != 256 {
		t.Errorf("reloaded: context %d, want the new file's 256", c)
	}
}

// A model file truncated in place while loaded (its weights are read from
// the mapping) does not kill the process: a generation running over the
// truncation fails, the next request reloads the file and fails clearly,
// naming the model and no path; a file put back is served again.
func TestModelFileTruncatedInPlace(t *testing.T) {
	dir, path := copyStories(t)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// One generation at a time: its decode steps wait for the client's
	// callback, so the file is truncated between two of them.
	s := newTestServer(t, func(c *Config) { c.ModelsDir, c.Parallel = dir, 1 })
	h := s.Handler()
	want := responseText(t, do(t, h, "POST", "/api/generate", greedyOnce))

	// Truncated during a generation.
	holding, release := holdFirstToken(s)
	done := make(chan *httptest.ResponseRecorder)
	go func() { done <- do(t, h, "POST", "/api/generate", greedyOnce) }()
	<-holding
	if err := os.Truncate(path, 4096); err != nil {
		t.Fatal(err)
	}
	close(release)
	// stories260K's F32 weights are read from the mapping in place: the
	// next step faults, and the fault is an error, not SIGBUS.
	w := <-done
	if w.Code != 500 || !strings.Contains(w.Body.String(), "request id") || strings.Contains(w.Body.String(), dir) {
		t.Errorf("generation over the truncation: %d %s", w.Code, w.Body)
	}

	// Truncated while loaded and idle: the next request reloads it.
	for _, p := range []string{"/api/generate", "/v1/completions"} {
		body := greedyOnce
		if p == "/v1/completions" {
			body = `{"model":"stories","prompt":"Once","max_tokens":3}`
		}
		w := do(t, h, "POST", p, body)
		if w.Code != 500 || !strings.Contains(w.Body.String(), `model \"stories\" could not be loaded`) || strings.Contains(w.Body.String(), dir) {
			t.Errorf("%s on the truncated file: %d %s", p, w.Code, w.Body)
		}
	}
	// Put back (in place): served again, the same text.
	if err := os.WriteFile(path, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := responseText(t, do(t, h, "POST", "/api/generate", greedyOnce)); got != want {
		t.Errorf("restored file: %q, want %q", got, want)
	}
}
