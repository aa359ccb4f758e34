package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/sample"
	"github.com/edgellm/edgellm/tokenizer"
)

// Continuous batching (Options.Parallel > 1 on a backend.BatchDecoder).
//
// A model has N slots, each a sequence (session and KV cache) reused across
// requests as the serial path reuses its one. A request takes a free slot
// (the one whose cache holds most of its prompt, else the least recently
// used: see acquire), prefills its prompt
// on its own goroutine (the backend gives forward passes turns), then joins
// the scheduler: one goroutine per model that, step after step, samples
// each joined request's next token from its logits, applies its stop
// conditions, and decodes all the chosen tokens in one DecodeBatch. A
// request leaves the batch when it is done, cancelled or its consumer
// stops; its slot is then free for the next. Generated tokens go to the
// request's goroutine through a small queue, so a slow consumer never
// holds up the batch, and the callbacks run on the caller's goroutine as
// on the serial path.
//
// Since the backend's batched step is batch-invariant, a request's tokens
// do not depend on what else runs: greedy output is the same alone or
// batched.
//
// On a backend that also implements backend.BatchSampler (the GPU), a
// request decides when it joins whether the device picks its tokens:
// greedy ones always (the argmax), sampled ones when its session's
// SetSampling accepts the parameters (with the prompt as history, as the
// serial path does); the rest sample on the host. A step where every
// request is on the device runs DecodeBatchSample, so only ids cross the
// bus; one host request makes the step a DecodeBatch with host sampling
// for all, after which a device-drawing request re-arms its session's
// sampler with its whole history before its next device step (the draw
// then continues from a fresh stream of its seed, not the one it had).

var errClosed = errors.New("engine: model is closed")

// scheduler runs one model's parallel generations.
type scheduler struct {
	m      *Model
	bd     backend.BatchDecoder
	bs     backend.BatchSampler // nil: the host samples every token
	onStep func(int)
	slots  []*slot // fixed at start

	sem  chan struct{} // one token per free slot
	kick chan struct{} // cap 1: a job joined
	quit chan struct{} // closed by stop
	done chan struct{} // closed when the loop has returned

	mu      sync.Mutex // guards the slots' busy and lastUse, pending, stopped
	pending []*job
	stopped bool
	uses    uint64

	// The loop's own, reused every step so that a step allocates nothing.
	active  []*job
	batch   []*job
	bsess   []backend.Session
	btoks   []int32
	blogits [][]float32
	bnext   []int32 // DecodeBatchSample's ids

	steps, batched atomic.Int64
	inBatch        atomic.Int32 // jobs joined and not finished
}

// slot is one of the model's sequences.
type slot struct {
	seq
	lat     []time.Duration // the running request's per-token latencies
	busy    bool
	lastUse uint64
}

// job is one request between joining and leaving the batch. The fields
// above mu belong to the scheduler while the job is in the batch.
type job struct {
	ctx   context.Context
	req   *Request
	sl    *slot
	smp   *sample.Sampler
	dec   *tokenizer.StreamDecoder
	hold  strings.Builder // output held back while it may begin a stop string
	st    Stats
	t     time.Time // start of the current token: decode of the previous + sampling
	err   error     // why it ended, published as res
	abort atomic.Bool

	// The device's part (BatchSampler), decided at join: dev, the device
	// may pick this job's tokens; draws, by SetSampling's parameters (not
	// the argmax), so a host step leaves its sampler to re-arm (rearm).
	dev, draws, rearm bool
	nextID            int32 // the device's pick for the next token, when hasNext
	hasNext           bool

	mu   sync.Mutex
	out  []Token // generated, not yet given to the consumer
	fin  bool
	res  error
	wake chan struct{} // cap 1
}

func newScheduler(m *Model, bd backend.BatchDecoder, n int, onStep func(int)) *scheduler {
	sc := &scheduler{
		m: m, bd: bd, onStep: onStep,
		slots: make([]*slot, n),
		sem:   make(chan struct{}, n), kick: make(chan struct{}, 1),
		quit: make(chan struct{}), done: make(chan struct{}),
		active: make([]*job, 0, n), batch: make([]*job, 0, n),
		bsess: make([]backend.Session, 0, n), btoks: make([]int32, 0, n), blogits: make([][]float32, 0, n),
		bnext: make([]int32, n),
	}
	sc.bs, _ = bd.(backend.BatchSampler)
	for i := range sc.slots {
		sc.slots[i] = &slot{seq: newSeq(m.ctxLen, m.weights.Vocab), lat: make([]time.Duration, 0, m.ctxLen+1)}
		sc.sem <- struct{}{}
	}
	return sc
}

