package server

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/backend/cpu"
	"github.com/edgellm/edgellm/engine"
	"github.com/edgellm/edgellm/model"
)

// The byte bound never refuses a text that fits: every text's length is at
// most its token count times maxTokenBytes.
func TestMaxTokenBytesBound(t *testing.T) {
	m, err := engine.Load(storiesPath(t), engine.Options{Backend: "cpu", Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tok := m.Tokenizer()
	maxTok := maxTokenBytes(tok)
	if maxTok <= 0 {
		t.Fatalf("maxTokenBytes %d", maxTok)
	}
	// The bound is reached: some token's text is that long.
	found := false
	for id := range tok.VocabSize() {
		found = found || len(tok.Token(int32(id))) == maxTok
	}
	if !found {
		t.Errorf("no token of %d bytes", maxTok)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{" ", "  ", "the", " cat", "Once upon a time", "\n", "é", "中", "🙂", "\xff", "<s>", "</s>", "▁", "0x41", "<0x41>"}
	for range 300 {
		var sb strings.Builder
		for range rng.IntN(60) + 1 {
			sb.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		s := sb.String()
		for _, special := range []bool{false, true} {
			ids, err := tok.Encode(s, false, special)
			if err != nil {
				t.Fatal(err)
			}
			if len(s) > len(ids)*maxTok {
				t.Errorf("%q: %d bytes in %d tokens of at most %d bytes", s, len(s), len(ids), maxTok)
			}
		}
	}
}

// A model whose KV caches would exceed the budget is refused with a 400
// naming num_ctx, and a num_ctx past the file's trained length within it
// is served.
func TestKVBudget(t *testing.T) {
	m, err := engine.Load(storiesPath(t), engine.Options{Backend: "cpu", Threads: 1, ContextLen: 1024})
	if err != nil {
		t.Fatal(err)
	}
	budget := kvBytes(m, 1024, DefaultParallel)
	trained := m.Weights().ContextLen
	if trained >= 1024 {
		t.Fatalf("stories260K's trained context is %d; the test wants one below 1024", trained)
	}
	// Just too small for the default num_ctx (the trained length).
	tooSmall := kvBytes(m, trained, DefaultParallel) - 1
	m.Close()
	s := newTestServer(t, func(c *Config) { c.KVBudget = budget })
	h := s.Handler()
	gen := func(ctx string) string {
		return `{"model":"stories","prompt":"Once","stream":false,"options":{"num_predict":2,"num_ctx":` + ctx + `}}`
	}
	if w := do(t, h, "POST", "/api/generate", gen("1024")); w.Code != 200 {
		t.Errorf("num_ctx 1024 (past the trained length, within the budget): %d %s", w.Code, w.Body)
	}
	for _, p := range []string{"/api/generate", "/v1/completions"} {
		body := gen("1025")
		if p == "/v1/completions" {
			body = `{"model":"stories","prompt":"Once","max_tokens":2}`
			s2 := newTestServer(t, func(c *Config) { c.KVBudget = tooSmall })
			w := do(t, s2.Handler(), "POST", p, body)
			if w.Code != 400 || !strings.Contains(w.Body.String(), "budget") {
				t.Errorf("%s over budget: %d %s", p, w.Code, w.Body)
			}
			continue
		}
		w := do(t, h, "POST", p, body)
		if w.Code != 400 || !strings.Contains(w.Body.String(), "num_ctx 1025") || !strings.Contains(w.Body.String(), "budget") {
			t.Errorf("%s num_ctx 1025 over budget: %d %s", p, w.Code, w.Body)
		}
	}
	// The refused load left nothing loaded past the budget; a fitting
	// request still works.
	if w := do(t, h, "POST", "/api/generate", gen("512")); w.Code != 200 {
		t.Errorf("num_ctx 512 after a refusal: %d %s", w.Code, w.Body)
	}
}

// The budget counts the backend's own KV size where it gives one (the GPU
// keeps its cache on the device, in its own layout), not the 4-byte rule.
func TestKVBudgetBackendSize(t *testing.T) {
	engine.RegisterBackend("test-kvsize", func(w *model.Weights, o engine.Options) (backend.Model, error) {
		m, err := cpu.Load(w, cpu.Options{Threads: o.Threads})
		return kvSized{m}, err
	})
	gen := `{"model":"stories","prompt":"Once","stream":false,"options":{"num_predict":2,"num_ctx":256}}`
	for _, c := range []struct {
		budget int64
		code   int
	}{{256 * 100, 200}, {256*100 - 1, 400}} {
		s := newTestServer(t, func(cfg *Config) { cfg.KVBudget, cfg.Engine.Backend = c.budget, "test-kvsize" })
		if w := do(t, s.Handler(), "POST", "/api/generate", gen); w.Code != c.code {
			t.Errorf("budget %d for a cache of %d: %d %s", c.budget, 256*100, w.Code, w.Body)
		}
	}
}

// kvSized says a session of ctx positions keeps 100 bytes a position, far
// below the 4-byte rule's figure for stories260K.
type kvSized struct{ backend.Model }

func (kvSized) KVBytes(ctx int) int64 { return 100 * int64(ctx) }

// A prompt too long for the context by its bytes alone is refused before
// it is tokenized, on a loaded model as on one not loaded yet.
func TestPromptRefusedByBytes(t *testing.T) {
	s := newTestServer(t, nil)
	h := s.Handler()
	long := strings.Repeat("a", 512*64)
	for i := range 2 { // first before any load, then loaded
		w := do(t, h, "POST", "/api/generate", `{"model":"stories","raw":true,"stream":false,"prompt":"`+long+`"}`)
		if w.Code != 400 || !strings.Contains(w.Body.String(), "bytes") {
			t.Errorf("try %d: %d %s", i, w.Code, w.Body)
		}
	}
}
