package server

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
)

// A batched client that goes away mid-stream cancels its generation at
// the next step and frees its slot.
func TestBatchedCancel(t *testing.T) {
	s := newTestServer(t, nil)
	// The consumer's context, seen from its callbacks; the scheduler's
	// third step waits until the client is gone, so the generation is
	// surely still running when it goes.
	var reqCtx atomic.Pointer[context.Context]
	s.afterToken = func(ctx context.Context) { reqCtx.CompareAndSwap(nil, &ctx) }
	var steps atomic.Int32
	s.reg.stepHook = func(int) {
		if steps.Add(1) != 3 {
			return
		}
		for i := 0; reqCtx.Load() == nil; i++ {
			if i > 20000 {
				t.Error("no token reached the consumer")
				return
			}
			waitABit()
		}
		select {
		case <-(*reqCtx.Load()).Done():
		case <-time.After(20 * time.Second):
			t.Error("the client's request context never ended")
		}
	}
	base := startServer(t, s)
	c := api.NewClient(base, http.DefaultClient)
	errGone := errors.New("client walks away")
	chunks := 0
	err := c.Generate(context.Background(), &api.GenerateRequest{Model: "stories", Prompt: "Once upon a time",
		Options: greedy(map[string]any{"num_predict": 100})}, func(api.GenerateResponse) error {
		if chunks++; chunks == 2 {
			return errGone
		}
		return nil
	})
	if !errors.Is(err, errGone) {
		t.Fatalf("abandoned generate: %v", err)
	}
	// The next request is served, exactly.
	refIDs, refText := referenceGreedy(t)
	f := false
	var r api.GenerateResponse
	if err := c.Generate(context.Background(), &api.GenerateRequest{Model: "stories", Prompt: "Once upon a time", Stream: &f,
		Options: greedy(map[string]any{"num_predict": len(refIDs)})}, func(x api.GenerateResponse) error { r = x; return nil }); err != nil {
		t.Fatal(err)
	}
	if r.Response != refText {
		t.Errorf("after cancel:\n got %q\nwant %q", r.Response, refText)
	}
	// The cancelled one stopped within a few steps of the client leaving.
	total, _ := strconv.Atoi(metricValue(t, base, `edgellm_generated_tokens_total{model="stories"}`))
	if cancelled := total - len(refIDs); cancelled < 2 || cancelled > 10 {
		t.Errorf("the cancelled generation made %d tokens", cancelled)
	}
	if got := metricValue(t, base, `edgellm_active_generations{model="stories"}`); got != "0" {
		t.Errorf("active generations %s after both ended", got)
	}
	if n := modelOf(t, s, "stories").InBatch(); n != 0 {
		t.Errorf("%d generations still in the batch", n)
	}
}

// With Parallel 2, two requests run and the third waits its turn; all get
// the tokens they get alone.
func TestParallelSlots(t *testing.T) {
	s := newTestServer(t, func(c *Config) { c.Parallel = 2 })
	// The first token of each of the first two requests is held, which
	// keeps their slots (a generation's slot is held until its handler
	// returns).
	release := make(chan struct{})
	var mu sync.Mutex
	seen := map[context.Context]bool{}
	var held atomic.Int32
	s.afterToken = func(ctx context.Context) {
		mu.Lock()
		hold := !seen[ctx] && len(seen) < 2
		seen[ctx] = true
		mu.Unlock()
		if hold {
			held.Add(1)
			select {
			case <-release:
			case <-time.After(20 * time.Second):
			}
		}
	}
	base := startServer(t, s)
	c := api.NewClient(base, http.DefaultClient)
	_, refText := referenceGreedy(t)
	f := false
	gen := func(ctx context.Context, n int) (string, error) {
		var r api.GenerateResponse
		err := c.Generate(ctx, &api.GenerateRequest{Model: "stories", Prompt: "Once upon a time", Stream: &f,
			Options: greedy(map[string]any{"num_predict": n})}, func(x api.GenerateResponse) error { r = x; return nil })
		return r.Response, err
	}
	outs := make([]string, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() { outs[i], errs[i] = gen(context.Background(), 30) })
	}
	for i := 0; held.Load() != 2; i++ {
		if i > 20000 {
			t.Fatal("the first two never ran at once")
		}
		waitABit()
	}
	wg.Go(func() { outs[2], errs[2] = gen(context.Background(), 20) })
	for i := 0; metricValue(t, base, `edgellm_queue_depth{model="stories"}`) != "1"; i++ {
		if i > 5000 {
			t.Fatal("the third request never queued")
		}
		waitABit()
	}
	close(release)
	wg.Wait()
	for i, out := range outs {
		if errs[i] != nil || !strings.HasPrefix(refText, out) || len(out) < 40 {
			t.Errorf("request %d: %q %v", i, out, errs[i])
		}
	}
}

// A request for another num_ctx waits for the generations running on the
// loaded model, then reloads it; they are not disturbed.
func TestReloadWaitsForRunning(t *testing.T) {
	s := newTestServer(t, func(c *Config) { c.Parallel = 2 })
	holding, release := holdFirstToken(s)
	base := startServer(t, s)
	c := api.NewClient(base, http.DefaultClient)
	_, refText := referenceGreedy(t)
	f := false
	gen := func(numCtx, n int) (api.GenerateResponse, error) {
		var r api.GenerateResponse
		err := c.Generate(context.Background(), &api.GenerateRequest{Model: "stories", Prompt: "Once upon a time", Stream: &f,
			Options: greedy(map[string]any{"num_predict": n, "num_ctx": numCtx})}, func(x api.GenerateResponse) error { r = x; return nil })
		return r, err
	}
	var first api.GenerateResponse
	var firstErr error
	var wg sync.WaitGroup
	wg.Go(func() { first, firstErr = gen(0, 30) })
	<-holding
	var second api.GenerateResponse
	var secondErr error
	wg.Go(func() { second, secondErr = gen(64, 10) })
	s.reg.mu.Lock()
	e := s.reg.entries["stories"]
	s.reg.mu.Unlock()
	for i := 0; ; i++ {
		e.mu.Lock()
		d := e.draining
		e.mu.Unlock()
		if d == 1 {
			break
		}
		if i > 20000 {
			t.Fatal("the second request never waited to reload")
		}
		waitABit()
	}
	close(release)
	wg.Wait()
	if firstErr != nil || !strings.HasPrefix(refText, first.Response) || first.EvalCount != 30 {
		t.Errorf("first: %q %v", first.Response, firstErr)
	}
	if secondErr != nil || !strings.HasPrefix(refText, second.Response) || second.EvalCount != 10 {
		t.Errorf("second: %q %v", second.Response, secondErr)
	}
	ps, err := c.ListRunning(context.Background())
	if err != nil || len(ps.Models) != 1 || ps.Models[0].ContextLength != 64 {
		t.Errorf("ps after the reload: %+v %v", ps, err)
	}
	if got := metricValue(t, base, `edgellm_model_loads_total{model="stories"}`); got != "2" {
		t.Errorf("%s loads, want 2", got)
	}
}

func TestParallelConfig(t *testing.T) {
	for _, p := range []int{-1, maxParallel + 1} {
		if _, err := New(Config{ModelsDir: t.TempDir(), Parallel: p}); err == nil {
			t.Errorf("parallel %d accepted", p)
		}
	}
	s, err := New(Config{ModelsDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.cfg.Parallel != DefaultParallel {
		t.Errorf("default parallel %d", s.cfg.Parallel)
	}
}
