package cpu

import (
	"errors"
	"fmt"
	"math"
	"os"
	"time"
	"unsafe"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/backend/cpu/kernels"
	"github.com/edgellm/edgellm/model"
)

// maxBatch is the most prompt tokens one prefill pass carries; longer
// prompts run in chunks of this size (each weight row is read once per
// chunk). It bounds the session's activation buffers.
const maxBatch = 64

// maxKVBytes caps one session's KV cache, so a bad ctx is an error rather
// than an attempt to allocate the machine's memory.
const maxKVBytes = 32 << 30

// maxKVChunks is the most position ranges a decode step splits each
// attention head into (see attnTask).
const maxKVChunks = 4

type colActs struct {
	cols int
	a    *kernels.Acts
}

// actsSet holds int8 activations per input width the kernels read.
type actsSet []colActs

// newActsSet makes the int8 activations of tokens tokens for every input
// width a product that reads them has.
func (m *Model) newActsSet(tokens int) (actsSet, error) {
	var as actsSet
	for _, mm := range m.matmuls() {
		if !mm.acts() || as.get(mm.cols()) != nil {
			continue
		}
		a, err := kernels.NewActs(mm.cols(), tokens)
		if err != nil {
			return nil, fmt.Errorf("cpu: %w", err)
		}
		as = append(as, colActs{mm.cols(), a})
	}
	return as, nil
}

// get returns the activations of width cols, or nil.
func (as actsSet) get(cols int) *kernels.Acts {
	for _, c := range as {
		if c.cols == cols {
			return c.a
		}
	}
	return nil
}

// Session is one sequence: its float32 KV cache, position and every buffer
// a forward pass needs, allocated once by NewSession.
type Session struct {
	m      *Model
	ctx    int
	pos    int
	batch  int // rows of the activation buffers
	closed bool

	// The KV cache, per layer: float32 [ctx][KVDim], or float16 (keysH,
	// valsH) when the model runs the int8 kernels (Model.kvHalf), stored
	// head-major [KVHeads][ctx][HeadDim] so that the query heads of a KV
	// head stream its positions contiguously.
	keys, vals   [][]float32
	keysH, valsH [][]uint16
	kb, vb       []float32 // [batch][KVDim] new K and V before float16

	x, xb   []float32 // [batch][Dim] residual stream and normed input
	q, att  []float32 // [batch][Heads*HeadDim]
	hb, hb2 []float32 // [batch][FFNDim]
	cos     []float32 // [batch][HeadDim/2] RoPE tables of the batch positions
	sin     []float32

	acts    actsSet     // int8 activations per input width the kernels read
	scratch [][]float32 // per worker: one dequantized row
	scores  [][]float32 // per worker: attention scores [group][ctx+7]
	gstat   [][]float32 // per worker: per head of a group max, sum

	// The partial results of a decode step's attention split into
	// position ranges: per range HeadDim values per head ([chunks][Heads*
	// HeadDim], not yet divided by the softmax sums), and per (range,
	// head) the largest scaled score and the sum of the exponentials.
	part, pmax, psum []float32

	mt matTask
	at attnTask
	gt gateTask

	profile bool
	times   backend.OpTimes
}

var (
	_ backend.Session  = (*Session)(nil)
	_ backend.Profiler = (*Session)(nil)
)

// Profile implements backend.Profiler. Timing costs a clock read per
// operation, nothing more; the operations still run in parallel.
func (s *Session) Profile(on bool) { s.profile = on }

// OpTimes implements backend.Profiler.
func (s *Session) OpTimes() backend.OpTimes {
	t := s.times
	s.times = backend.OpTimes{}
	return t
}

// lap adds the time since t to *acc when profiling and returns the new mark.
func (s *Session) lap(acc *float64, t time.Time) time.Time {
	if !s.profile {
		return t
	}
	now := time.Now()
	*acc += now.Sub(t).Seconds()
	return now
}

// NewSession implements backend.Model.
func (m *Model) NewSession(ctx int) (backend.Session, error) {
	return m.newSession(ctx)
}

