package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/backend/cpu"
	"github.com/edgellm/edgellm/internal/testmodel"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/sample"
)

// registerDev registers testmodel.Device over the cpu backend (a device
// that batches and picks tokens itself, as the GPU) under name; the model
// a Load makes is then at the pointer.
func registerDev(t *testing.T, name string) **testmodel.Device {
	var cur *testmodel.Device
	RegisterBackend(name, func(w *model.Weights, o Options) (backend.Model, error) {
		m, err := cpu.Load(w, cpu.Options{Threads: o.Threads})
		if err != nil {
			return nil, err
		}
		cur, err = testmodel.NewDevice(m)
		return cur, err
	})
	return &cur
}

// devGreedy are 16 greedy requests of different prompts and lengths.
func devGreedy() []Request {
	prompts := []string{"Once upon a time", "The cat", "Lily and Ben went", "One day", "Tim", "", "She saw a big", "The sun"}
	var reqs []Request
	for i := range 16 {
		reqs = append(reqs, Request{Prompt: prompts[i%len(prompts)], MaxTokens: 20 + 3*i, IgnoreEOS: i%3 == 0})
	}
	return reqs
}

// runAll runs reqs at once on m and returns what each gave.
func runAll(m *Model, reqs []Request) []result {
	got := make([]result, len(reqs))
	var wg sync.WaitGroup
	for i, req := range reqs {
		wg.Go(func() { got[i] = run(m, context.Background(), req) })
	}
	wg.Wait()
	return got
}

func sameResults(t *testing.T, what string, got, want []result) {
	t.Helper()
	for i := range want {
		g, w := got[i], want[i]
		if g.err != nil || !slices.Equal(g.ids, w.ids) || g.text != w.text || g.reason != w.reason || g.n != w.n {
			t.Errorf("%s: request %d: %d tokens %q (%s, err %v)\n want %d tokens %q (%s)", what, i, g.n, g.text, g.reason, g.err, w.n, w.text, w.reason)
		}
	}
}

// Sixteen greedy requests batched on a device that picks tokens: each
// gives exactly what it gives alone on the CPU, and no step brings logits
// back.
func TestDeviceBatchGreedy(t *testing.T) {
	reqs := devGreedy()
	serial := loadStories(t, Options{})
	want := make([]result, len(reqs))
	for i, req := range reqs {
		want[i] = run(serial, context.Background(), req)
	}
	dev := registerDev(t, "test-dev-greedy")
	var m *Model
	gather := gatherOnFirstStep(t, &m, len(reqs))
	m = loadStories(t, Options{Backend: "test-dev-greedy", Parallel: 16, OnStep: gather})
	sameResults(t, "batched on the device", runAll(m, reqs), want)
	d := *dev
	if d.Batches.Load() != 0 || d.Samples.Load() == 0 {
		t.Fatalf("%d DecodeBatch and %d DecodeBatchSample steps: greedy steps should all pick on the device", d.Batches.Load(), d.Samples.Load())
	}
	if _, batched := m.BatchCounts(); batched == 0 {
		t.Fatal("never batched")
	}
}

// Seeded sampling the device accepts gives the same tokens alone (the
// serial path's DecodeSample) and batched (DecodeBatchSample), run after
// run.
func TestDeviceBatchSeeded(t *testing.T) {
	var reqs []Request
	for i := range 8 {
		reqs = append(reqs, Request{Prompt: []string{"Once upon a time", "The cat", "One day"}[i%3], MaxTokens: 30, IgnoreEOS: true,
			Sampling: sample.Params{Temperature: 0.9, TopK: 40, TopP: 0.95, RepeatPenalty: 1.1, RepeatLastN: 16, Seed: uint64(i + 1)}})
	}
	dev := registerDev(t, "test-dev-seeded")
	lone := loadStories(t, Options{Backend: "test-dev-seeded"})
	want := make([]result, len(reqs))
	for i, req := range reqs {
		want[i] = run(lone, context.Background(), req)
	}
	if (*dev).Armed.Load() != int64(len(reqs)) {
		t.Fatalf("the serial path armed the device sampler %d times for %d requests", (*dev).Armed.Load(), len(reqs))
	}
	var m *Model
	gather := gatherOnFirstStep(t, &m, len(reqs))
	m = loadStories(t, Options{Backend: "test-dev-seeded", Parallel: 8, OnStep: gather})
	d := *dev
	sameResults(t, "batched", runAll(m, reqs), want)
	sameResults(t, "batched again", runAll(m, reqs), want)
	if d.Batches.Load() != 0 || d.Samples.Load() == 0 {
		t.Fatalf("%d DecodeBatch and %d DecodeBatchSample steps", d.Batches.Load(), d.Samples.Load())
	}
	// Different seeds draw differently (the test would pass vacuously if
	// every request followed the argmax).
	if slices.Equal(want[0].ids, want[3].ids) {
		t.Fatalf("seeds 1 and 4 drew the same %v", want[0].ids)
	}
}

