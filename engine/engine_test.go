package engine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/backend/cpu"
	"github.com/edgellm/edgellm/internal/testfiles"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/sample"
)

// From models/stories260K/reference-greedy.md (llama.cpp).
var (
	onceIDs    = []int32{432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337, 410, 408, 419, 292, 411, 322, 265, 282, 295, 433, 426, 385, 328, 432, 358, 394, 261, 370, 432, 352, 266, 268, 388, 426, 338, 391, 266, 267, 337, 335, 312, 432, 398, 312, 286, 267, 414, 270, 333, 415, 426, 13, 438, 310, 439, 419, 357, 336, 432, 313, 438, 310, 432, 278, 316, 439, 419, 298, 414, 267, 265, 282, 295, 433, 426, 436, 317, 286, 296, 418, 269, 279, 292, 416, 439, 413, 409, 416, 327, 263, 415, 294, 267, 400}
	onceText   = ", there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.\nLily's mom said, \"Lily, let's go to the park.\" Lily was sad and didn't know what to do"
	onceprompt = []int32{1, 403, 407, 261, 378}
	emptyIDs   = append([]int32{403, 407, 261, 378}, onceIDs[:96]...)
)

// stories is one of stories260K's files.
func stories(t *testing.T, name string) string {
	t.Helper()
	return testfiles.Path(t, "models/stories260K/"+name)
}

