package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/backend/cpu"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/sample"
)

// gatherOnFirstStep returns an OnStep hook that holds the scheduler's
// first step until n requests have joined it, so that a test's requests
// really run as one batch; *m must be set before the first step.
func gatherOnFirstStep(t *testing.T, m **Model, n int) func(int) {
	var once sync.Once
	return func(int) {
		once.Do(func() {
			deadline := time.Now().Add(20 * time.Second)
			for time.Now().Before(deadline) {
				if (*m).InBatch() >= n {
					return
				}
				time.Sleep(time.Millisecond)
			}
			t.Errorf("only some of %d requests joined the batch", n)
		})
	}
}

// result is what one generation gave.
type result struct {
	ids    []int32
	text   string
	reason string
	n      int
	err    error
}

func run(m *Model, ctx context.Context, req Request) result {
	var r result
	var text strings.Builder
	st, err := m.Generate(ctx, req, func(tk Token) error {
		if tk.ID >= 0 {
			r.ids = append(r.ids, tk.ID)
		}
		text.WriteString(tk.Text)
		return nil
	})
	r.text, r.reason, r.n, r.err = text.String(), st.DoneReason, st.GeneratedTokens, err
	return r
}

// parallelRequests cover every way a generation ends, on prompts of
// different lengths (so the batch holds sequences at different positions).
func parallelRequests() []Request {
	long := append([]int32{1}, onceIDs[:40]...)
	return []Request{
		{Tokens: onceprompt, MaxTokens: 100, IgnoreEOS: true},
		{Prompt: "Once upon a time", Stop: []string{"Lily", "zzz"}, MaxTokens: 100},
		{Prompt: "Once upon a time", MaxTokens: 400}, // ends with EOS
		{Tokens: long, MaxTokens: 30, IgnoreEOS: true},
		{Prompt: "The cat", MaxTokens: 50, IgnoreEOS: true, Sampling: sample.Params{Temperature: 0.9, TopK: 40, TopP: 0.95, RepeatPenalty: 1.1, RepeatLastN: 64, Seed: 42}},
		{Prompt: "", MaxTokens: 20, IgnoreEOS: true},
		{Prompt: "Tim and Sue", MaxTokens: 60, Stop: []string{"."}},
		{Tokens: onceprompt, MaxTokens: 7},
	}
}

// Requests run in a batch give exactly what each gives alone on the
// serial path: greedy and seeded sampling, stop strings, EOS, MaxTokens.
func TestParallelMatchesSerial(t *testing.T) {
	reqs := parallelRequests()
	serial := loadStories(t, Options{})
	want := make([]result, len(reqs))
	for i, req := range reqs {
		if want[i] = run(serial, context.Background(), req); want[i].err != nil {
			t.Fatal(want[i].err)
		}
	}
	for _, par := range []int{2, 4, 8} {
		t.Run(fmt.Sprint(par), func(t *testing.T) {
			var m *Model
			var mu sync.Mutex
			sizes := map[int]int{}
			gather := gatherOnFirstStep(t, &m, min(par, len(reqs)))
			m = loadStories(t, Options{Parallel: par, OnStep: func(n int) {
				gather(n)
				mu.Lock()
				sizes[n]++
				mu.Unlock()
			}})
			if m.Parallel() != par {
				t.Fatalf("Parallel() = %d, want %d", m.Parallel(), par)
			}
			got := make([]result, len(reqs))
			var wg sync.WaitGroup
			for i, req := range reqs {
				wg.Go(func() { got[i] = run(m, context.Background(), req) })
			}
			wg.Wait()
			for i := range reqs {
				g, w := got[i], want[i]
				if g.err != nil || !slices.Equal(g.ids, w.ids) || g.text != w.text || g.reason != w.reason || g.n != w.n {
					t.Errorf("request %d: batched %d tokens %q (%s, err %v)\n alone %d tokens %q (%s)", i, g.n, g.text, g.reason, g.err, w.n, w.text, w.reason)
				}
			}
			steps, batched := m.BatchCounts()
			if batched == 0 || sizes[min(par, len(reqs))] == 0 {
				t.Fatalf("no step decoded %d sequences: %d steps, %d batched, sizes %v", min(par, len(reqs)), steps, batched, sizes)
			}
			// Once done the slots are reused, prefix and all.
			r := run(m, context.Background(), reqs[0])
			if !slices.Equal(r.ids, want[0].ids) {
				t.Fatalf("again: %v", r.ids)
			}
		})
	}
}

