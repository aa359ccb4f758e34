package server

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/edgellm/edgellm/engine"
	"github.com/edgellm/edgellm/sample"
	"github.com/edgellm/edgellm/server/chattmpl"
	"github.com/edgellm/edgellm/store"
)

// maxNumCtx bounds num_ctx so that a request cannot make the server
// allocate a KV cache of any size it likes.
const maxNumCtx = store.MaxNumCtx

// maxStops bounds the stop strings of one request.
const maxStops = store.MaxStops

// genOptions are a request's sampling and stopping options, validated.
type genOptions struct {
	sampling   sample.Params
	numPredict int // 0: until an end token or the context's end
	numCtx     int // 0: the file's context length
	stop       []string
	// in and defaults are what these were made of, to redo them under a
	// model's params (modelDefaults.options).
	in       samplingIn
	defaults samplingDefaults
}

// genRequest is the one internal request every endpoint translates to.
type genRequest struct {
	model     string
	chat      bool
	messages  []chattmpl.Message // chat
	prompt    string             // generate
	system    string             // generate: a system message for the template
	raw       bool               // generate: no template
	context   []int32            // generate: tokens of an earlier exchange to continue
	opts      genOptions
	keepAlive time.Duration // < 0: forever
	arrived   time.Time
	// wantIDs asks for the prompt and generated ids in the result
	// (Ollama's "context").
	wantIDs bool
}

// genResult is what a finished generation reports.
type genResult struct {
	stats   engine.Stats
	loadDur time.Duration
	total   time.Duration
	ids     []int32 // prompt + generated tokens, when asked for
}

// doneReason maps the engine's reason to the APIs' ("stop" or "length").
func (r *genResult) doneReason() string {
	if r.stats.DoneReason == engine.DoneLength {
		return "length"
	}
	return "stop"
}

