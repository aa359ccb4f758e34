package cpu

import (
	"errors"
	"fmt"
	"runtime/debug"

	"github.com/edgellm/edgellm/backend"
)

// Batched decode: one step for several sessions, each at its own position,
// so that every weight row is read once for the batch (the products run as
// matrix-matrix products, as prefill's do) while attention reads each
// session's own cache.
//
// It is batch-invariant: a session's logits are bit for bit those Decode
// gives it alone. The step is the same forward pass (forward.go) with one
// row per session, and everything per token is the same computation in the
// same order: int8 activations are quantized per token (kernels.Acts.Set),
// the kernels' MatMat equals MatVec row by row, plain-path quantized rows
// use quant.Dot per token as a lone decode does (matTask.tokenwise), norms
// and the gated activation run row by row with the same 8-aligned shares,
// and attention runs each session's own attnTask with the chunking its
// position alone decides.

var _ backend.BatchDecoder = (*Model)(nil)

// batchState is the model's pass for DecodeBatch, for up to cap
// sessions; it grows (once per new size) and is reused, so a step
// allocates nothing.
type batchState struct {
	cap    int
	p      *pass
	logits []float32 // [cap][Vocab]
}

// DecodeBatch implements backend.BatchDecoder. Batches larger than the
// prefill batch (64) run in pieces of that size.
func (m *Model) DecodeBatch(sessions []backend.Session, tokens []int32, logits [][]float32) (err error) {
	defer recoverFault(&err)
	defer debug.SetPanicOnFault(faultsPanic())
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

// growBatch makes sure the batch pass holds nb sessions, rounding the
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
	p, err := m.newPass(size)
	if err != nil {
		return err
	}
	p.mt.tokenwise = true
	m.batch = &batchState{cap: size, p: p, logits: make([]float32, size*m.cfg.Vocab)}
	return nil
}

// decodeBatch runs one step for up to maxBatch checked sessions, one row
// each, through the same forward pass as a lone decode; m.mu is held.
func (m *Model) decodeBatch(sessions []backend.Session, tokens []int32, logits [][]float32) error {
	nb := len(sessions)
	if err := m.growBatch(nb); err != nil {
		return err
	}
	b := m.batch
	p := b.p
	p.nb = nb
	for i, bs := range sessions {
		s := bs.(*Session)
		p.sess[i], p.pos[i] = s, s.pos
	}
	v := m.cfg.Vocab
	m.forward(p, tokens, 0, b.logits[:nb*v])
	for i := range nb {
		p.sess[i].pos++
		copy(logits[i], b.logits[i*v:(i+1)*v])
	}
	clear(p.sess)
	return nil
}
