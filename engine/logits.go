package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/edgellm/edgellm/backend"
)

// Logits runs ids at positions 0..len(ids)-1 of a fresh session (no BOS is
// added; the KV cache that Generate reuses is left as it was) and returns
// the logits after each position: len(ids) rows of Vocab values, row p
// for position p, as llama.cpp's teacher-forced logits are laid out.
//
// When the backend's session implements backend.LogitsPrefiller the ids run
// as one batch, as a prompt does. Otherwise the first id runs as a Prefill
// and each next one as a Decode, one position at a time: the same network,
// so the same numbers up to the backend's batched arithmetic (the order of
// its sums), at the speed of generation. The load-time logger says which.
func (m *Model) Logits(ctx context.Context, ids []int32) ([]float32, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errors.New("engine: model is closed")
	}
	if err := m.checkTokens(ids); err != nil {
		return nil, err
	}
	vocab := m.weights.Vocab
	if n := int64(len(ids)) * int64(vocab); n > maxLogits {
		return nil, fmt.Errorf("engine: %d positions of %d logits are %d values, more than the %d one call returns: ask for fewer positions", len(ids), vocab, n, maxLogits)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// A session just long enough: its KV cache is all this needs.
	s, err := m.be.NewSession(len(ids))
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	defer s.Close()
	out := make([]float32, len(ids)*vocab)
	if lp, ok := s.(backend.LogitsPrefiller); ok {
		m.log.Info("logits of every position in one batch", "positions", len(ids), "backend", m.be.Name())
		if err := lp.PrefillLogits(ids, out); err != nil {
			return nil, fmt.Errorf("engine: prefill: %w", err)
		}
		return out, nil
	}
	m.log.Info("logits one position at a time (the backend keeps only a batch's last logits)",
		"positions", len(ids), "backend", m.be.Name())
	if err := s.Prefill(ids[:1], out[:vocab]); err != nil {
		return nil, fmt.Errorf("engine: prefill: %w", err)
	}
	for p := 1; p < len(ids); p++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := s.Decode(ids[p], out[p*vocab:(p+1)*vocab]); err != nil {
			return nil, fmt.Errorf("engine: decode at position %d: %w", p, err)
		}
	}
	return out, nil
}

// maxLogits bounds the values one Logits call returns (1 GiB of float32),
// so that a long sequence over a large vocabulary is an error, not a huge
// allocation.
const maxLogits = 1 << 28

// checkTokens checks a sequence to run from position 0: not empty, within
// the context, every id in the vocabulary.
func (m *Model) checkTokens(tokens []int32) error {
	if len(tokens) == 0 {
		return errors.New("engine: empty prompt (no tokens to start from)")
	}
	if len(tokens) > m.ctxLen {
		return fmt.Errorf("engine: prompt of %d tokens does not fit the context of %d tokens", len(tokens), m.ctxLen)
	}
	vocab := m.weights.Vocab
	for i, t := range tokens {
		if t < 0 || int(t) >= vocab {
			return fmt.Errorf("engine: prompt token %d is %d, outside the vocabulary of %d", i, t, vocab)
		}
	}
	return nil
}
