package cpu

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"unsafe"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/backend/cpu/kernels"
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
		if !mm.acts() {
			continue
		}
		a := as.get(mm.cols())
		if a == nil {
			var err error
			if a, err = kernels.NewActs(mm.cols(), tokens); err != nil {
				return nil, fmt.Errorf("cpu: %w", err)
			}
			as = append(as, colActs{mm.cols(), a})
		}
		if km, ok := mm.(*kernelMat); ok && kernels.NeedsLaneBias(km.k) {
			a.EnableLaneBias()
		}
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

// Session is one sequence: its KV cache, position and the buffers a
// forward pass needs, allocated once by NewSession.
type Session struct {
	m      *Model
	ctx    int
	pos    int
	closed bool

	// The KV cache, per layer: float32 [ctx][KVDim], or float16 (keysH,
	// valsH) when the model runs the int8 kernels (Model.kvHalf), stored
	// head-major [KVHeads][ctx][HeadDim] so that the query heads of a KV
	// head stream its positions contiguously.
	keys, vals   [][]float32
	keysH, valsH [][]uint16

	p *pass // the session's own rows: a prefill chunk or one decoded token

	scores [][]float32 // per worker: attention scores [group][ctx+7]
	gstat  [][]float32 // per worker: per head of a group max, sum

	// The partial results of a decode step's attention split into
	// position ranges: per range HeadDim values per head ([chunks][QDim],
	// not yet divided by the softmax sums), and per (range, head) the
	// largest scaled score and the sum of the exponentials.
	part, pmax, psum []float32

	at attnTask

	profile bool
	times   backend.OpTimes
}

var (
	_ backend.Session         = (*Session)(nil)
	_ backend.Profiler        = (*Session)(nil)
	_ backend.LogitsPrefiller = (*Session)(nil)
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

// NewSession implements backend.Model.
func (m *Model) NewSession(ctx int) (backend.Session, error) {
	return m.newSession(ctx)
}

// newPass allocates the buffers of a pass of up to rows rows.
func (m *Model) newPass(rows int) (*pass, error) {
	c := &m.cfg
	qDim, kvDim := c.QDim(), c.KVDim()
	half := c.HeadDim / 2
	p := &pass{
		sess: make([]*Session, rows), pos: make([]int, rows), sets: len(m.ropeSets),
		x: make([]float32, rows*c.Dim), xb: make([]float32, rows*c.Dim),
		q: make([]float32, rows*qDim), att: make([]float32, rows*qDim),
		kb: make([]float32, rows*kvDim), vb: make([]float32, rows*kvDim),
		hb: make([]float32, rows*c.FFNDim), hb2: make([]float32, rows*c.FFNDim),
		cos: make([]float32, rows*len(m.ropeSets)*half), sin: make([]float32, rows*len(m.ropeSets)*half),
		mt: newMatTask(m.threads, m.maxCol),
	}
	var err error
	if p.acts, err = m.newActsSet(rows); err != nil {
		return nil, err
	}
	p.at.groups = make([]*attnTask, 0, rows)
	return p, nil
}

// KVBytes is the size of one session's KV cache for ctx positions: K and
// V, every layer, float16 or float32 elements as the model keeps them.
func (m *Model) KVBytes(ctx int) int64 {
	esz := 4
	if m.kvHalf {
		esz = 2
	}
	return m.cfg.KVBytes(ctx, esz)
}

func (m *Model) newSession(ctx int) (*Session, error) {
	c := &m.cfg
	if ctx <= 0 {
		return nil, fmt.Errorf("cpu: context length %d must be positive", ctx)
	}
	kvDim := c.KVDim()
	if kv := m.KVBytes(ctx); kv > maxKVBytes {
		return nil, fmt.Errorf("cpu: a %d-position KV cache needs %d bytes, more than the limit %d", ctx, kv, int64(maxKVBytes))
	}
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return nil, errors.New("cpu: model is closed")
	}
	p, err := m.newPass(min(ctx, maxBatch))
	if err != nil {
		return nil, err
	}
	s := &Session{
		m: m, ctx: ctx, p: p,
		scores: make([][]float32, m.threads), gstat: make([][]float32, m.threads),
	}
	if m.kvHalf {
		s.keysH, s.valsH = make([][]uint16, c.Layers), make([][]uint16, c.Layers)
		for l := range s.keysH {
			s.keysH[l] = make([]uint16, ctx*kvDim)
			s.valsH[l] = make([]uint16, ctx*kvDim)
		}
	} else {
		s.keys, s.vals = make([][]float32, c.Layers), make([][]float32, c.Layers)
		for l := range s.keys {
			s.keys[l] = make([]float32, ctx*kvDim)
			s.vals[l] = make([]float32, ctx*kvDim)
		}
	}
	// Touch every page of the cache now, so that no first touch (a page
	// fault) lands inside a decode step.
	for l := range c.Layers {
		if m.kvHalf {
			prefault(s.keysH[l])
			prefault(s.valsH[l])
		} else {
			prefault(s.keys[l])
			prefault(s.vals[l])
		}
	}
	for w := range s.scores {
		s.scores[w] = make([]float32, c.Heads/c.KVHeads*(ctx+7))
		s.gstat[w] = make([]float32, 2*c.Heads/c.KVHeads)
	}
	s.at = attnTask{s: s}
	qDim := c.QDim()
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
	tok := [1]int32{token}
	return s.run(tok[:], logits, false)
}

