package cpu

import (
	"errors"
	"fmt"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/model"
)

// Batched decode: one step for several sessions, each at its own position,
// so that every weight row is read once for the batch (the products run as
// matrix-matrix products, as prefill's do) while attention reads each
// session's own cache.
//
// It is batch-invariant: a session's logits are bit for bit those Decode
// gives it alone. Everything per token is the same computation in the same
// order: int8 activations are quantized per token (kernels.Acts.Set), the
// kernels' MatMat equals MatVec row by row, plain-path quantized rows use
// quant.Dot per token as a lone decode does, norms and the gated
// activation run row by row with the same 8-aligned shares, and attention
// runs each session's own attnTask with the chunking its position alone
// decides.

var _ backend.BatchDecoder = (*Model)(nil)

// batchState is the model's buffers for DecodeBatch, for up to cap
// sessions; it grows (once per new size) and is reused, so a step
// allocates nothing.
type batchState struct {
	cap     int
	sess    []*Session
	x, xb   []float32 // [cap][Dim]
	q, att  []float32 // [cap][Heads*HeadDim]
	kb, vb  []float32 // [cap][KVDim]
	hb, hb2 []float32 // [cap][FFNDim]
	logits  []float32 // [cap][Vocab]
	acts    actsSet
	scratch [][]float32 // per worker

	mt matTask // tokenwise
	at batchAttnTask
	gt batchGateTask
}

