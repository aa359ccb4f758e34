package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/backend/cpu"
	"github.com/edgellm/edgellm/engine"
	"github.com/edgellm/edgellm/internal/testmodel"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/version"
	"github.com/ollama/ollama/api"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

func greedy(extra map[string]any) map[string]any {
	o := map[string]any{"temperature": 0}
	for k, v := range extra {
		o[k] = v
	}
	return o
}

// The official Ollama client, streaming and not: a model with no chat
// template continues the prompt exactly as llama.cpp's greedy reference.
func TestOllamaClientGenerate(t *testing.T) {
	base := startServer(t, newTestServer(t, nil))
	c := api.NewClient(base, http.DefaultClient)
	ctx := context.Background()
	refIDs, refText := referenceGreedy(t)

	var chunks int
	var text strings.Builder
	var final api.GenerateResponse
	err := c.Generate(ctx, &api.GenerateRequest{Model: "stories", Prompt: "Once upon a time",
		Options: greedy(map[string]any{"num_predict": len(refIDs), "num_ctx": 512})},
		func(r api.GenerateResponse) error {
			chunks++
			text.WriteString(r.Response)
			if r.Done {
				final = r
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if text.String() != refText {
		t.Errorf("text:\n got %q\nwant %q", text.String(), refText)
	}
	if chunks < 10 {
		t.Errorf("only %d chunks: not streamed", chunks)
	}
	if !final.Done || final.DoneReason != "length" || final.EvalCount != len(refIDs) || final.PromptEvalCount != 5 {
		t.Errorf("final: done %v reason %q eval %d prompt %d", final.Done, final.DoneReason, final.EvalCount, final.PromptEvalCount)
	}
	if final.TotalDuration <= 0 || final.EvalDuration <= 0 || final.PromptEvalDuration <= 0 || final.LoadDuration <= 0 {
		t.Errorf("durations missing: %+v", final.Metrics)
	}
	if len(final.Context) != 5+len(refIDs) {
		t.Fatalf("context has %d ids, want %d", len(final.Context), 5+len(refIDs))
	}
	for i, id := range refIDs {
		if int32(final.Context[5+i]) != id {
			t.Fatalf("generated id %d = %d, want %d", i, final.Context[5+i], id)
		}
	}

	// Not streamed: one object, the same text; the model is loaded now.
	stream := false
	calls := 0
	err = c.Generate(ctx, &api.GenerateRequest{Model: "stories:latest", Prompt: "Once upon a time", Stream: &stream,
		Options: greedy(map[string]any{"num_predict": 20, "num_ctx": 512})},
		func(r api.GenerateResponse) error {
			calls++
			if !r.Done || !strings.HasPrefix(refText, r.Response) || len(r.Response) < 20 || r.LoadDuration != 0 {
				t.Errorf("unstreamed: %+v", r)
			}
			return nil
		})
	if err != nil || calls != 1 {
		t.Fatalf("unstreamed: %v, %d calls", err, calls)
	}

	// Continuing a context: the same tokens as one long prompt.
	var first, cont api.GenerateResponse
	c.Generate(ctx, &api.GenerateRequest{Model: "stories", Prompt: "Once upon a time", Stream: &stream,
		Options: greedy(map[string]any{"num_predict": 5})}, func(r api.GenerateResponse) error { first = r; return nil })
	err = c.Generate(ctx, &api.GenerateRequest{Model: "stories", Context: first.Context, Stream: &stream,
		Options: greedy(map[string]any{"num_predict": 5})}, func(r api.GenerateResponse) error { cont = r; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(cont.Context) != 15 || !strings.HasPrefix(refText, first.Response+cont.Response) {
		t.Errorf("continued context: %d ids, text %q", len(cont.Context), first.Response+cont.Response)
	}

	// Unknown model: the client sees a 404 StatusError.
	err = c.Generate(ctx, &api.GenerateRequest{Model: "nope", Prompt: "x"}, func(api.GenerateResponse) error { return nil })
	var se api.StatusError
	if !errors.As(err, &se) || se.StatusCode != http.StatusNotFound || !strings.Contains(se.ErrorMessage, "not found") {
		t.Errorf("unknown model: %v", err)
	}

	// List, show, ps, version.
	list, err := c.List(ctx)
	if err != nil || len(list.Models) != 1 || list.Models[0].Name != "stories" || list.Models[0].Details.Family != "llama" {
		t.Errorf("list: %+v %v", list, err)
	}
	show, err := c.Show(ctx, &api.ShowRequest{Model: "stories"})
	if err != nil || show.ModelInfo["llama.context_length"] != float64(128) || show.Details.QuantizationLevel != "F32" {
		t.Errorf("show: %+v %v", show, err)
	}
	ps, err := c.ListRunning(ctx)
	if err != nil || len(ps.Models) != 1 || ps.Models[0].ContextLength != 128 {
		t.Errorf("ps: %+v %v", ps, err)
	}
	v, err := c.Version(ctx)
	if err != nil || v != version.Version {
		t.Errorf("version %q %v", v, err)
	}
}

func TestOllamaClientChat(t *testing.T) {
	base := startServer(t, newTestServer(t, nil))
	c := api.NewClient(base, http.DefaultClient)
	ctx := context.Background()
	msgs := []api.Message{{Role: "system", Content: "Tell a story."}, {Role: "user", Content: "Once upon a time"}}
	var streamed strings.Builder
	var final api.ChatResponse
	err := c.Chat(ctx, &api.ChatRequest{Model: "stories", Messages: msgs, Options: greedy(map[string]any{"num_predict": 24})},
		func(r api.ChatResponse) error {
			if r.Message.Role != "assistant" {
				t.Errorf("role %q", r.Message.Role)
			}
			streamed.WriteString(r.Message.Content)
			if r.Done {
				final = r
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	// The plain template's prompt: "system: Tell a story.\nuser: Once upon a time\nassistant: ".
	if final.DoneReason == "" || final.PromptEvalCount < 15 || streamed.Len() == 0 {
		t.Errorf("chat: %q final %+v", streamed.String(), final)
	}
	f := false
	var one api.ChatResponse
	err = c.Chat(ctx, &api.ChatRequest{Model: "stories", Messages: msgs, Stream: &f, Options: greedy(map[string]any{"num_predict": 24})},
		func(r api.ChatResponse) error { one = r; return nil })
	if err != nil || one.Message.Content != streamed.String() || one.EvalCount != final.EvalCount {
		t.Errorf("unstreamed chat %q (%v), streamed %q", one.Message.Content, err, streamed.String())
	}
}

func oaiClient(base string) openai.Client {
	return openai.NewClient(option.WithBaseURL(base+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
}

// The official OpenAI SDK: chat and completions, streaming and not.
func TestOpenAIClient(t *testing.T) {
	base := startServer(t, newTestServer(t, nil))
	c := oaiClient(base.String())
	ctx := context.Background()
	_, refText := referenceGreedy(t)

	comp, err := c.Completions.New(ctx, openai.CompletionNewParams{
		Model:     openai.CompletionNewParamsModel("stories"),
		Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")},
		MaxTokens: openai.Int(30), Temperature: openai.Float(0),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(comp.Choices) != 1 || !strings.HasPrefix(refText, comp.Choices[0].Text) || len(comp.Choices[0].Text) < 30 {
		t.Errorf("completion: %+v", comp.Choices)
	}
	if comp.Choices[0].FinishReason != "length" || comp.Usage.CompletionTokens != 30 || comp.Usage.PromptTokens != 5 || comp.Usage.TotalTokens != 35 {
		t.Errorf("completion: finish %q usage %+v", comp.Choices[0].FinishReason, comp.Usage)
	}

	cs := c.Completions.NewStreaming(ctx, openai.CompletionNewParams{
		Model:     openai.CompletionNewParamsModel("stories"),
		Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")},
		MaxTokens: openai.Int(30), Temperature: openai.Float(0),
	})
	var ctext strings.Builder
	var cfinish string
	for cs.Next() {
		for _, ch := range cs.Current().Choices {
			ctext.WriteString(ch.Text)
			if ch.FinishReason != "" {
				cfinish = string(ch.FinishReason)
			}
		}
	}
	if err := cs.Err(); err != nil {
		t.Fatal(err)
	}
	if ctext.String() != comp.Choices[0].Text || cfinish != "length" {
		t.Errorf("streamed completion %q (%q), want %q", ctext.String(), cfinish, comp.Choices[0].Text)
	}

	params := openai.ChatCompletionNewParams{
		Model:       "stories",
		Messages:    []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("Tell a story."), openai.UserMessage("Once upon a time")},
		MaxTokens:   openai.Int(16),
		Temperature: openai.Float(0),
	}
	chat, err := c.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if len(chat.Choices) != 1 || chat.Choices[0].Message.Content == "" || chat.Choices[0].FinishReason == "" || chat.Usage.CompletionTokens == 0 {
		t.Errorf("chat: %+v", chat)
	}

	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	st := c.Chat.Completions.NewStreaming(ctx, params)
	acc := openai.ChatCompletionAccumulator{}
	for st.Next() {
		acc.AddChunk(st.Current())
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	if len(acc.Choices) != 1 || acc.Choices[0].Message.Content != chat.Choices[0].Message.Content ||
		acc.Choices[0].FinishReason != chat.Choices[0].FinishReason || acc.Usage.TotalTokens != chat.Usage.TotalTokens {
		t.Errorf("streamed chat %+v usage %+v, want %q %+v", acc.Choices, acc.Usage, chat.Choices[0].Message.Content, chat.Usage)
	}

	models, err := c.Models.List(ctx)
	if err != nil || len(models.Data) != 1 || models.Data[0].ID != "stories" {
		t.Errorf("models: %+v %v", models, err)
	}

	_, err = c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "nope",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
	var ae *openai.Error
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusNotFound || !strings.Contains(ae.Message, "not found") {
		t.Errorf("unknown model: %v", err)
	}
}

// A client that goes away mid-stream cancels its generation, frees the
// slot, and the next request is served. One request at a time, so that
// holding its callback holds the generation (batched generation runs
// ahead of its consumer: see TestBatchedCancel).
func TestCancelMidStream(t *testing.T) {
	s := newTestServer(t, func(c *Config) { c.Parallel = 1 })
	reached := make(chan struct{})
	var once sync.Once
	n := 0
	s.afterToken = func(ctx context.Context) {
		n++ // generations on one model are serialised
		if n == 3 {
			once.Do(func() { close(reached) })
			select { // hold the generation until the client is gone
			case <-ctx.Done():
			case <-time.After(20 * time.Second):
			}
		}
	}
	base := startServer(t, s)
	c := api.NewClient(base, http.DefaultClient)
	// The client walks away after its third chunk (the Ollama client closes
	// the response body when its callback fails).
	errGone := errors.New("client walks away")
	chunks := 0
	err := c.Generate(context.Background(), &api.GenerateRequest{Model: "stories", Prompt: "Once upon a time",
		Options: greedy(map[string]any{"num_predict": 100})}, func(api.GenerateResponse) error {
		if chunks++; chunks == 3 {
			<-reached
			return errGone
		}
		return nil
	})
	if !errors.Is(err, errGone) {
		t.Fatalf("abandoned generate: %v", err)
	}
	// The next request gets the slot once the abandoned one has stopped,
	// and runs to its end.
	f := false
	var r api.GenerateResponse
	if err := c.Generate(context.Background(), &api.GenerateRequest{Model: "stories", Prompt: "Once", Stream: &f,
		Options: greedy(map[string]any{"num_predict": 7})}, func(x api.GenerateResponse) error { r = x; return nil }); err != nil {
		t.Fatal(err)
	}
	if r.EvalCount != 7 {
		t.Errorf("after cancel: %d tokens", r.EvalCount)
	}
	// 3 tokens for the cancelled one (it stopped at once), 7 for the next.
	if got := metricValue(t, base, `edgellm_generated_tokens_total{model="stories"}`); got != "10" {
		t.Errorf("generated tokens total %s, want 10", got)
	}
	if got := metricValue(t, base, `edgellm_active_generations{model="stories"}`); got != "0" {
		t.Errorf("active generations %s after both ended", got)
	}
}

// 16 concurrent clients with greedy sampling each get exactly the tokens a
// lone client gets, batched (4 at a time, the default).
//
// It runs on the CPU with the server's default slots, or on the backend
// EDGELLM_TEST_BACKEND names with EDGELLM_TEST_PARALLEL slots (batchBackend),
// so that a test binary checks the GPU on its machine:
//
//	go test -c -o server.test ./server
//	EDGELLM_TEST_BACKEND=cuda EDGELLM_TEST_PARALLEL=16 ./server.test -test.run TestConcurrentGreedy -test.v
func TestConcurrentGreedy(t *testing.T) {
	be, par := batchBackend(t)
	concurrentGreedy(t, be, par)
}

// The same on a stand-in for the GPU (testmodel.Device: the CPU backend
// picking tokens as a device does) with 16 slots: every step picks on the
// device, none brings logits back.
func TestConcurrentGreedyDevice(t *testing.T) {
	var dev *testmodel.Device
	engine.RegisterBackend(testmodel.DeviceName, func(w *model.Weights, o engine.Options) (backend.Model, error) {
		m, err := cpu.Load(w, cpu.Options{Threads: o.Threads})
		if err != nil {
			return nil, err
		}
		dev, err = testmodel.NewDevice(m)
		return dev, err
	})
	concurrentGreedy(t, testmodel.DeviceName, 16)
	if dev.Samples.Load() == 0 || dev.Batches.Load() != 0 {
		t.Fatalf("%d steps on the device, %d with logits", dev.Samples.Load(), dev.Batches.Load())
	}
}

// concurrentGreedy is TestConcurrentGreedy on backend be with par slots.
func concurrentGreedy(t *testing.T, be string, par int) {
	s := newTestServer(t, func(c *Config) { c.Engine.Backend, c.Parallel = be, par })
	// Once armed, the first batched step waits until min(par, 16) requests
	// are in the batch, so that batching surely happens however the
	// clients are scheduled.
	var armed atomic.Pointer[engine.Model]
	var gathered sync.Once
	s.reg.stepHook = func(int) {
		if m := armed.Load(); m != nil {
			gathered.Do(func() { waitInBatch(t, m, min(par, 16)) })
		}
	}
	base := startServer(t, s)
	c := api.NewClient(base, http.DefaultClient)
	prompts := []string{"Once upon a time", "The cat", "Lily and Ben went", "One day"}
	gen := func(p string) (string, error) {
		var sb strings.Builder
		err := c.Generate(context.Background(), &api.GenerateRequest{Model: "stories", Prompt: p,
			Options: greedy(map[string]any{"num_predict": 40})}, func(r api.GenerateResponse) error {
			sb.WriteString(r.Response)
			return nil
		})
		return sb.String(), err
	}
	lone := map[string]string{}
	for _, p := range prompts {
		out, err := gen(p)
		if err != nil || out == "" {
			t.Fatalf("lone %q: %q %v", p, out, err)
		}
		lone[p] = out
	}
	// Odd clients speak OpenAI (streamed completions, no template), even
	// ones Ollama: one generation path, the same tokens.
	oc := oaiClient(base.String())
	genOAI := func(p string) (string, error) {
		st := oc.Completions.NewStreaming(context.Background(), openai.CompletionNewParams{
			Model:     openai.CompletionNewParamsModel("stories"),
			Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String(p)},
			MaxTokens: openai.Int(40), Temperature: openai.Float(0),
		})
		var sb strings.Builder
		for st.Next() {
			for _, ch := range st.Current().Choices {
				sb.WriteString(ch.Text)
			}
		}
		return sb.String(), st.Err()
	}
	var wg sync.WaitGroup
	outs := make([]string, 16)
	errs := make([]error, 16)
	m := modelOf(t, s, "stories")
	if m.Backend().Name() != be || m.Parallel() != par {
		t.Fatalf("model on %s with %d slots, want %s with %d (can the backend batch?)", m.Backend().Name(), m.Parallel(), be, par)
	}
	armed.Store(m)
	for i := range 16 {
		if i%2 == 1 {
			wg.Go(func() { outs[i], errs[i] = genOAI(prompts[i%len(prompts)]) })
		} else {
			wg.Go(func() { outs[i], errs[i] = gen(prompts[i%len(prompts)]) })
		}
	}
	wg.Wait()
	for i := range 16 {
		p := prompts[i%len(prompts)]
		if errs[i] != nil || outs[i] != lone[p] {
			t.Errorf("client %d (%q): %q %v\nlone: %q", i, p, outs[i], errs[i], lone[p])
		}
	}
	if got := metricValue(t, base, `edgellm_queue_depth{model="stories"}`); got != "0" {
		t.Errorf("queue depth %s after all ended", got)
	}
	if got := metricValue(t, base, `edgellm_time_to_first_token_seconds_count{model="stories"}`); got != "20" {
		t.Errorf("TTFT observations %s, want 20", got)
	}
	// Steps of more than one sequence: all steps less those of size 1.
	all, _ := strconv.Atoi(metricValue(t, base, `edgellm_batch_size_count{model="stories"}`))
	ones, _ := strconv.Atoi(metricValue(t, base, `edgellm_batch_size_bucket{model="stories",le="1"}`))
	upTo3, _ := strconv.Atoi(metricValue(t, base, `edgellm_batch_size_bucket{model="stories",le="3"}`))
	if all-ones == 0 || all-upTo3 == 0 {
		t.Errorf("batch sizes: %d steps, %d of one sequence, %d of up to 3: never batched 4", all, ones, upTo3)
	}
}

// batchBackend is the backend and slot count of TestConcurrentGreedy: the
// CPU with the server's default, or EDGELLM_TEST_BACKEND (cuda, say) with
// EDGELLM_TEST_PARALLEL slots. It skips when that backend cannot load
// here (no GPU, or a nocuda build).
func batchBackend(t *testing.T) (string, int) {
	t.Helper()
	par := DefaultParallel
	if v := os.Getenv("EDGELLM_TEST_PARALLEL"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 4 || n > maxParallel {
			t.Fatalf("EDGELLM_TEST_PARALLEL=%q: want 4..%d", v, maxParallel)
		}
		par = n
	}
	be := os.Getenv("EDGELLM_TEST_BACKEND")
	if be == "" || be == "cpu" {
		return "cpu", par
	}
	m, err := engine.Load(storiesPath(t), engine.Options{Backend: be, ContextLen: 64})
	if err != nil {
		t.Skipf("backend %s is not available: %v", be, err)
	}
	m.Close()
	t.Logf("backend %s, %d slots", be, par)
	return be, par
}

// modelOf is the loaded model of a name.
func modelOf(t *testing.T, s *Server, name string) *engine.Model {
	t.Helper()
	s.reg.mu.Lock()
	e := s.reg.entries[name]
	s.reg.mu.Unlock()
	if e == nil {
		t.Fatalf("model %s never looked up", name)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		t.Fatalf("model %s not loaded", name)
	}
	return e.m
}

// waitInBatch waits until n generations of m are in its batch.
func waitInBatch(t *testing.T, m *engine.Model, n int) {
	for i := 0; i < 20000; i++ {
		if m.InBatch() >= n {
			return
		}
		waitABit()
	}
	t.Errorf("never %d generations in the batch", n)
}

// SIGINT/SIGTERM's path: cancelling Serve's context ends a running stream
// after the grace period and unloads the model.
func TestGracefulShutdown(t *testing.T) {
	s := newTestServer(t, func(c *Config) { c.ShutdownGrace = 50 * time.Millisecond })
	held := make(chan struct{})
	var once sync.Once
	s.afterToken = func(ctx context.Context) {
		once.Do(func() { close(held) })
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Second):
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	base := "http://" + ln.Addr().String()
	reqDone := make(chan error, 1)
	go func() {
		resp, err := http.Post(base+"/api/generate", "application/json",
			strings.NewReader(`{"model":"stories","prompt":"Once upon a time","options":{"temperature":0}}`))
		if err == nil {
			_, err = readAll(resp)
		}
		reqDone <- err
	}()
	<-held
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return")
	}
	select {
	case <-reqDone:
	case <-time.After(30 * time.Second):
		t.Fatal("the held request did not end")
	}
	if lm := s.reg.loaded(); len(lm) != 0 {
		t.Errorf("models still loaded after shutdown: %v", lm)
	}
}

// A client that gives up while queued leaves the queue; the requests
// behind it are served in order.
func TestCancelWhileQueued(t *testing.T) {
	s := newTestServer(t, func(c *Config) { c.Parallel = 1 })
	holding, release := holdFirstToken(s)
	base := startServer(t, s)
	c := api.NewClient(base, http.DefaultClient)
	f := false
	req := func(ctx context.Context) error {
		return c.Generate(ctx, &api.GenerateRequest{Model: "stories", Prompt: "Once", Stream: &f,
			Options: greedy(map[string]any{"num_predict": 3})}, func(api.GenerateResponse) error { return nil })
	}
	first := make(chan error, 1)
	go func() { first <- req(context.Background()) }()
	<-holding
	waitQueue := func(n string) {
		for i := 0; metricValue(t, base, `edgellm_queue_depth{model="stories"}`) != n; i++ {
			if i > 5000 {
				t.Fatalf("queue depth never reached %s", n)
			}
			waitABit()
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	quitter := make(chan error, 1)
	go func() { quitter <- req(ctx) }()
	waitQueue("1")
	third := make(chan error, 1)
	go func() { third <- req(context.Background()) }()
	waitQueue("2")
	cancel()
	if err := <-quitter; !errors.Is(err, context.Canceled) {
		t.Errorf("queued and cancelled: %v", err)
	}
	waitQueue("1")
	close(release)
	if err := <-first; err != nil {
		t.Error(err)
	}
	if err := <-third; err != nil {
		t.Error(err)
	}
	waitQueue("0")
}

// Past MaxQueue waiting requests, a request gets 503 at once.
func TestQueueFull(t *testing.T) {
	s := newTestServer(t, func(c *Config) { c.MaxQueue = 1; c.Parallel = 1 })
	holding, release := holdFirstToken(s)
	base := startServer(t, s)
	body := `{"model":"stories","prompt":"Once","stream":false,"options":{"num_predict":2}}`
	post := func() (int, error) {
		resp, err := http.Post(base.String()+"/api/generate", "application/json", strings.NewReader(body))
		if err != nil {
			return 0, err
		}
		readAll(resp)
		return resp.StatusCode, nil
	}
	codes := make(chan int, 2)
	go func() { c, _ := post(); codes <- c }()
	<-holding
	go func() { c, _ := post(); codes <- c }()
	for i := 0; metricValue(t, base, `edgellm_queue_depth{model="stories"}`) != "1"; i++ {
		if i > 5000 {
			t.Fatal("second request never queued")
		}
		waitABit()
	}
	if c, err := post(); err != nil || c != http.StatusServiceUnavailable {
		t.Errorf("third request: %d %v, want 503", c, err)
	}
	close(release)
	for range 2 {
		if c := <-codes; c != 200 {
			t.Errorf("held or queued request: %d", c)
		}
	}
}