func (m *Model) newSession(ctx int) (*Session, error) {
	c := &m.cfg
	if ctx <= 0 {
		return nil, fmt.Errorf("cpu: context length %d must be positive", ctx)
	}
	kvDim := c.KVDim()
	esz := int64(4)
	if m.kvHalf {
		esz = 2
	}
	if kv := 2 * esz * int64(c.Layers) * int64(ctx) * int64(kvDim); kv > maxKVBytes {
		return nil, fmt.Errorf("cpu: a %d-position KV cache needs %d bytes, more than the limit %d", ctx, kv, int64(maxKVBytes))
	}
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return nil, errors.New("cpu: model is closed")
	}
	qDim := c.Heads * c.HeadDim
	b := min(ctx, maxBatch)
	s := &Session{
		m: m, ctx: ctx, batch: b,
		x: make([]float32, b*c.Dim), xb: make([]float32, b*c.Dim),
		q: make([]float32, b*qDim), att: make([]float32, b*qDim),
		hb: make([]float32, b*c.FFNDim), hb2: make([]float32, b*c.FFNDim),
		cos: make([]float32, b*c.HeadDim/2), sin: make([]float32, b*c.HeadDim/2),
		scratch: make([][]float32, m.threads), scores: make([][]float32, m.threads),
		gstat: make([][]float32, m.threads),
	}
	if m.kvHalf {
		s.keysH, s.valsH = make([][]uint16, c.Layers), make([][]uint16, c.Layers)
		for l := range s.keysH {
			s.keysH[l] = make([]uint16, ctx*kvDim)
			s.valsH[l] = make([]uint16, ctx*kvDim)
		}
		s.kb, s.vb = make([]float32, b*kvDim), make([]float32, b*kvDim)
	} else {
		s.keys, s.vals = make([][]float32, c.Layers), make([][]float32, c.Layers)
		for l := range s.keys {
			s.keys[l] = make([]float32, ctx*kvDim)
			s.vals[l] = make([]float32, ctx*kvDim)
		}
	}
	// Touch every page of the cache now: first touches during decode
	// (one new page per layer, KV head and K/V every 32 positions) cost
	// this VM ~3.5 us each, ~0.6 ms on every 32nd SmolLM token.
	for l := range c.Layers {
		if m.kvHalf {
			prefault(s.keysH[l])
			prefault(s.valsH[l])
		} else {
			prefault(s.keys[l])
			prefault(s.vals[l])
		}
	}
	for w := range s.scratch {
		s.scratch[w] = make([]float32, m.maxCol)
		s.scores[w] = make([]float32, c.Heads/c.KVHeads*(ctx+7))
		s.gstat[w] = make([]float32, 2*c.Heads/c.KVHeads)
	}
	s.mt.scratch = s.scratch
	acts, err := m.newActsSet(b)
	if err != nil {
		return nil, err
	}
	s.acts = acts
	s.at = attnTask{s: s}
	s.part = make([]float32, maxKVChunks*qDim)
	s.pmax, s.psum = make([]float32, maxKVChunks*c.Heads), make([]float32, maxKVChunks*c.Heads)
	return s, nil
}

var pageSize = os.Getpagesize()

// prefault writes a zero into every page of a freshly allocated (zero)
// buffer, so the kernel maps it now rather than inside a decode step.
func prefault[T uint16 | float32](b []T) {
	step := max(pageSize/int(unsafe.Sizeof(b[0])), 1)
	for i := 0; i < len(b); i += step {
		b[i] = 0
	}
}

// Pos implements backend.Session.
func (s *Session) Pos() int { return s.pos }

// Rewind implements backend.Session. Cached K/V past pos are simply
// overwritten later.
func (s *Session) Rewind(pos int) error {
	if pos < 0 || pos > s.pos {
		return fmt.Errorf("cpu: rewind to %d outside [0, %d]", pos, s.pos)
	}
	s.pos = pos
	return nil
}

// Close implements backend.Session; it drops the buffers.
func (s *Session) Close() error {
	s.closed = true
	s.keys, s.vals, s.keysH, s.valsH = nil, nil, nil, nil
	return nil
}

