package engine

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strings"
	"time"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/sample"
	"github.com/edgellm/edgellm/tokenizer"
)

// Request is one generation.
type Request struct {
	// Prompt is tokenized with the model's tokenizer; Tokens, when
	// non-nil, is used instead.
	Prompt string
	Tokens []int32
	// MaxTokens caps the generated tokens; 0 means until an
	// end-of-generation token or the end of the context.
	MaxTokens int
	Sampling  sample.Params
	// IgnoreEOS keeps generating past end-of-generation tokens.
	IgnoreEOS bool
	// Stop ends generation at the first occurrence of any of these
	// strings in the output; the stop string itself is not streamed.
	Stop []string
	// NoSpecial skips adding the tokenizer's BOS/EOS to the prompt
	// (llama.cpp's add_special=false); ParseSpecial lets the prompt's text
	// spell special tokens such as "<|eot_id|>".
	NoSpecial    bool
	ParseSpecial bool
}

// Token is one generated token.
type Token struct {
	ID int32
	// Text is the complete UTF-8 text this token makes available: bytes
	// of a character split across tokens come with the token that
	// completes it, and text that might begin a stop string is held back
	// until it cannot.
	Text string
}

// Done reasons.
const (
	DoneStop   = "stop"   // an end-of-generation token or a stop string
	DoneLength = "length" // MaxTokens, or the context is full
	DoneCancel = "cancel" // the context was cancelled
	DoneError  = "error"  // the callback or the backend failed
)

// Stats describes one generation.
type Stats struct {
	PromptTokens    int // tokens in the prompt
	CachedTokens    int // prompt tokens whose KV was reused from the previous request
	GeneratedTokens int
	PromptDuration  time.Duration // prefill of the uncached prompt tokens
	GenDuration     time.Duration // wall time of the generation loop, callbacks included
	LoadDuration    time.Duration
	// Latencies holds, per generated token, the time to produce it
	// (decode of the previous token + sampling), callbacks excluded.
	Latencies  []time.Duration
	DoneReason string
}

// PromptRate is the prefill speed in tokens per second.
func (s *Stats) PromptRate() float64 {
	return rate(s.PromptTokens-s.CachedTokens, s.PromptDuration)
}

// GenRate is the generation speed in tokens per second.
func (s *Stats) GenRate() float64 { return rate(s.GeneratedTokens, s.GenDuration) }

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// Percentile returns the p-th percentile (0..100) of the per-token
// latencies, or 0 when there are none.
func (s *Stats) Percentile(p float64) time.Duration {
	if len(s.Latencies) == 0 {
		return 0
	}
	l := slices.Clone(s.Latencies)
	slices.Sort(l)
	i := int(p / 100 * float64(len(l)-1))
	return l[max(0, min(i, len(l)-1))]
}