// The context's end stops each sequence of a batch with "length".
func TestParallelContextEnd(t *testing.T) {
	m := loadStories(t, Options{ContextLen: 16, Parallel: 3})
	var wg sync.WaitGroup
	got := make([]result, 3)
	for i := range got {
		req := Request{Tokens: onceprompt[:2+i], IgnoreEOS: true}
		wg.Go(func() { got[i] = run(m, context.Background(), req) })
	}
	wg.Wait()
	for i, g := range got {
		if g.err != nil || g.reason != DoneLength || g.n != 16-(2+i)+1 {
			t.Errorf("prompt of %d: %d tokens, %s, %v", 2+i, g.n, g.reason, g.err)
		}
	}
}

// Cancellation and a consumer's error end one request and free its slot;
// the others go on untouched.
func TestParallelCancel(t *testing.T) {
	m := loadStories(t, Options{Parallel: 2})
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	var wg sync.WaitGroup
	var other result
	wg.Go(func() {
		other = run(m, context.Background(), Request{Tokens: onceprompt, MaxTokens: 100, IgnoreEOS: true})
	})
	st, err := m.Generate(ctx, Request{Prompt: "Once upon a time", IgnoreEOS: true}, func(Token) error {
		if n++; n == 5 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || st.DoneReason != DoneCancel || st.GeneratedTokens < 5 {
		t.Fatalf("cancel: err %v, stats %+v", err, st)
	}
	boom := errors.New("boom")
	st, err = m.Generate(context.Background(), Request{Prompt: "Once", IgnoreEOS: true}, func(Token) error { return boom })
	if err != boom || st.DoneReason != DoneError {
		t.Fatalf("callback error: %v, %+v", err, st)
	}
	if _, err := m.Generate(ctx, Request{Prompt: "x"}, func(Token) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("pre-cancelled: %v", err)
	}
	wg.Wait()
	if other.err != nil || !slices.Equal(other.ids, onceIDs) {
		t.Fatalf("the other request: %v, %v", other.err, other.ids)
	}
	// Both slots are free again: two more run at once.
	wg.Go(func() { run(m, context.Background(), Request{Tokens: onceprompt, MaxTokens: 3}) })
	if r := run(m, context.Background(), Request{Tokens: onceprompt, MaxTokens: 10}); !slices.Equal(r.ids, onceIDs[:10]) {
		t.Fatalf("after cancel: %v", r.ids)
	}
	wg.Wait()
}

// A request waiting for a slot can be cancelled.
func TestParallelWaitCancel(t *testing.T) {
	// The scheduler stalls in its hook while the two slots are taken.
	var stall sync.Mutex
	stall.Lock()
	m := loadStories(t, Options{Parallel: 2, OnStep: func(int) { stall.Lock(); stall.Unlock() }})
	var wg sync.WaitGroup
	started := make(chan struct{}, 2)
	for range 2 {
		wg.Go(func() {
			m.Generate(context.Background(), Request{Tokens: onceprompt, MaxTokens: 3}, func(Token) error {
				select {
				case started <- struct{}{}:
				default:
				}
				return nil
			})
		})
	}
	<-started // both hold a slot: one is in the batch, stalled, the other prefilled or joining
	for {
		m.sched.mu.Lock()
		busy := m.sched.slots[0].busy && m.sched.slots[1].busy
		m.sched.mu.Unlock()
		if busy {
			break
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	st, err := m.Generate(ctx, Request{Tokens: onceprompt, MaxTokens: 3}, func(Token) error { return nil })
	stall.Unlock()
	wg.Wait()
	if !errors.Is(err, context.DeadlineExceeded) || st.DoneReason != DoneCancel {
		t.Fatalf("waiting for a slot: %v, %+v", err, st)
	}
}

// Bad requests fail before taking a slot, as on the serial path.
func TestParallelErrors(t *testing.T) {
	m := loadStories(t, Options{ContextLen: 16, Parallel: 2})
	for _, req := range []Request{
		{Tokens: slices.Repeat([]int32{1}, 17)},
		{Tokens: []int32{1, 9999}},
		{Tokens: []int32{}},
		{Tokens: onceprompt, MaxTokens: -1},
		{Tokens: onceprompt, Stop: []string{""}},
	} {
		if _, err := m.Generate(context.Background(), req, func(Token) error { return nil }); err == nil {
			t.Errorf("%+v accepted", req)
		}
	}
	if _, err := m.Generate(context.Background(), Request{Tokens: onceprompt}, nil); err == nil {
		t.Error("nil callback accepted")
	}
	if _, err := Load("x", Options{Parallel: -1}); err == nil {
		t.Error("negative parallel accepted")
	}
}

// Close ends running generations with an error and waits for them.
func TestParallelClose(t *testing.T) {
	m, err := Load(stories(t, "stories260K-f32.gguf"), Options{ContextLen: 512, Threads: 2, Parallel: 2})
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{}, 3)
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			first := true
			_, err := m.Generate(context.Background(), Request{Tokens: onceprompt, IgnoreEOS: true}, func(Token) error {
				if first {
					first = false
					started <- struct{}{}
				}
				return nil
			})
			errs <- err
		}()
	}
	<-started
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := <-errs; err == nil {
			t.Error("a generation outlived Close without an error")
		}
	}
	if _, err := m.Generate(context.Background(), Request{Tokens: onceprompt}, func(Token) error { return nil }); err == nil {
		t.Error("generate after close accepted")
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}

// A backend without BatchDecoder runs one generation at a time.
func TestParallelNeedsBatchDecoder(t *testing.T) {
	RegisterBackend("test-nobatch", func(w *model.Weights, o Options) (backend.Model, error) {
		m, err := cpu.Load(w, cpu.Options{Threads: o.Threads})
		return noBatch{m}, err
	})
	m := loadStories(t, Options{Backend: "test-nobatch", Parallel: 4})
	if m.Parallel() != 1 || m.sched != nil {
		t.Fatalf("parallel %d on a backend that cannot batch", m.Parallel())
	}
	if r := run(m, context.Background(), Request{Tokens: onceprompt, MaxTokens: 10}); !slices.Equal(r.ids, onceIDs[:10]) {
		t.Fatalf("ids %v", r.ids)
	}
}

// noBatch hides the cpu model's DecodeBatch.
type noBatch struct{ backend.Model }

// The scheduler's step allocates nothing but each token's text.
func TestStepBatchAllocs(t *testing.T) {
	m := loadStories(t, Options{})
	if allocs := stepAllocs(t, m, sample.Params{Temperature: 0.8, TopK: 40}); allocs > 4 {
		t.Fatalf("%v allocations per step of 4 sequences", allocs)
	}
}

// stepAllocs is the allocations of one scheduler step of 4 sequences on m
// sampling under p (each its own seed).
func stepAllocs(t *testing.T, m *Model, p sample.Params) float64 {
	bd := m.be.(backend.BatchDecoder)
	sc := newScheduler(m, bd, 4, nil)
	t.Cleanup(func() { sc.closeSessions() })
	for i := range 4 {
		sl, err := sc.acquire(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		var st Stats
		if err := m.prefill(context.Background(), &sl.seq, onceprompt[:2+i], &st); err != nil {
			t.Fatal(err)
		}
		p.Seed = uint64(i)
		smp, err := sample.New(m.Config().Vocab, p)
		if err != nil {
			t.Fatal(err)
		}
		j := &job{ctx: context.Background(), req: &Request{IgnoreEOS: true, Sampling: p}, sl: sl, smp: smp,
			dec: m.tok.NewDecoder(), wake: make(chan struct{}, 1), out: make([]Token, 0, 8)}
		if err := sc.pickSampler(j); err != nil {
			t.Fatal(err)
		}
		sc.active = append(sc.active, j)
	}
	step := func() {
		sc.step()
		for _, j := range sc.active {
			j.out = j.out[:0]
		}
	}
	step()
	allocs := testing.AllocsPerRun(50, step)
	if len(sc.active) != 4 {
		t.Fatalf("%d jobs left the batch", len(sc.active))
	}
	return allocs
}

// A request takes the slot whose cache shares the longest prefix with its
// prompt, as the serial path reuses its one.
func TestParallelPrefixReuse(t *testing.T) {
	m := loadStories(t, Options{Parallel: 3})
	collect(t, m, Request{Tokens: onceprompt, MaxTokens: 10})
	collect(t, m, Request{Tokens: []int32{1, 9, 9}, MaxTokens: 2})
	next := append(slices.Clone(onceprompt), onceIDs[:10]...)
	ids, _, st := collect(t, m, Request{Tokens: next, MaxTokens: 20, IgnoreEOS: true})
	if st.CachedTokens != 14 || !slices.Equal(ids, onceIDs[10:30]) {
		t.Fatalf("cached %d tokens, ids %v", st.CachedTokens, ids)
	}
	if st.PromptTokens != 15 || st.GeneratedTokens != 20 || len(st.Latencies) != 20 || st.DoneReason != DoneLength {
		t.Fatalf("stats %+v", st)
	}
}

// Breaking out of a Stream stops a batched generation too.
func TestParallelStream(t *testing.T) {
	m := loadStories(t, Options{Parallel: 2})
	var ids []int32
	for tk, err := range m.Stream(context.Background(), Request{Tokens: onceprompt, IgnoreEOS: true}) {
		if err != nil {
			t.Fatal(err)
		}
		if ids = append(ids, tk.ID); len(ids) == 3 {
			break
		}
	}
	if !slices.Equal(ids, onceIDs[:3]) {
		t.Fatalf("stream %v", ids)
	}
	if n := m.InBatch(); n != 0 {
		t.Fatalf("%d generations left in the batch", n)
	}
}