// Decode implements backend.Session. It allocates nothing.
func (s *Session) Decode(token int32, logits []float32) error {
	if logits == nil {
		return errors.New("cpu: decode needs a logits buffer")
	}
	return s.forward(token, nil, logits)
}

// Prefill implements backend.Session: the prompt runs in batches of up to
// maxBatch tokens.
func (s *Session) Prefill(tokens []int32, logits []float32) error {
	if len(tokens) == 0 {
		if logits != nil {
			return errors.New("cpu: prefill of no tokens has no logits")
		}
		return nil
	}
	if s.pos+len(tokens) > s.ctx {
		return fmt.Errorf("cpu: %d tokens at position %d overflow the %d-position context", len(tokens), s.pos, s.ctx)
	}
	for i := 0; i < len(tokens); i += s.batch {
		chunk := tokens[i:min(i+s.batch, len(tokens))]
		var l []float32
		if i+len(chunk) == len(tokens) {
			l = logits
		}
		if err := s.forward(0, chunk, l); err != nil {
			return err
		}
	}
	return nil
}

// forward runs one batch (tokens, or the single token tok when tokens is
// nil) at positions pos.., writing the last token's logits when asked.
func (s *Session) forward(tok int32, tokens []int32, logits []float32) error {
	m := s.m
	c := &m.cfg
	single := [1]int32{tok}
	if tokens == nil {
		tokens = single[:]
	}
	nb := len(tokens)
	switch {
	case s.closed:
		return errors.New("cpu: session is closed")
	case s.pos+nb > s.ctx:
		return fmt.Errorf("cpu: position %d is past the %d-position context", s.pos+nb-1, s.ctx)
	case logits != nil && len(logits) != c.Vocab:
		return fmt.Errorf("cpu: logits buffer of %d, want %d", len(logits), c.Vocab)
	}
	for _, t := range tokens {
		if t < 0 || int(t) >= c.Vocab {
			return fmt.Errorf("cpu: token %d outside the vocabulary of %d", t, c.Vocab)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("cpu: model is closed")
	}

	dim, ffn, kvDim := c.Dim, c.FFNDim, c.KVDim()
	qDim := c.Heads * c.HeadDim
	pos0 := s.pos
	x := s.x[:nb*dim]

	var mark time.Time
	if s.profile {
		mark = time.Now()
	}
	pt := &s.times
	for b, t := range tokens {
		getRow(m.embed, int(t), x[b*dim:(b+1)*dim])
	}
	s.ropeTables(pos0, nb)
	mark = s.lap(&pt.Embedding, mark)

	for l := range m.layers {
		ly := &m.layers[l]
		rmsNormBatch(s.xb, x, ly.attnNorm, nb, dim, c.NormEps)
		mark = s.lap(&pt.Other, mark)

		// Q into s.q; K and V straight into the cache rows of their
		// positions, or through kb, vb into a float16 cache.
		var kc, vc []float32
		if m.kvHalf {
			kc, vc = s.kb, s.vb
		} else {
			kc, vc = s.keys[l][pos0*kvDim:], s.vals[l][pos0*kvDim:]
		}
		s.mul3(s.xb, nb, ly.wq, s.q, ly.wk, kc, ly.wv, vc)
		for b := range nb {
			s.rope(s.q[b*qDim:(b+1)*qDim], b)
			s.rope(kc[b*kvDim:(b+1)*kvDim], b)
		}
		if m.kvHalf {
			for b := range nb {
				s.putKV(l, pos0+b, kc[b*kvDim:(b+1)*kvDim], vc[b*kvDim:(b+1)*kvDim])
			}
		}
		mark = s.lap(&pt.QKV, mark)

		s.at.layer, s.at.pos0, s.at.nb = l, pos0, nb
		s.at.chunks = 1
		if nb == 1 {
			// by the position alone, never the thread count, so that the
			// result does not depend on the number of workers
			s.at.chunks = min(max((pos0+1)/32, 1), maxKVChunks)
		}
		m.pool.run(&s.at)
		if s.at.chunks > 1 {
			s.at.merge()
		}
		mark = s.lap(&pt.Attention, mark)

		if ly.attnSubNorm != nil {
			rmsNormBatch(s.att, s.att, ly.attnSubNorm, nb, qDim, c.NormEps)
		}
		s.mul(ly.wo, s.xb, s.att, nb)
		addTo(x, s.xb[:nb*dim])
		mark = s.lap(&pt.Output, mark)

		rmsNormBatch(s.xb, x, ly.ffnNorm, nb, dim, c.NormEps)
		mark = s.lap(&pt.Other, mark)
		s.mul3(s.xb, nb, ly.wgate, s.hb, ly.wup, s.hb2, nil, nil)
		s.gt.g, s.gt.u, s.gt.act = s.hb[:nb*ffn], s.hb2[:nb*ffn], c.Act
		m.pool.run(&s.gt)
		mark = s.lap(&pt.FFNUpGate, mark)
		if ly.ffnSubNorm != nil {
			rmsNormBatch(s.hb, s.hb, ly.ffnSubNorm, nb, ffn, c.NormEps)
		}
		s.mul(ly.wdown, s.xb, s.hb, nb)
		addTo(x, s.xb[:nb*dim])
		mark = s.lap(&pt.FFNDown, mark)
	}
	s.pos += nb

	if logits != nil {
		last := x[(nb-1)*dim : nb*dim]
		rmsNormBatch(s.xb, last, m.out, 1, dim, c.NormEps)
		s.mul(m.output, logits, s.xb, 1)
		s.lap(&pt.LMHead, mark)
	}
	return nil
}

// putKV stores one token's K and V (KVDim floats each) at position pos of
// layer l's cache, in the cache's type and layout.
func (s *Session) putKV(l, pos int, k, v []float32) {
	c := &s.m.cfg
	kvDim := c.KVDim()
	if s.keysH == nil {
		copy(s.keys[l][pos*kvDim:(pos+1)*kvDim], k[:kvDim])
		copy(s.vals[l][pos*kvDim:(pos+1)*kvDim], v[:kvDim])
		return
	}
	hd := c.HeadDim
	for kvh := range c.KVHeads {
		dst := (kvh*s.ctx + pos) * hd
		kernels.ToF16(s.keysH[l][dst:dst+hd], k[kvh*hd:(kvh+1)*hd])
		kernels.ToF16(s.valsH[l][dst:dst+hd], v[kvh*hd:(kvh+1)*hd])
	}
}

// mul runs out[b*rows+r] = W[r]·x_b over the pool.
func (s *Session) mul(w matmul, out, x []float32, nb int) {
	s.mul3(x, nb, w, out, nil, nil, nil, nil)
}

// mul3 runs up to three products of the same input as one pool operation.
func (s *Session) mul3(x []float32, nb int, w0 matmul, o0 []float32, w1 matmul, o1 []float32, w2 matmul, o2 []float32) {
	s.mt.mul3(s.m.pool, s.acts, x, nb, w0, o0, w1, o1, w2, o2)
}

// ropeTables fills cos/sin for the batch positions pos0..pos0+nb-1.
func (s *Session) ropeTables(pos0, nb int) {
	half := len(s.m.freqs)
	for b := range nb {
		p := float64(pos0 + b)
		for i, f := range s.m.freqs {
			sn, cs := math.Sincos(p * float64(f))
			s.cos[b*half+i] = float32(cs)
			s.sin[b*half+i] = float32(sn)
		}
	}
}

// rope rotates every head of v (one token's Q or K) by batch row b's angles.
func (s *Session) rope(v []float32, b int) {
	hd := s.m.cfg.HeadDim
	half := hd / 2
	cs, sn := s.cos[b*half:(b+1)*half], s.sin[b*half:(b+1)*half]
	neox := s.m.cfg.RopeStyle == model.RopeNeoX
	for h := 0; h < len(v); h += hd {
		head := v[h : h+hd]
		for i := range half {
			// Norm rotates adjacent pairs, NeoX the two halves.
			j0, j1 := 2*i, 2*i+1
			if neox {
				j0, j1 = i, i+half
			}
			a, bb := head[j0], head[j1]
			head[j0] = a*cs[i] - bb*sn[i]
			head[j1] = a*sn[i] + bb*cs[i]
		}
	}
}

// attnTask is causal multi-head attention over the cache for a batch:
// work item (b, kvh, c) is KV range c of the query heads sharing KV head
// kvh (grouped-query attention: each key and value is read once for the
// group) for batch token b, at position pos0+b, attending to positions
// 0..pos0+b. Prefill's workers take items round-robin, so causal prefill
// (later tokens see more positions) still splits evenly. A decode step also
// splits each KV head's positions into chunks ranges (one per 32
// positions, up to maxKVChunks), so that KV heads that do not divide
// among the workers (SmolLM: 3 on 2) still do; the partial softmax sums
// are merged afterwards (merge).
type attnTask struct {
	s               *Session
	layer, pos0, nb int
	chunks          int
}

func (t *attnTask) run(w, n int) {
	s := t.s
	c := &s.m.cfg
	hd, qDim := c.HeadDim, c.Heads*c.HeadDim
	g := c.Heads / c.KVHeads
	gd := g * hd // a group's query (and output) floats
	kv := kvLayer{ctx: s.ctx, kvDim: c.KVDim()}
	if s.keysH != nil {
		kv.kh, kv.vh = s.keysH[t.layer], s.valsH[t.layer]
	} else {
		kv.k, kv.v = s.keys[t.layer], s.vals[t.layer]
	}
	scale := float32(1 / math.Sqrt(float64(hd)))
	mx, sum := s.gstat[w][:g], s.gstat[w][g:2*g]
	items := t.nb * c.KVHeads * t.chunks
	// A decode step's items are alike: each worker takes a contiguous run
	// of them, so it streams adjacent ranges of the cache (its prefetches
	// run on into its own next item). Prefill's grow with the token, and
	// go round-robin.
	i0, i1, step := w, items, n
	if t.nb == 1 {
		i0, i1, step = items*w/n, items*(w+1)/n, 1
	}
	for it := i0; it < i1; it += step {
		b, r := it/(c.KVHeads*t.chunks), it%(c.KVHeads*t.chunks)
		kvh, ch := r/t.chunks, r%t.chunks
		q := s.q[b*qDim+kvh*gd : b*qDim+(kvh+1)*gd]
		npos := t.pos0 + b + 1
		p0, p1 := npos*ch/t.chunks, npos*(ch+1)/t.chunks
		if t.chunks == 1 {
			out := s.att[b*qDim+kvh*gd : b*qDim+(kvh+1)*gd]
			attend(out, q, g, &kv, kvh, p0, p1, scale, s.scores[w], mx, sum)
			for h := range g {
				inv := 1 / sum[h]
				for i := range hd {
					out[h*hd+i] *= inv
				}
			}
			continue
		}
		out := s.part[ch*qDim+kvh*gd : ch*qDim+(kvh+1)*gd]
		pm, ps := s.pmax[ch*c.Heads+kvh*g:ch*c.Heads+(kvh+1)*g], s.psum[ch*c.Heads+kvh*g:ch*c.Heads+(kvh+1)*g]
		if p0 < p1 {
			attend(out, q, g, &kv, kvh, p0, p1, scale, s.scores[w], pm, ps)
			continue
		}
		clear(out)
		for h := range g {
			pm[h], ps[h] = float32(math.Inf(-1)), 0
		}
	}
}

// merge combines the chunks' partial results of a split decode step into
// s.att: out = sum_c e^(m_c-M) o_c / sum_c e^(m_c-M) l_c.
func (t *attnTask) merge() {
	s := t.s
	c := &s.m.cfg
	hd, qDim := c.HeadDim, c.Heads*c.HeadDim
	for h := 0; h < c.Heads; h++ {
		mx := float32(math.Inf(-1))
		for ch := 0; ch < t.chunks; ch++ {
			mx = max(mx, s.pmax[ch*c.Heads+h])
		}
		var f [maxKVChunks]float32
		var sum float32
		for ch := 0; ch < t.chunks; ch++ {
			if l := s.psum[ch*c.Heads+h]; l != 0 { // else an empty range
				f[ch] = float32(math.Exp(float64(s.pmax[ch*c.Heads+h] - mx)))
				sum += f[ch] * l
			}
		}
		for ch := range f[:t.chunks] {
			f[ch] /= sum
		}
		out := s.att[h*hd : (h+1)*hd]
		clear(out)
		kernels.AttnMix(out, f[:t.chunks], s.part[h*hd:], qDim)
	}
}

// attend writes to out (g heads of HeadDim floats) the softmax-weighted
// sums of the values of positions [p0, p1) of KV head kvh for the g query
// heads in q, not yet divided by the softmax sums, and sets mx[h] to head
// h's largest scaled score and sum[h] to its sum of e^(score-max). sc is
// scratch of at least g*(p1-p0+7) floats.
func attend(out, q []float32, g int, kv *kvLayer, kvh, p0, p1 int, scale float32, sc, mx, sum []float32) {
	np := p1 - p0
	// Score rows padded to 8 with -Inf (weight 0): the softmax then runs
	// whole in the assembly, with no scalar tail per head and range.
	rs := (np + 7) &^ 7
	hd := len(q) / g
	sc = sc[:g*rs]
	if kv.kh != nil {
		off := (kvh*kv.ctx + p0) * hd
		kernels.AttnScoresF16G(sc, np, rs, mx, q, kv.kh[off:], hd, kv.vh[off:])
	} else {
		off := p0*kv.kvDim + kvh*hd
		for h := range g {
			mx[h] = kernels.AttnScores(sc[h*rs:h*rs+np], q[h*hd:(h+1)*hd], kv.k[off:], kv.kvDim)
		}
	}
	ninf := float32(math.Inf(-1))
	for h := range g {
		row := sc[h*rs : (h+1)*rs]
		for i := np; i < rs; i++ {
			row[i] = ninf
		}
		mx[h] *= scale // scale > 0: the largest scaled score
		sum[h] = kernels.SoftmaxExp(row, scale, mx[h])
	}
	clear(out)
	if kv.vh != nil {
		off := (kvh*kv.ctx + p0) * hd
		kernels.AttnMixF16G(out, g, sc, np, rs, kv.vh[off:], hd)
		return
	}
	off := p0*kv.kvDim + kvh*hd
	for h := range g {
		kernels.AttnMix(out[h*hd:(h+1)*hd], sc[h*rs:h*rs+np], kv.v[off:], kv.kvDim)
	}
}

// kvLayer is one layer's cache: k, v in float32 ([ctx][kvDim]) or kh, vh
// in float16 ([KVHeads][ctx][HeadDim]).
type kvLayer struct {
	k, v       []float32
	kh, vh     []uint16
	ctx, kvDim int
}

// rmsNormBatch normalises nb rows of width n of x into dst (which may be
// x itself) with the reference's RMSNorm, row by row.
func rmsNormBatch(dst, x, w []float32, nb, n int, eps float32) {
	for b := range nb {
		model.RMSNorm(dst[b*n:(b+1)*n], x[b*n:(b+1)*n], w, eps)
	}
}

func addTo(dst, src []float32) {
	for i, v := range src {
		dst[i] += v
	}
}

// gateTask runs gate over the pool: its exp is a visible share of a token
// when done on one core.
type gateTask struct {
	g, u []float32
	act  model.Activation
}

func (t *gateTask) run(w, n int) {
	// Shares in whole 8s: the assembly takes 8 at a time and a Go tail the
	// rest, which round differently; aligned shares keep every element on
	// the same path whatever the number of workers.
	chunks := (len(t.g) + 7) / 8
	i0, i1 := min(chunks*w/n*8, len(t.g)), min(chunks*(w+1)/n*8, len(t.g))
	gate(t.g[i0:i1], t.u[i0:i1], t.act)
}

// gate computes the FFN's gated activation into g: act(g) * u.
func gate(g, u []float32, act model.Activation) {
	switch act {
	case model.ReLU2:
		for i, v := range g {
			v = max(v, 0)
			g[i] = v * v * u[i]
		}
	default:
		kernels.SiLUMul(g, u)
	}
}