// generate is the generation path behind every endpoint: find the model,
// wait for its slot (FIFO), load it if needed, build the prompt, and stream
// the generated text to emit. Errors before the first emit carry their HTTP
// status (see statusOf). Cancelling ctx (a client gone) stops generation.
func (s *Server) generate(ctx context.Context, req *genRequest, emit func(text string) error) (*genResult, error) {
	e, err := s.reg.lookup(req.model)
	if err != nil {
		return nil, err
	}
	if req.opts, err = e.options(req.opts); err != nil {
		return nil, err
	}
	e.applySystem(req)
	// A prompt that cannot fit is refused before it waits, loads or is
	// tokenized (tokenizing costs memory in proportion to the text).
	if ctx, maxTok := e.bound(req.opts.numCtx); ctx > 0 {
		if err := checkFits(req, ctx, maxTok); err != nil {
			return nil, err
		}
	}
	// A generation ends with its client or with the server's grace period.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopBase := context.AfterFunc(s.base, cancel)
	defer stopBase()

	l, err := s.reg.acquire(ctx, e, req.opts.numCtx)
	if err != nil {
		return nil, err
	}
	defer l.release(req.keepAlive)

	if err := checkFits(req, l.m.ContextLen(), l.maxTok); err != nil {
		return nil, err
	}
	tokens, stops, err := buildPrompt(l, req)
	if err != nil {
		return nil, err
	}
	if len(tokens) == 0 {
		return nil, badRequest("empty prompt: nothing to generate from")
	}
	if n := l.m.ContextLen(); len(tokens) > n {
		return nil, badRequest("prompt is %d tokens, longer than the context length (num_ctx) of %d", len(tokens), n)
	}
	vocab := l.m.Tokenizer().VocabSize()
	for _, t := range tokens {
		if t < 0 || int(t) >= vocab {
			return nil, badRequest("context token %d is outside the vocabulary of %d", t, vocab)
		}
	}

	res := &genResult{loadDur: l.loadDur}
	if req.wantIDs {
		res.ids = append(make([]int32, 0, len(tokens)+64), tokens...)
	}
	active := s.metrics.active.WithLabelValues(e.name)
	active.Inc()
	defer active.Dec()
	first := true
	ereq := engine.Request{Tokens: tokens, MaxTokens: req.opts.numPredict, Sampling: req.opts.sampling, Stop: stops}
	st, err := l.m.Generate(ctx, ereq, func(t engine.Token) error {
		if first {
			first = false
			s.metrics.ttft.WithLabelValues(e.name).Observe(time.Since(req.arrived).Seconds())
		}
		if req.wantIDs {
			res.ids = append(res.ids, t.ID)
		}
		if t.Text != "" {
			if err := emit(t.Text); err != nil {
				return err
			}
		}
		if s.afterToken != nil {
			s.afterToken(ctx)
		}
		return nil
	})
	res.stats = st
	res.total = time.Since(req.arrived)
	s.metrics.tokensIn.WithLabelValues(e.name).Add(float64(st.PromptTokens))
	s.metrics.tokensOut.WithLabelValues(e.name).Add(float64(st.GeneratedTokens))
	if len(st.Latencies) > 1 {
		h := s.metrics.tokenLat.WithLabelValues(e.name)
		for _, d := range st.Latencies[1:] {
			h.Observe(d.Seconds())
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		return res, fmt.Errorf("generation: %w", err)
	}
	return res, nil
}

// buildPrompt turns a request into prompt tokens and stop strings.
func buildPrompt(l *lease, req *genRequest) ([]int32, []string, error) {
	tok := l.m.Tokenizer()
	stops := req.opts.stop
	var text string
	templated := false
	switch {
	case req.chat:
		var err error
		if text, err = l.tmpl.Render(req.messages, true); err != nil {
			return nil, nil, badRequest("%v", err)
		}
		templated = true
	case req.raw || l.tmpl.Name() == chattmpl.Plain:
		// As edgellm run does: the prompt as it is, BOS per the metadata.
		text = req.prompt
	default:
		var msgs []chattmpl.Message
		if req.system != "" {
			msgs = append(msgs, chattmpl.Message{Role: "system", Content: req.system})
		}
		msgs = append(msgs, chattmpl.Message{Role: "user", Content: req.prompt})
		var err error
		if text, err = l.tmpl.Render(msgs, true); err != nil {
			return nil, nil, badRequest("%v", err)
		}
		templated = true
	}
	if templated {
		stops = mergeStops(stops, l.tmpl.Stops())
	}
	l.r.log.Debug("prompt", "model", l.e.name, "template", l.tmpl.Name(), "text", text)
	// Special tokens: a template spells its markers as text (parse them);
	// BOS is added unless the template already wrote it or this continues
	// an earlier context. A raw prompt's text is taken literally.
	addSpecial := len(req.context) == 0
	if bos := tok.Token(tok.BOS()); templated && bos != "" && strings.HasPrefix(text, bos) {
		addSpecial = false
	}
	ids, err := tok.Encode(text, addSpecial, templated)
	if err != nil {
		return nil, nil, badRequest("tokenizing the prompt: %v", err)
	}
	if len(req.context) > 0 {
		ids = append(append(make([]int32, 0, len(req.context)+len(ids)), req.context...), ids...)
	}
	return ids, stops, nil
}

func mergeStops(a, b []string) []string {
	out := append([]string(nil), a...)
	for _, s := range b {
		dup := false
		for _, t := range out {
			dup = dup || s == t
		}
		if !dup {
			out = append(out, s)
		}
	}
	return out
}

// samplingIn are sampling options as the APIs give them; nil is "not given".
// The JSON names are Ollama's options; other keys are ignored.
type samplingIn store.Params

// samplingDefaults differ between the APIs. Ollama's endpoints take
// `edgellm run`'s defaults (llama.cpp's: no repetition penalty, top-p 0.95,
// min-p 0.05) rather than Ollama's own, so that a model with no template
// gives the same output through the server as through the CLI. OpenAI's
// take OpenAI's (temperature 1, no filters).
type samplingDefaults struct {
	temperature, topP, minP, repeatPenalty float64
	topK, repeatLastN                      int
}

var (
	ollamaDefaults = samplingDefaults{temperature: 0.8, topK: 40, topP: 0.95, minP: 0.05, repeatPenalty: 1, repeatLastN: 64}
	openaiDefaults = samplingDefaults{temperature: 1, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, repeatLastN: 64}
)

// options validates sampling options (store.Params.Check, the params
// layer's rules); a bad one is a 400 naming it.
func (in *samplingIn) options(d samplingDefaults) (genOptions, error) {
	o := genOptions{in: *in, defaults: d}
	if err := (*store.Params)(in).Check(); err != nil {
		return o, badRequest("%s", err.Error())
	}
	f := func(p *float64, def float64) float32 {
		if p == nil {
			return float32(def)
		}
		return float32(*p)
	}
	sp := &o.sampling
	sp.Temperature = f(in.Temperature, d.temperature)
	sp.TopP = f(in.TopP, d.topP)
	sp.MinP = f(in.MinP, d.minP)
	sp.RepeatPenalty = f(in.RepeatPenalty, d.repeatPenalty)
	sp.TopK = d.topK
	if in.TopK != nil {
		sp.TopK = *in.TopK
	}
	if in.NumCtx != nil {
		o.numCtx = *in.NumCtx
	}
	sp.RepeatLastN = d.repeatLastN
	switch {
	case in.RepeatLastN == nil:
	case *in.RepeatLastN == -1: // Ollama: the whole context
		sp.RepeatLastN = maxNumCtx
		if o.numCtx > 0 {
			sp.RepeatLastN = o.numCtx
		}
	default:
		sp.RepeatLastN = *in.RepeatLastN
	}
	// num_predict as Ollama's API: -1 generates until an end token (Ollama
	// then shifts the context; we stop at its end), -2 until the context is
	// full, 0 sets no limit (Ollama's runner limits only positive values).
	if in.NumPredict != nil && *in.NumPredict > 0 {
		o.numPredict = *in.NumPredict
	}
	if in.Seed == nil || *in.Seed == -1 { // Ollama's -1: a random seed
		sp.Seed = rand.Uint64()
	} else {
		sp.Seed = uint64(*in.Seed)
	}
	o.stop = in.Stop
	return o, nil
}

// parseKeepAlive reads Ollama's keep_alive: a number of seconds or a Go
// duration string; negative means forever. nil means the server's default.
func parseKeepAlive(v any, def time.Duration) (time.Duration, error) {
	switch t := v.(type) {
	case nil:
		return def, nil
	case float64:
		if math.IsNaN(t) || math.IsInf(t, 0) {
			return 0, badRequest("keep_alive %v is not a duration", t)
		}
		if t < 0 {
			return -1, nil
		}
		return time.Duration(min(t, 1e9) * float64(time.Second)), nil
	case string:
		if t == "" {
			return def, nil
		}
		d, err := time.ParseDuration(t)
		if err != nil {
			// Ollama also accepts a bare number in a string.
			var secs float64
			if _, serr := fmt.Sscanf(t, "%g", &secs); serr == nil && fmt.Sprint(secs) == strings.TrimSpace(t) {
				return parseKeepAlive(secs, def)
			}
			return 0, badRequest("keep_alive %q is not a duration", t)
		}
		if d < 0 {
			return -1, nil
		}
		return d, nil
	}
	return 0, badRequest("keep_alive must be a number of seconds or a duration string")
}