// Prefill implements backend.Session: the prompt runs in batches of up to
// maxBatch tokens.
func (s *Session) Prefill(tokens []int32, logits []float32) error {
	if len(tokens) == 0 && logits != nil {
		return errors.New("cpu: prefill of no tokens has no logits")
	}
	return s.run(tokens, logits, false)
}

// PrefillLogits implements backend.LogitsPrefiller: Prefill, keeping
// every position's logits (len(tokens) rows of Vocab).
func (s *Session) PrefillLogits(tokens []int32, logits []float32) error {
	if v := s.m.cfg.Vocab; len(logits) != len(tokens)*v {
		return fmt.Errorf("cpu: logits buffer of %d for %d tokens, want %d", len(logits), len(tokens), len(tokens)*v)
	}
	return s.run(tokens, logits, true)
}

// run checks and runs tokens at Pos().. in chunks of the session's rows,
// writing the logits of the last token, or with all of every token.
func (s *Session) run(tokens []int32, logits []float32, all bool) (err error) {
	defer recoverFault(&err)
	defer debug.SetPanicOnFault(faultsPanic())
	m := s.m
	c := &m.cfg
	switch {
	case s.closed:
		return errors.New("cpu: session is closed")
	case s.pos+len(tokens) > s.ctx:
		return fmt.Errorf("cpu: %d tokens at position %d overflow the %d-position context", len(tokens), s.pos, s.ctx)
	case logits != nil && !all && len(logits) != c.Vocab:
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
	p := s.p
	rows := len(p.pos)
	if s.profile {
		p.times = &s.times
	}
	for i := 0; i < len(tokens); i += rows {
		chunk := tokens[i:min(i+rows, len(tokens))]
		p.nb = len(chunk)
		for b := range chunk {
			p.sess[b], p.pos[b] = s, s.pos+b
		}
		from, out := p.nb-1, []float32(nil)
		switch {
		case all:
			from, out = 0, logits[i*c.Vocab:(i+len(chunk))*c.Vocab]
		case i+len(chunk) == len(tokens):
			out = logits
		}
		m.forward(p, chunk, from, out)
		s.pos += len(chunk)
	}
	p.times = nil
	clear(p.sess)
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

// attnTask is one session's causal multi-head attention over its cache
// for nb rows at positions pos0.. (queries q, outputs out): work item
// (b, kvh, c) is KV range c of the query heads sharing KV head kvh
// (grouped-query attention: each key and value is read once for the
// group) for row b, attending to the positions it sees (model.Config.
// FirstVisible up to its own). Prefill's workers take items round-robin,
// so causal prefill (later tokens see more positions) still splits evenly.
// A decode step (nb == 1) also splits each KV head's positions into chunks
// ranges (one per 32 positions, up to maxKVChunks, decided by the range
// alone so that the result does not depend on the number of workers), so
// that KV heads that do not divide among the workers (SmolLM: 3 on 2)
// still do; the partial softmax sums are merged afterwards (merge).
type attnTask struct {
	s               *Session
	layer, pos0, nb int
	chunks          int
	q, out          []float32 // [nb][QDim]
}

// setup points the task at layer l and the rows' queries and outputs.
func (t *attnTask) setup(l, pos0, nb int, q, out []float32) {
	t.layer, t.pos0, t.nb, t.q, t.out = l, pos0, nb, q, out
	t.chunks = 1
	if nb == 1 {
		c := &t.s.m.cfg
		seen := pos0 + 1 - c.FirstVisible(l, pos0)
		t.chunks = min(max(seen/32, 1), maxKVChunks)
	}
}

func (t *attnTask) run(w, n int) {
	s := t.s
	c := &s.m.cfg
	hd, qDim := c.HeadDim, c.QDim()
	g := c.Heads / c.KVHeads
	gd := g * hd // a group's query (and output) floats
	kv := kvLayer{ctx: s.ctx, kvDim: c.KVDim()}
	if s.keysH != nil {
		kv.kh, kv.vh = s.keysH[t.layer], s.valsH[t.layer]
	} else {
		kv.k, kv.v = s.keys[t.layer], s.vals[t.layer]
	}
	scale := c.ScoreScale()
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
		q := t.q[b*qDim+kvh*gd : b*qDim+(kvh+1)*gd]
		first, end := c.FirstVisible(t.layer, t.pos0+b), t.pos0+b+1
		seen := end - first
		p0, p1 := first+seen*ch/t.chunks, first+seen*(ch+1)/t.chunks
		if t.chunks == 1 {
			out := t.out[b*qDim+kvh*gd : b*qDim+(kvh+1)*gd]
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
// the row's output: out = sum_c e^(m_c-M) o_c / sum_c e^(m_c-M) l_c.
func (t *attnTask) merge() {
	s := t.s
	c := &s.m.cfg
	hd, qDim := c.HeadDim, c.QDim()
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
		out := t.out[h*hd : (h+1)*hd]
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