// A batch that mixes greedy, device-drawn and host-drawn requests: while
// the host one runs every step brings logits back and the host samples for
// all; then the steps go back to the device, the drawing requests
// re-arming their samplers with their whole history. Greedy and host
// requests give what they give alone; a greedy request on a slot a drawing
// one used gets the argmax again.
func TestDeviceBatchMixed(t *testing.T) {
	devP := sample.Params{Temperature: 0.8, TopK: 30, Seed: 5}
	hostP := sample.Params{Temperature: 0.8, Seed: 9} // top-k 0: the device refuses it
	reqs := []Request{
		{Prompt: "Once upon a time", MaxTokens: 40, IgnoreEOS: true},
		{Prompt: "The cat", MaxTokens: 35, IgnoreEOS: true},
		{Prompt: "One day", MaxTokens: 40, IgnoreEOS: true, Sampling: devP},
		{Prompt: "Lily", MaxTokens: 40, IgnoreEOS: true, Sampling: devP},
		{Prompt: "Tim", MaxTokens: 6, IgnoreEOS: true, Sampling: hostP},
	}
	serial := loadStories(t, Options{})
	want := make([]result, len(reqs))
	for i, req := range reqs {
		want[i] = run(serial, context.Background(), req)
	}
	dev := registerDev(t, "test-dev-mixed")
	var m *Model
	gather := gatherOnFirstStep(t, &m, len(reqs))
	m = loadStories(t, Options{Backend: "test-dev-mixed", Parallel: 5, OnStep: gather})
	d := *dev
	got := runAll(m, reqs)
	for _, i := range []int{0, 1, 4} {
		sameResults(t, fmt.Sprint("mixed, request ", i), got[i:i+1], want[i:i+1])
	}
	for _, i := range []int{2, 3} {
		if got[i].err != nil || got[i].n != 40 || len(got[i].ids) != 40 {
			t.Errorf("device-drawn request %d: %d tokens, err %v", i, got[i].n, got[i].err)
		}
	}
	if d.Batches.Load() == 0 || d.Samples.Load() == 0 {
		t.Fatalf("%d DecodeBatch and %d DecodeBatchSample steps: want both", d.Batches.Load(), d.Samples.Load())
	}
	// Two at join, two re-armed after the host steps.
	// (Device fails a SetSampling whose history is not the whole cache.)
	if d.Armed.Load() < 4 {
		t.Fatalf("samplers armed %d times", d.Armed.Load())
	}
	// The slots again, all greedy: the drawing requests' sessions are
	// disarmed and pick the argmax.
	greedy := make([]Request, len(reqs))
	for i := range reqs {
		greedy[i] = Request{Prompt: reqs[i].Prompt, MaxTokens: 25, IgnoreEOS: true}
	}
	wantG := make([]result, len(greedy))
	for i, req := range greedy {
		wantG[i] = run(serial, context.Background(), req)
	}
	batches := d.Batches.Load()
	sameResults(t, "greedy after sampling", runAll(m, greedy), wantG)
	if d.Batches.Load() != batches {
		t.Fatalf("%d greedy steps brought logits back", d.Batches.Load()-batches)
	}
}

// A failing device step ends its requests with the error and frees their
// slots.
func TestDeviceBatchError(t *testing.T) {
	dev := registerDev(t, "test-dev-err")
	m := loadStories(t, Options{Backend: "test-dev-err", Parallel: 2})
	(*dev).Fail.Store(true)
	r := run(m, context.Background(), Request{Tokens: onceprompt, MaxTokens: 5})
	if r.err == nil || !strings.Contains(r.err.Error(), "engine: decode: testmodel: device step failed") || r.reason != DoneError || r.n != 1 {
		t.Fatalf("failing step: %d tokens, %s, %v", r.n, r.reason, r.err)
	}
	(*dev).Fail.Store(false)
	for range 2 {
		if r := run(m, context.Background(), Request{Tokens: onceprompt, MaxTokens: 10}); !slices.Equal(r.ids, onceIDs[:10]) {
			t.Fatalf("after the failure: %v %v", r.ids, r.err)
		}
	}
}

// The step on the device allocates nothing but each token's text.
func TestStepDeviceAllocs(t *testing.T) {
	registerDev(t, "test-dev-allocs")
	m := loadStories(t, Options{Backend: "test-dev-allocs"})
	for _, p := range []sample.Params{{}, {Temperature: 0.8, TopK: 40, Seed: 3}} {
		if allocs := stepAllocs(t, m, p); allocs > 4 {
			t.Fatalf("%+v: %v allocations per step of 4 sequences", p, allocs)
		}
	}
}