func loadStories(t *testing.T, opts Options) *Model {
	t.Helper()
	if opts.ContextLen == 0 {
		opts.ContextLen = 512
	}
	if opts.Threads == 0 {
		opts.Threads = 2
	}
	m, err := Load(stories(t, "stories260K-f32.gguf"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// collect runs req and returns the ids and text streamed.
func collect(t *testing.T, m *Model, req Request) ([]int32, string, Stats) {
	t.Helper()
	var ids []int32
	var text strings.Builder
	st, err := m.Generate(context.Background(), req, func(tk Token) error {
		if tk.ID >= 0 {
			ids = append(ids, tk.ID)
		}
		text.WriteString(tk.Text)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids, text.String(), st
}

func TestGreedyStories(t *testing.T) {
	m := loadStories(t, Options{})
	ids, text, st := collect(t, m, Request{Prompt: "Once upon a time", MaxTokens: 100, IgnoreEOS: true})
	if !slices.Equal(ids, onceIDs) {
		t.Fatalf("ids\n got %v\nwant %v", ids, onceIDs)
	}
	if text != onceText {
		t.Fatalf("text\n got %q\nwant %q", text, onceText)
	}
	if st.PromptTokens != 5 || st.GeneratedTokens != 100 || st.DoneReason != DoneLength || len(st.Latencies) != 100 {
		t.Fatalf("stats %+v", st)
	}
	if s := st.Summary(); !strings.Contains(s, "generated 100 tokens") {
		t.Fatalf("summary %q", s)
	}

	// The empty prompt is BOS alone.
	ids, _, _ = collect(t, m, Request{Prompt: "", MaxTokens: 100, IgnoreEOS: true})
	if !slices.Equal(ids, emptyIDs) {
		t.Fatalf("empty prompt ids\n got %v\nwant %v", ids, emptyIDs)
	}
}

func TestLlama2CCheckpoint(t *testing.T) {
	m, err := Load(stories(t, "stories260K.bin"), Options{TokenizerPath: stories(t, "tok512.bin"), ContextLen: 512, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ids, _, _ := collect(t, m, Request{Prompt: "Once upon a time", MaxTokens: 40, IgnoreEOS: true})
	if !slices.Equal(ids, onceIDs[:40]) {
		t.Fatalf("ids\n got %v\nwant %v", ids, onceIDs[:40])
	}
}

func TestPrefixReuse(t *testing.T) {
	m := loadStories(t, Options{})
	collect(t, m, Request{Tokens: onceprompt, MaxTokens: 10})
	// The cache holds the prompt and 9 decoded tokens; extend it.
	next := append(slices.Clone(onceprompt), onceIDs[:10]...)
	ids, _, st := collect(t, m, Request{Tokens: next, MaxTokens: 20, IgnoreEOS: true})
	if st.CachedTokens != 14 {
		t.Fatalf("cached %d tokens, want 14", st.CachedTokens)
	}
	if !slices.Equal(ids, onceIDs[10:30]) {
		t.Fatalf("ids after reuse\n got %v\nwant %v", ids, onceIDs[10:30])
	}
	// A diverging prompt rewinds to the common prefix.
	ids, _, st = collect(t, m, Request{Tokens: onceprompt, MaxTokens: 5})
	if st.CachedTokens != 4 || !slices.Equal(ids, onceIDs[:5]) {
		t.Fatalf("after rewind: cached %d, ids %v", st.CachedTokens, ids)
	}
}

func TestStopConditions(t *testing.T) {
	m := loadStories(t, Options{ContextLen: 16})
	// Context end: 16 positions, 5 prompt tokens: 11 decoded + 1 sampled.
	ids, _, st := collect(t, m, Request{Tokens: onceprompt, IgnoreEOS: true})
	if st.DoneReason != DoneLength || len(ids) != 12 || !slices.Equal(ids, onceIDs[:12]) {
		t.Fatalf("context end: reason %q, ids %v", st.DoneReason, ids)
	}
	// Stop string: the text ends right before it and is never streamed.
	m2 := loadStories(t, Options{})
	_, text, st := collect(t, m2, Request{Prompt: "Once upon a time", Stop: []string{"Lily", "zzz"}, MaxTokens: 100})
	if st.DoneReason != DoneStop || text != ", there was a little girl named " {
		t.Fatalf("stop string: reason %q, text %q", st.DoneReason, text)
	}
	// A prompt longer than the context is an error.
	long := slices.Repeat([]int32{1}, 17)
	if _, err := m.Generate(context.Background(), Request{Tokens: long}, func(Token) error { return nil }); err == nil || !strings.Contains(err.Error(), "does not fit") {
		t.Fatalf("long prompt: %v", err)
	}
	if _, err := m.Generate(context.Background(), Request{Tokens: []int32{1, 9999}}, func(Token) error { return nil }); err == nil {
		t.Fatal("out-of-vocabulary prompt accepted")
	}
	if _, err := m.Generate(context.Background(), Request{Tokens: []int32{}}, func(Token) error { return nil }); err == nil {
		t.Fatal("empty token prompt accepted")
	}
}

func TestEOG(t *testing.T) {
	m := loadStories(t, Options{})
	// stories260K ends stories with EOS (2) soon enough from this start.
	ids, _, st := collect(t, m, Request{Prompt: "Once upon a time", MaxTokens: 400})
	if st.DoneReason == DoneStop {
		if slices.Contains(ids, m.Tokenizer().EOS()) {
			t.Fatal("the EOG token was streamed")
		}
	} else if st.DoneReason != DoneLength {
		t.Fatalf("reason %q", st.DoneReason)
	}
	// Its logits are those of a greedy run: the first 100 are the reference.
	if len(ids) < 100 || !slices.Equal(ids[:100], onceIDs) {
		t.Fatalf("ids %v", ids)
	}
}

func TestCancel(t *testing.T) {
	m := loadStories(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	st, err := m.Generate(ctx, Request{Prompt: "Once upon a time", IgnoreEOS: true}, func(Token) error {
		n++
		if n == 5 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || st.DoneReason != DoneCancel || st.GeneratedTokens != 5 {
		t.Fatalf("cancel: err %v, stats %+v", err, st)
	}
	// A cancelled context stops before any work.
	if _, err := m.Generate(ctx, Request{Prompt: "x"}, func(Token) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("pre-cancelled: %v", err)
	}
	// A callback error ends the generation with that error.
	boom := errors.New("boom")
	st, err = m.Generate(context.Background(), Request{Prompt: "Once"}, func(Token) error { return boom })
	if err != boom || st.GeneratedTokens != 1 {
		t.Fatalf("callback error: %v, %+v", err, st)
	}
	// The model is still usable and exact afterwards.
	ids, _, _ := collect(t, m, Request{Tokens: onceprompt, MaxTokens: 10})
	if !slices.Equal(ids, onceIDs[:10]) {
		t.Fatalf("after errors: %v", ids)
	}
}

func TestSeededSampling(t *testing.T) {
	m := loadStories(t, Options{})
	p := sample.Params{Temperature: 0.9, TopK: 40, TopP: 0.95, RepeatPenalty: 1.1, RepeatLastN: 64, Seed: 42}
	req := Request{Prompt: "Once upon a time", MaxTokens: 60, IgnoreEOS: true, Sampling: p}
	a, _, _ := collect(t, m, req)
	b, _, _ := collect(t, m, req)
	if !slices.Equal(a, b) {
		t.Fatalf("same seed, different output:\n%v\n%v", a, b)
	}
	req.Sampling.Seed = 7
	c, _, _ := collect(t, m, req)
	if slices.Equal(a, c) {
		t.Fatal("different seeds gave the same 60 tokens")
	}
}

func TestStream(t *testing.T) {
	m := loadStories(t, Options{})
	var ids []int32
	for tk, err := range m.Stream(context.Background(), Request{Tokens: onceprompt, IgnoreEOS: true}) {
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, tk.ID)
		if len(ids) == 3 {
			break
		}
	}
	if !slices.Equal(ids, onceIDs[:3]) {
		t.Fatalf("stream %v", ids)
	}
	for _, err := range m.Stream(context.Background(), Request{Tokens: []int32{-1}}) {
		if err == nil {
			t.Fatal("bad prompt streamed no error")
		}
	}
}

// The inner step (sample + stream decode + backend decode) allocates at
// most the token's text string.
func TestStepAllocs(t *testing.T) {
	m := loadStories(t, Options{})
	collect(t, m, Request{Tokens: onceprompt, MaxTokens: 1})
	smp, err := sample.New(m.Config().Vocab, sample.Params{Temperature: 0.8, TopK: 40, TopP: 0.9, RepeatPenalty: 1.1, RepeatLastN: 64, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	g := stepper{m: m, q: &m.seq, smp: smp, dec: m.tok.NewDecoder(), ignoreEOS: true}
	sink := 0
	allocs := testing.AllocsPerRun(100, func() {
		if len(m.seq.hist) > m.ctxLen-2 {
			m.seq.hist = m.seq.hist[:10]
			if err := m.seq.sess.Rewind(10); err != nil {
				t.Fatal(err)
			}
		}
		id, _, err := g.sample()
		if err != nil {
			t.Fatal(err)
		}
		sink += len(g.dec.Add(id))
		if err := g.decode(id); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 {
		t.Fatalf("%v allocations per token", allocs)
	}
	_ = sink
}

func TestBackends(t *testing.T) {
	path := stories(t, "stories260K-f32.gguf")
	if _, err := Load(path, Options{Backend: "nosuch"}); err == nil {
		t.Fatal("unknown backend accepted")
	}
	calls := 0
	RegisterBackend("test-wrap", func(w *model.Weights, o Options) (backend.Model, error) {
		calls++
		return cpu.Load(w, cpu.Options{Threads: o.Threads})
	})
	m, err := Load(path, Options{Backend: "test-wrap", Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if calls != 1 || m.Backend().Name() != "cpu" || m.ContextLen() != 128 {
		t.Fatalf("calls %d, backend %s, ctx %d", calls, m.Backend().Name(), m.ContextLen())
	}
	// A failing cuda falls back to cpu under auto.
	realCUDA, hadCUDA := lookupBackend("cuda")
	RegisterBackend("cuda", func(*model.Weights, Options) (backend.Model, error) { return nil, errors.New("no driver") })
	defer func() {
		regMu.Lock()
		delete(registry, "cuda")
		if hadCUDA {
			registry["cuda"] = realCUDA
		}
		regMu.Unlock()
	}()
	m2, err := Load(path, Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	m2.Close()
	if m2.Backend().Name() != "cpu" {
		t.Fatal("auto did not fall back to cpu")
	}
	if _, err := Load(path, Options{Backend: "cuda"}); err == nil {
		t.Fatal("explicit failing backend accepted")
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.gguf"), Options{}); err == nil {
		t.Fatal("missing file accepted")
	}
	bad := filepath.Join(t.TempDir(), "bad.gguf")
	os.WriteFile(bad, []byte("GGUF\x03\x00\x00\x00junk"), 0o644)
	if _, err := Load(bad, Options{}); err == nil {
		t.Fatal("corrupt file accepted")
	}
}

// argmaxModel wraps the cpu backend with a host-side ArgmaxDecoder, standing
// in for a device that picks greedy tokens itself.
type argmaxModel struct {
	backend.Model
	calls *int
}

type argmaxSession struct {
	backend.Session
	logits []float32
	calls  *int
}

func (a argmaxModel) NewSession(ctx int) (backend.Session, error) {
	s, err := a.Model.NewSession(ctx)
	if err != nil {
		return nil, err
	}
	return &argmaxSession{Session: s, logits: make([]float32, a.Config().Vocab), calls: a.calls}, nil
}

func (s *argmaxSession) DecodeArgmax(tok int32) (int32, error) {
	*s.calls++
	if err := s.Decode(tok, s.logits); err != nil {
		return 0, err
	}
	best := int32(0)
	for i, v := range s.logits {
		if v > s.logits[best] {
			best = int32(i)
		}
	}
	return best, nil
}

func TestArgmaxDecoder(t *testing.T) {
	calls := 0
	RegisterBackend("test-argmax", func(w *model.Weights, o Options) (backend.Model, error) {
		m, err := cpu.Load(w, cpu.Options{Threads: o.Threads})
		return argmaxModel{Model: m, calls: &calls}, err
	})
	m := loadStories(t, Options{Backend: "test-argmax"})
	ids, _, _ := collect(t, m, Request{Tokens: onceprompt, MaxTokens: 30, IgnoreEOS: true})
	if !slices.Equal(ids, onceIDs[:30]) || calls != 29 {
		t.Fatalf("argmax path: %d calls, ids %v", calls, ids)
	}
	// Sampling (or a repetition penalty) needs the logits: no argmax calls.
	calls = 0
	collect(t, m, Request{Tokens: onceprompt, MaxTokens: 10, Sampling: sample.Params{Temperature: 1, Seed: 1}})
	collect(t, m, Request{Tokens: onceprompt, MaxTokens: 10, Sampling: sample.Params{RepeatPenalty: 1.3, RepeatLastN: 8}})
	if calls != 0 {
		t.Fatalf("%d argmax calls while sampling", calls)
	}
}

// samplingModel wraps the cpu backend with a host-side SamplingDecoder,
// standing in for a device that draws tokens itself: it draws with package
// sample from its own logits and refuses top-k 0.
type samplingModel struct {
	backend.Model
	calls   *int
	history *[]int32
}

type samplingSession struct {
	backend.Session
	logits  []float32
	smp     *sample.Sampler
	calls   *int
	history *[]int32
}

func (a samplingModel) NewSession(ctx int) (backend.Session, error) {
	s, err := a.Model.NewSession(ctx)
	if err != nil {
		return nil, err
	}
	return &samplingSession{Session: s, logits: make([]float32, a.Config().Vocab), calls: a.calls, history: a.history}, nil
}

func (s *samplingSession) SetSampling(p sample.Params, history []int32) (bool, error) {
	if p.TopK <= 0 {
		return false, nil
	}
	smp, err := sample.New(len(s.logits), p)
	if err != nil {
		return false, err
	}
	for _, t := range history {
		smp.Accept(t)
	}
	s.smp = smp
	*s.history = slices.Clone(history)
	return true, nil
}

func (s *samplingSession) DecodeSample(tok int32) (int32, error) {
	*s.calls++
	s.smp.Accept(tok)
	if err := s.Decode(tok, s.logits); err != nil {
		return 0, err
	}
	return s.smp.Sample(s.logits)
}

func TestSamplingDecoder(t *testing.T) {
	calls := 0
	var history []int32
	RegisterBackend("test-sampling", func(w *model.Weights, o Options) (backend.Model, error) {
		m, err := cpu.Load(w, cpu.Options{Threads: o.Threads})
		return samplingModel{Model: m, calls: &calls, history: &history}, err
	})
	m := loadStories(t, Options{Backend: "test-sampling"})
	p := sample.Params{Temperature: 0.9, TopK: 20, TopP: 0.9, Seed: 7, RepeatPenalty: 1.2, RepeatLastN: 8}
	ids, _, _ := collect(t, m, Request{Tokens: onceprompt, MaxTokens: 12, IgnoreEOS: true, Sampling: p})
	if len(ids) != 12 || calls != 11 || !slices.Equal(history, onceprompt) {
		t.Fatalf("device sampling: %d ids, %d calls, history %v (prompt %v)", len(ids), calls, history, onceprompt)
	}
	// Greedy uses neither; parameters the device refuses stay on the host.
	calls = 0
	collect(t, m, Request{Tokens: onceprompt, MaxTokens: 5})
	collect(t, m, Request{Tokens: onceprompt, MaxTokens: 5, Sampling: sample.Params{Temperature: 1, Seed: 1}})
	if calls != 0 {
		t.Fatalf("%d device draws for greedy or refused parameters", calls)
	}
}

// A GGUF without a vocabulary generates from token ids.
func TestNoVocabulary(t *testing.T) {
	path := testfiles.Path(t, "models/tiny-random/tiny-bitnet-tq2_0.gguf")
	m, err := Load(path, Options{Threads: 2, ContextLen: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ids, _, st := collect(t, m, Request{Tokens: []int32{5, 42, 79}, MaxTokens: 4, IgnoreEOS: true})
	if len(ids) != 4 || st.DoneReason != DoneLength {
		t.Fatalf("ids %v, stats %+v", ids, st)
	}
}

// A prompt longer than one prefill chunk gives the reference's greedy
// continuation.
func TestLongPrompt(t *testing.T) {
	m := loadStories(t, Options{})
	long := []int32{1}
	for range 3 {
		long = append(long, onceIDs...)
	}
	ids, _, st := collect(t, m, Request{Tokens: long, MaxTokens: 5, IgnoreEOS: true})
	if st.PromptTokens != 301 || len(ids) != 5 {
		t.Fatalf("stats %+v, ids %v", st, ids)
	}
	ref := model.NewReference(m.Weights(), 512)
	var logits []float32
	for p, tok := range long {
		logits = ref.Forward(tok, p)
	}
	for p, want := range ids {
		best := int32(0)
		for i, v := range logits {
			if v > logits[best] {
				best = int32(i)
			}
		}
		if best != want {
			t.Fatalf("token %d: engine %d, reference %d", p, want, best)
		}
		logits = ref.Forward(best, len(long)+p)
	}
}