// BatchCounts reports the decode steps run with Parallel > 1 and how many
// of them decoded more than one sequence.
func (m *Model) BatchCounts() (steps, batched int64) {
	if m.sched == nil {
		return 0, 0
	}
	return m.sched.steps.Load(), m.sched.batched.Load()
}

// InBatch is the number of generations in the running batch or joining
// it, their prompts prefilled (0 with Parallel 1).
func (m *Model) InBatch() int {
	if m.sched == nil {
		return 0
	}
	return int(m.sched.inBatch.Load())
}

// generate is Generate on the scheduler.
func (sc *scheduler) generate(ctx context.Context, req *Request, fn func(Token) error) (Stats, error) {
	m := sc.m
	st := Stats{LoadDuration: m.loadDur}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		st.DoneReason = DoneError
		return st, errClosed
	}
	m.running.Add(1)
	m.mu.Unlock()
	defer m.running.Done()
	err := sc.run(ctx, req, fn, &st)
	if err != nil && st.DoneReason == "" {
		st.DoneReason = DoneError
	}
	return st, err
}

func (sc *scheduler) run(ctx context.Context, req *Request, fn func(Token) error, st *Stats) error {
	m := sc.m
	tokens, smp, err := m.prepare(ctx, req, fn, st)
	if err != nil {
		return err
	}
	sl, err := sc.acquire(ctx, tokens)
	if err != nil {
		if ctx.Err() != nil {
			st.DoneReason = DoneCancel
		}
		return err
	}
	// The prompt runs alone (the backend serialises forward passes), then
	// the request joins the batch.
	t0 := time.Now()
	if err := m.prefill(ctx, &sl.seq, tokens, st); err != nil {
		sc.release(sl)
		return err
	}
	st.PromptDuration = time.Since(t0)
	for _, t := range tokens {
		smp.Accept(t)
	}
	j := &job{ctx: ctx, req: req, sl: sl, smp: smp, dec: m.tok.NewDecoder(), st: *st, wake: make(chan struct{}, 1)}
	if err := sc.pickSampler(j); err != nil {
		sc.release(sl)
		return err
	}
	sl.lat = sl.lat[:0]
	genStart := time.Now()
	j.t = genStart
	if !sc.join(j) {
		sc.release(sl)
		return errClosed
	}

	// Consume: hand the tokens to fn as they come, on this goroutine.
	var buf []Token
	var fnErr error
	for {
		<-j.wake
		j.mu.Lock()
		buf, j.out = j.out, buf[:0]
		fin, res := j.fin, j.res
		j.mu.Unlock()
		for _, t := range buf {
			if fnErr != nil {
				break
			}
			if fnErr = fn(t); fnErr != nil {
				j.abort.Store(true) // leaves the batch at the next step
			}
		}
		if !fin {
			continue
		}
		*st = j.st
		st.GenDuration = time.Since(genStart)
		if fnErr != nil {
			st.DoneReason = ""
			return fnErr
		}
		return res
	}
}