// Summary is a one-line human-readable report.
func (s *Stats) Summary() string {
	return fmt.Sprintf("prompt %d tokens (%d cached) in %.1f ms (%.1f tok/s); generated %d tokens in %.1f ms (%.1f tok/s); latency p50 %.2f ms p99 %.2f ms; done: %s",
		s.PromptTokens, s.CachedTokens, ms(s.PromptDuration), s.PromptRate(),
		s.GeneratedTokens, ms(s.GenDuration), s.GenRate(),
		ms(s.Percentile(50)), ms(s.Percentile(99)), s.DoneReason)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Generate runs req and calls fn with each generated token in order. It
// returns when an end-of-generation token (unless IgnoreEOS), a stop
// string, MaxTokens or the end of the context is reached, when ctx is
// cancelled (the error is then ctx.Err()), or when fn returns an error
// (which Generate returns). The Stats are filled in every case.
func (m *Model) Generate(ctx context.Context, req Request, fn func(Token) error) (Stats, error) {
	if m.sched != nil {
		return m.sched.generate(ctx, &req, fn)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st := Stats{LoadDuration: m.loadDur}
	err := m.generate(ctx, &req, fn, &st)
	if len(m.lat) > 0 {
		st.Latencies = slices.Clone(m.lat)
	}
	if err != nil && st.DoneReason == "" {
		st.DoneReason = DoneError
	}
	return st, err
}

// Stream is Generate as an iterator: it yields each token, then, if the
// generation failed, one final zero Token with the error. Breaking out of
// the loop stops the generation.
func (m *Model) Stream(ctx context.Context, req Request) iter.Seq2[Token, error] {
	return func(yield func(Token, error) bool) {
		stopped := errors.New("stopped by the consumer")
		_, err := m.Generate(ctx, req, func(t Token) error {
			if !yield(t, nil) {
				return stopped
			}
			return nil
		})
		if err != nil && err != stopped {
			yield(Token{}, err)
		}
	}
}

func (m *Model) generate(ctx context.Context, req *Request, fn func(Token) error, st *Stats) error {
	if m.closed {
		return errors.New("engine: model is closed")
	}
	tokens, smp, err := m.prepare(ctx, req, fn, st)
	if err != nil {
		return err
	}

	// Prefill what the KV cache does not already hold; at least the last
	// prompt token runs, for its logits.
	t0 := time.Now()
	if err := m.prefill(ctx, &m.seq, tokens, st); err != nil {
		return err
	}
	st.PromptDuration = time.Since(t0)
	for _, t := range tokens {
		smp.Accept(t)
	}

	g := stepper{m: m, q: &m.seq, smp: smp, dec: m.tok.NewDecoder(), ignoreEOS: req.IgnoreEOS}
	if ad, ok := m.seq.sess.(backend.ArgmaxDecoder); ok && req.Sampling.IsGreedy() {
		// The backend picks greedy tokens itself: only ids cross back.
		g.argmax = ad
	} else if sd, ok := m.seq.sess.(backend.SamplingDecoder); ok && !req.Sampling.IsGreedy() {
		// The backend draws under these parameters itself, if it can.
		on, err := sd.SetSampling(req.Sampling, tokens)
		if err != nil {
			return fmt.Errorf("engine: %w", err)
		}
		if on {
			g.devSample = sd
		}
	}
	var hold strings.Builder // output held back while it may begin a stop string
	m.lat = m.lat[:0]
	genStart := time.Now()
	defer func() { st.GenDuration = time.Since(genStart) }()
	t := genStart // start of the current token: decode of the previous + sampling
	for {
		if err := ctx.Err(); err != nil {
			st.DoneReason = DoneCancel
			return err
		}
		id, eog, err := g.sample()
		if err != nil {
			return err
		}
		if eog {
			st.DoneReason = DoneStop
			return flushRest(g.dec, &hold, req.Stop, fn, st)
		}
		text := g.dec.Add(id)
		m.lat = append(m.lat, time.Since(t))
		st.GeneratedTokens++

		stop := false
		if len(req.Stop) > 0 {
			text, stop = holdStops(&hold, text, req.Stop)
		}
		if err := fn(Token{ID: id, Text: text}); err != nil {
			return err
		}
		if stop {
			st.DoneReason = DoneStop
			return nil
		}
		if (req.MaxTokens > 0 && st.GeneratedTokens >= req.MaxTokens) || len(m.seq.hist) == m.ctxLen {
			st.DoneReason = DoneLength
			return flushRest(g.dec, &hold, req.Stop, fn, st)
		}
		t = time.Now()
		if err := g.decode(id); err != nil {
			return err
		}
	}
}

// prepare checks a request, tokenizes its prompt and makes its sampler;
// a context already done ends it with DoneCancel.
func (m *Model) prepare(ctx context.Context, req *Request, fn func(Token) error, st *Stats) ([]int32, *sample.Sampler, error) {
	if fn == nil {
		return nil, nil, errors.New("engine: nil token callback")
	}
	if req.MaxTokens < 0 {
		return nil, nil, fmt.Errorf("engine: max tokens %d is negative", req.MaxTokens)
	}
	for _, s := range req.Stop {
		if s == "" {
			return nil, nil, errors.New("engine: empty stop string")
		}
	}
	tokens := req.Tokens
	if tokens == nil {
		var err error
		if tokens, err = m.tok.Encode(req.Prompt, !req.NoSpecial, req.ParseSpecial); err != nil {
			return nil, nil, fmt.Errorf("engine: tokenizing the prompt: %w", err)
		}
	}
	st.PromptTokens = len(tokens)
	if err := m.checkTokens(tokens); err != nil {
		return nil, nil, err
	}
	smp, err := sample.New(m.weights.Vocab, req.Sampling)
	if err != nil {
		return nil, nil, fmt.Errorf("engine: %w", err)
	}
	if err := ctx.Err(); err != nil {
		st.DoneReason = DoneCancel
		return nil, nil, err
	}
	return tokens, smp, nil
}

// prefill brings q's KV cache to tokens, reusing the common prefix with
// its previous request and writing the last token's logits.
func (m *Model) prefill(ctx context.Context, q *seq, tokens []int32, st *Stats) error {
	if q.sess == nil {
		s, err := m.be.NewSession(m.ctxLen)
		if err != nil {
			return fmt.Errorf("engine: %w", err)
		}
		q.sess, q.hist = s, q.hist[:0]
	}
	keep := min(commonPrefix(q.hist, tokens), len(tokens)-1)
	if err := q.sess.Rewind(keep); err != nil {
		q.hist = q.hist[:0]
		return fmt.Errorf("engine: %w", err)
	}
	q.hist = q.hist[:keep]
	st.CachedTokens = keep
	// Chunks bound how long a cancellation waits; each is still one batch.
	for rest := tokens[keep:]; len(rest) > 0; {
		if err := ctx.Err(); err != nil {
			st.DoneReason = DoneCancel
			return err
		}
		n := min(len(rest), prefillChunk)
		var logits []float32
		if n == len(rest) {
			logits = q.logits
		}
		if err := q.sess.Prefill(rest[:n], logits); err != nil {
			// The cache is in an unknown state past hist: forget it.
			q.hist = q.hist[:0]
			_ = q.sess.Rewind(0)
			return fmt.Errorf("engine: prefill: %w", err)
		}
		q.hist = append(q.hist, rest[:n]...)
		rest = rest[n:]
	}
	return nil
}

// prefillChunk is the most prompt tokens prefilled between two checks for
// cancellation.
const prefillChunk = 256

// stepper is the per-token inner loop: sample from the logits, then decode
// the chosen token into the next logits. Neither step allocates.
type stepper struct {
	m         *Model
	q         *seq
	smp       *sample.Sampler
	dec       *tokenizer.StreamDecoder
	ignoreEOS bool

	argmax    backend.ArgmaxDecoder   // non-nil: decode returns the greedy next id
	devSample backend.SamplingDecoder // non-nil: decode returns the drawn next id
	next      int32                   // that id, when hasNext
	hasNext   bool
}

// sample picks the next token from the current logits and records it for
// the repetition penalty; eog reports an end-of-generation token.
func (g *stepper) sample() (id int32, eog bool, err error) {
	if g.hasNext {
		id, g.hasNext = g.next, false
	} else if id, err = g.smp.Sample(g.q.logits); err != nil {
		return 0, false, fmt.Errorf("engine: %w", err)
	}
	g.smp.Accept(id)
	return id, !g.ignoreEOS && g.m.tok.IsEOG(id), nil
}

// decode runs id through the backend, leaving its logits for the next
// sample, and records it in the KV history.
func (g *stepper) decode(id int32) error {
	q := g.q
	var err error
	switch {
	case g.argmax != nil:
		g.next, err = g.argmax.DecodeArgmax(id)
		g.hasNext = err == nil
	case g.devSample != nil:
		g.next, err = g.devSample.DecodeSample(id)
		g.hasNext = err == nil
	default:
		err = q.sess.Decode(id, q.logits)
	}
	if err != nil {
		q.forget()
		return fmt.Errorf("engine: decode: %w", err)
	}
	q.hist = append(q.hist, id)
	return nil
}

// forget empties q after a failed step: its cache is in an unknown state.
func (q *seq) forget() {
	q.hist = q.hist[:0]
	_ = q.sess.Rewind(0)
}

// holdStops appends text to the held output and returns what can be
// released: everything before a stop string (stop = true), or everything
// before the earliest place where a stop string may still begin. A match is
// final only when no earlier place could still grow into one, so the cut is
// always at the first occurrence in the whole output.
func holdStops(hold *strings.Builder, text string, stops []string) (string, bool) {
	hold.WriteString(text)
	s := hold.String()
	match := firstStop(s, stops)
	end := len(s)
	if match >= 0 {
		end = match
	}
	// The earliest j < end where s[j:] is a proper prefix of a stop string.
	partial := end
	for _, stop := range stops {
		for j := max(0, len(s)-len(stop)+1); j < partial; j++ {
			if strings.HasPrefix(stop, s[j:]) {
				partial = j
				break
			}
		}
	}
	if match >= 0 && partial == end {
		hold.Reset()
		return s[:match], true
	}
	hold.Reset()
	hold.WriteString(s[partial:])
	return s[:partial], false
}

// firstStop is the index of the first occurrence of any stop string in s,
// or -1.
func firstStop(s string, stops []string) int {
	first := -1
	for _, stop := range stops {
		if i := strings.Index(s, stop); i >= 0 && (first < 0 || i < first) {
			first = i
		}
	}
	return first
}

// flushRest streams what the decoder and the stop-string hold still keep
// when generation ends for length.
func flushRest(dec *tokenizer.StreamDecoder, hold *strings.Builder, stops []string, fn func(Token) error, st *Stats) error {
	tail := dec.Flush()
	if len(stops) > 0 {
		hold.WriteString(tail)
		return flushHold(hold, stops, fn, st)
	}
	if tail == "" {
		return nil
	}
	return fn(Token{ID: -1, Text: tail})
}

// flushHold releases held text, up to a stop string it may hold, as a
// final Token with ID -1.
func flushHold(hold *strings.Builder, stops []string, fn func(Token) error, st *Stats) error {
	s := hold.String()
	hold.Reset()
	if i := firstStop(s, stops); i >= 0 {
		s = s[:i]
		st.DoneReason = DoneStop
	}
	if s == "" {
		return nil
	}
	return fn(Token{ID: -1, Text: s})
}