// DecodeBatch implements backend.BatchDecoder. Batches larger than the
// prefill batch (64) run in pieces of that size.
func (m *Model) DecodeBatch(sessions []backend.Session, tokens []int32, logits [][]float32) error {
	n := len(sessions)
	if len(tokens) != n || len(logits) != n {
		return fmt.Errorf("cpu: decode batch of %d sessions, %d tokens and %d logits buffers", n, len(tokens), len(logits))
	}
	c := &m.cfg
	for i, bs := range sessions {
		s, ok := bs.(*Session)
		switch {
		case !ok || s == nil:
			return fmt.Errorf("cpu: decode batch: session %d is not a cpu session", i)
		case s.m != m:
			return fmt.Errorf("cpu: decode batch: session %d belongs to another model", i)
		case s.closed:
			return fmt.Errorf("cpu: decode batch: session %d is closed", i)
		case s.pos >= s.ctx:
			return fmt.Errorf("cpu: decode batch: session %d: position %d is past the %d-position context", i, s.pos, s.ctx)
		case tokens[i] < 0 || int(tokens[i]) >= c.Vocab:
			return fmt.Errorf("cpu: decode batch: session %d: token %d outside the vocabulary of %d", i, tokens[i], c.Vocab)
		case len(logits[i]) != c.Vocab:
			return fmt.Errorf("cpu: decode batch: session %d: logits buffer of %d, want %d", i, len(logits[i]), c.Vocab)
		}
		for j := range i {
			if sessions[j] == bs {
				return fmt.Errorf("cpu: decode batch: session %d is also session %d", i, j)
			}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("cpu: model is closed")
	}
	for i := 0; i < n; i += maxBatch {
		e := min(i+maxBatch, n)
		if err := m.decodeBatch(sessions[i:e], tokens[i:e], logits[i:e]); err != nil {
			return err
		}
	}
	return nil
}

// growBatch makes sure the batch buffers hold nb sessions, rounding the
// size up to a power of two so a batch that grows one at a time
// reallocates only a few times.
func (m *Model) growBatch(nb int) error {
	if m.batch != nil && m.batch.cap >= nb {
		return nil
	}
	size := 1
	for size < nb {
		size *= 2
	}
	size = min(size, maxBatch)
	c := &m.cfg
	qDim, kvDim := c.Heads*c.HeadDim, c.KVDim()
	b := &batchState{
		cap: size, sess: make([]*Session, 0, size),
		x: make([]float32, size*c.Dim), xb: make([]float32, size*c.Dim),
		q: make([]float32, size*qDim), att: make([]float32, size*qDim),
		kb: make([]float32, size*kvDim), vb: make([]float32, size*kvDim),
		hb: make([]float32, size*c.FFNDim), hb2: make([]float32, size*c.FFNDim),
		logits:  make([]float32, size*c.Vocab),
		scratch: make([][]float32, m.threads),
	}
	for w := range b.scratch {
		b.scratch[w] = make([]float32, m.maxCol)
	}
	var err error
	if b.acts, err = m.newActsSet(size); err != nil {
		return err
	}
	b.mt.scratch, b.mt.tokenwise = b.scratch, true
	m.batch = b
	return nil
}

// decodeBatch runs one step for up to maxBatch checked sessions; m.mu is
// held. The comments name the lone decode's step each part mirrors
// (Session.forward).
func (m *Model) decodeBatch(sessions []backend.Session, tokens []int32, logits [][]float32) error {
	nb := len(sessions)
	if err := m.growBatch(nb); err != nil {
		return err
	}
	b := m.batch
	c := &m.cfg
	dim, ffn, kvDim := c.Dim, c.FFNDim, c.KVDim()
	qDim := c.Heads * c.HeadDim
	b.sess = b.sess[:0]
	for _, bs := range sessions {
		b.sess = append(b.sess, bs.(*Session))
	}
	x := b.x[:nb*dim]

	// Embedding; each session's RoPE tables for its one position.
	for i, s := range b.sess {
		getRow(m.embed, int(tokens[i]), x[i*dim:(i+1)*dim])
		s.ropeTables(s.pos, 1)
	}

	for l := range m.layers {
		ly := &m.layers[l]
		rmsNormBatch(b.xb, x, ly.attnNorm, nb, dim, c.NormEps)

		// Q, K, V for the whole batch; then per session RoPE, its K and V
		// into its cache and its Q where its attention task reads it.
		b.mt.mul3(m.pool, b.acts, b.xb, nb, ly.wq, b.q, ly.wk, b.kb, ly.wv, b.vb)
		for i, s := range b.sess {
			q, k, v := s.q[:qDim], b.kb[i*kvDim:(i+1)*kvDim], b.vb[i*kvDim:(i+1)*kvDim]
			copy(q, b.q[i*qDim:(i+1)*qDim])
			s.rope(q, 0)
			s.rope(k, 0)
			s.putKV(l, s.pos, k, v)
			s.at.layer, s.at.pos0, s.at.nb = l, s.pos, 1
			// the lone decode's chunking: by the position alone
			s.at.chunks = min(max((s.pos+1)/32, 1), maxKVChunks)
		}
		b.at.sess = b.sess
		m.pool.run(&b.at)
		b.at.sess = nil
		for i, s := range b.sess {
			if s.at.chunks > 1 {
				s.at.merge()
			}
			copy(b.att[i*qDim:(i+1)*qDim], s.att[:qDim])
		}

		if ly.attnSubNorm != nil {
			rmsNormBatch(b.att, b.att, ly.attnSubNorm, nb, qDim, c.NormEps)
		}
		b.mt.mul3(m.pool, b.acts, b.att, nb, ly.wo, b.xb, nil, nil, nil, nil)
		addTo(x, b.xb[:nb*dim])

		rmsNormBatch(b.xb, x, ly.ffnNorm, nb, dim, c.NormEps)
		b.mt.mul3(m.pool, b.acts, b.xb, nb, ly.wgate, b.hb, ly.wup, b.hb2, nil, nil)
		b.gt.g, b.gt.u, b.gt.n, b.gt.nb, b.gt.act = b.hb, b.hb2, ffn, nb, c.Act
		m.pool.run(&b.gt)
		if ly.ffnSubNorm != nil {
			rmsNormBatch(b.hb, b.hb, ly.ffnSubNorm, nb, ffn, c.NormEps)
		}
		b.mt.mul3(m.pool, b.acts, b.hb, nb, ly.wdown, b.xb, nil, nil, nil, nil)
		addTo(x, b.xb[:nb*dim])
	}
	for _, s := range b.sess {
		s.pos++
	}

	rmsNormBatch(b.xb, x, m.out, nb, dim, c.NormEps)
	b.mt.mul3(m.pool, b.acts, b.xb, nb, m.output, b.logits, nil, nil, nil, nil)
	for i := range nb {
		copy(logits[i], b.logits[i*c.Vocab:(i+1)*c.Vocab])
	}
	clear(b.sess[:cap(b.sess)])
	b.sess = b.sess[:0]
	return nil
}

// batchAttnTask runs every session's own attention task (set up for its
// one position) as one pool operation: each worker takes, in each session,
// the items a lone decode would give it.
type batchAttnTask struct {
	sess []*Session
}

func (t *batchAttnTask) run(w, n int) {
	for _, s := range t.sess {
		s.at.run(w, n)
	}
}

// batchGateTask is gateTask row by row: each row of n is split in the
// same 8-aligned shares as a lone decode's, so every element takes the
// same (assembly or Go) path.
type batchGateTask struct {
	g, u  []float32
	n, nb int
	act   model.Activation
}

func (t *batchGateTask) run(w, n int) {
	for b := range t.nb {
		row := gateTask{g: t.g[b*t.n : (b+1)*t.n], u: t.u[b*t.n : (b+1)*t.n], act: t.act}
		row.run(w, n)
	}
}