// acquire waits for a free slot. It takes the one whose cache shares the
// longest prefix with tokens when that prefix is at least half the prompt
// or half the cache (so a shared BOS alone does not evict a long cache),
// else the least recently used.
func (sc *scheduler) acquire(ctx context.Context, tokens []int32) (*slot, error) {
	select {
	case <-sc.sem:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-sc.quit:
		return nil, errClosed
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	var best, lru *slot
	bestN := 0
	for _, s := range sc.slots {
		if s.busy {
			continue
		}
		if lru == nil || s.lastUse < lru.lastUse {
			lru = s
		}
		n := commonPrefix(s.hist, tokens)
		if n > bestN && (2*n >= len(tokens) || 2*n >= len(s.hist)) {
			best, bestN = s, n
		}
	}
	if best == nil {
		best = lru // a token from sem means a slot is free
	}
	best.busy = true
	sc.uses++
	best.lastUse = sc.uses
	return best, nil
}

func (sc *scheduler) release(sl *slot) {
	sc.mu.Lock()
	sl.busy = false
	sc.mu.Unlock()
	sc.sem <- struct{}{}
}

// pickSampler decides whether the device picks j's tokens (see the top of
// the file). Its SetSampling call also disarms a session that drew for a
// previous request when j is greedy or needs the host (ok false leaves the
// session on the argmax: backend.BatchSampler).
func (sc *scheduler) pickSampler(j *job) error {
	if sc.bs == nil {
		return nil
	}
	greedy := j.req.Sampling.IsGreedy()
	sd, ok := j.sl.sess.(backend.SamplingDecoder)
	if !ok {
		j.dev = greedy
		return nil
	}
	on, err := sd.SetSampling(j.req.Sampling, j.sl.hist)
	if err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	j.draws = on && !greedy
	j.dev = greedy || j.draws
	return nil
}

// join hands a prefilled job to the loop; false when the model is closing.
func (sc *scheduler) join(j *job) bool {
	sc.mu.Lock()
	if sc.stopped {
		sc.mu.Unlock()
		return false
	}
	sc.pending = append(sc.pending, j)
	sc.inBatch.Add(1)
	sc.mu.Unlock()
	select {
	case sc.kick <- struct{}{}:
	default:
	}
	return true
}

// stop ends the loop; jobs in the batch or joining end with errClosed.
func (sc *scheduler) stop() {
	close(sc.quit)
	<-sc.done
}

func (sc *scheduler) closeSessions() error {
	var errs []error
	for _, s := range sc.slots {
		if s.sess != nil {
			errs = append(errs, s.sess.Close())
			s.sess = nil
		}
	}
	return errors.Join(errs...)
}

func (sc *scheduler) loop() {
	defer close(sc.done)
	for {
		if len(sc.active) == 0 {
			select {
			case <-sc.kick:
			case <-sc.quit:
			}
		}
		select {
		case <-sc.quit:
			sc.shutdown()
			return
		default:
		}
		sc.admit()
		sc.step()
	}
}

// admit moves the jobs that joined since the last step into the batch.
func (sc *scheduler) admit() {
	sc.mu.Lock()
	sc.active = append(sc.active, sc.pending...)
	clear(sc.pending)
	sc.pending = sc.pending[:0]
	sc.mu.Unlock()
}

func (sc *scheduler) shutdown() {
	sc.mu.Lock()
	sc.stopped = true
	sc.mu.Unlock()
	sc.admit()
	for _, j := range sc.active {
		j.err = errClosed
		sc.finish(j)
	}
	clear(sc.active)
	sc.active = sc.active[:0]
}

// step is one scheduler step: every job samples its next token (or
// leaves), then the chosen tokens are decoded as one batch, on the device
// with its picks when every job can (onDevice). Besides each token's text
// it allocates nothing.
func (sc *scheduler) step() {
	sc.batch, sc.bsess, sc.btoks, sc.blogits = sc.batch[:0], sc.bsess[:0], sc.btoks[:0], sc.blogits[:0]
	n := len(sc.active)
	for _, j := range sc.active {
		id, ok := j.next(sc.m)
		if !ok {
			sc.finish(j)
			continue
		}
		sc.batch = append(sc.batch, j)
		sc.bsess = append(sc.bsess, j.sl.sess)
		sc.btoks = append(sc.btoks, id)
		sc.blogits = append(sc.blogits, j.sl.logits)
	}
	sc.active = append(sc.active[:0], sc.batch...)
	clear(sc.active[len(sc.active):n])
	if len(sc.batch) == 0 {
		return
	}
	now := time.Now()
	for _, j := range sc.batch {
		j.t = now
	}
	dev := sc.onDevice()
	var err error
	if dev {
		err = sc.bs.DecodeBatchSample(sc.bsess, sc.btoks, sc.bnext[:len(sc.batch)])
	} else {
		err = sc.bd.DecodeBatch(sc.bsess, sc.btoks, sc.blogits)
	}
	sc.steps.Add(1)
	if len(sc.batch) > 1 {
		sc.batched.Add(1)
	}
	if sc.onStep != nil {
		sc.onStep(len(sc.batch))
	}
	if err != nil {
		for _, j := range sc.batch {
			j.sl.forget()
			j.err = fmt.Errorf("engine: decode: %w", err)
			sc.finish(j)
		}
		clear(sc.active)
		sc.active = sc.active[:0]
		clear(sc.bsess)
		return
	}
	for i, j := range sc.batch {
		j.sl.hist = append(j.sl.hist, sc.btoks[i])
		if dev {
			j.nextID, j.hasNext = sc.bnext[i], true
		} else {
			j.rearm = j.draws // its device sampler missed this token
		}
	}
	clear(sc.batch)
	clear(sc.bsess)
}

// onDevice reports whether this step's batch can run DecodeBatchSample:
// every job is on the device. It first re-arms the samplers of the jobs
// that went through a host step, with their whole history (the tokens
// in the cache; the device adds the one this step decodes).
func (sc *scheduler) onDevice() bool {
	if sc.bs == nil {
		return false
	}
	for _, j := range sc.batch {
		if !j.dev {
			return false
		}
	}
	all := true
	for _, j := range sc.batch {
		if !j.rearm {
			continue
		}
		j.rearm = false
		ok, err := j.sl.sess.(backend.SamplingDecoder).SetSampling(j.req.Sampling, j.sl.hist)
		if err != nil || !ok {
			// It took them at join; should it not now, the host samples
			// for it from here on, which gives a draw as valid.
			j.dev, j.draws, all = false, false, false
		}
	}
	return all
}

// next is the serial loop's body for one job (see Model.generate): it
// samples from the job's logits, streams the token and checks the stop
// conditions. It returns the token to decode, or false when the job is
// over (j.st and j.err say how).
func (j *job) next(m *Model) (int32, bool) {
	if j.abort.Load() {
		return 0, false // the consumer's error is the result
	}
	if err := j.ctx.Err(); err != nil {
		j.st.DoneReason, j.err = DoneCancel, err
		return 0, false
	}
	var id int32
	if j.hasNext {
		id, j.hasNext = j.nextID, false
	} else {
		var err error
		if id, err = j.smp.Sample(j.sl.logits); err != nil {
			j.err = fmt.Errorf("engine: %w", err)
			return 0, false
		}
	}
	j.smp.Accept(id)
	req := j.req
	if !req.IgnoreEOS && m.tok.IsEOG(id) {
		j.st.DoneReason = DoneStop
		j.err = flushRest(j.dec, &j.hold, req.Stop, j.emit, &j.st)
		return 0, false
	}
	text := j.dec.Add(id)
	j.sl.lat = append(j.sl.lat, time.Since(j.t))
	j.st.GeneratedTokens++
	stop := false
	if len(req.Stop) > 0 {
		text, stop = holdStops(&j.hold, text, req.Stop)
	}
	_ = j.emit(Token{ID: id, Text: text})
	if stop {
		j.st.DoneReason = DoneStop
		return 0, false
	}
	if (req.MaxTokens > 0 && j.st.GeneratedTokens >= req.MaxTokens) || len(j.sl.hist) == m.ctxLen {
		j.st.DoneReason = DoneLength
		j.err = flushRest(j.dec, &j.hold, req.Stop, j.emit, &j.st)
		return 0, false
	}
	return id, true
}

// emit queues a token for the consumer.
func (j *job) emit(t Token) error {
	j.mu.Lock()
	j.out = append(j.out, t)
	j.mu.Unlock()
	select {
	case j.wake <- struct{}{}:
	default:
	}
	return nil
}

// finish ends a job that left the batch: its slot is freed and the
// consumer told.
func (sc *scheduler) finish(j *job) {
	if len(j.sl.lat) > 0 {
		j.st.Latencies = slices.Clone(j.sl.lat)
	}
	sc.release(j.sl)
	j.sl = nil
	sc.inBatch.Add(-1)
	j.mu.Lock()
	j.fin, j.res = true, j.err
	j.mu.Unlock()
	select {
	case j.wake <- struct{}{}:
	default:
	}
}
