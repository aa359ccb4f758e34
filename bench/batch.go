package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/sample"
)

// MaxBatch is the largest batch size bench measures.
const MaxBatch = 256

// maxBatchKVBytes caps the KV caches one batch size allocates in all, so a
// large batch at a long context is an error rather than an exhausted host.
const maxBatchKVBytes = 64 << 30

// BatchRow is one batch size's figures: batch sessions decoded together
// through the backend's BatchDecoder, one token each a step.
type BatchRow struct {
	Batch         int     `json:"batch"`
	DecodeTokPerS float64 `json:"decode_tok_per_s"` // aggregate: batch x steps / time
	P50MS         float64 `json:"p50_ms"`           // one step's time
	P99MS         float64 `json:"p99_ms"`
}

// batched reports whether sizes ask for the batched measurement: the
// default (batch 1 alone) is today's report and nothing more.
func batched(sizes []int) bool {
	return len(sizes) > 1 || len(sizes) == 1 && sizes[0] != 1
}

// CheckBatchSizes refuses a size outside 1..MaxBatch or one given twice.
// Its errors have no prefix: the CLI's parser adds the command's.
func CheckBatchSizes(sizes []int) error {
	seen := map[int]bool{}
	for _, n := range sizes {
		if n < 1 || n > MaxBatch {
			return fmt.Errorf("batch size %d outside 1..%d", n, MaxBatch)
		}
		if seen[n] {
			return fmt.Errorf("batch size %d given twice", n)
		}
		seen[n] = true
	}
	return nil
}

// checkBatches validates sizes against m before anything is measured.
func checkBatches(m backend.Model, sizes []int, ctx int) error {
	if err := CheckBatchSizes(sizes); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	for _, n := range sizes {
		if kv := backend.KVBytes(m, ctx) * int64(n); kv > maxBatchKVBytes {
			return fmt.Errorf("bench: batch %d needs %d bytes of KV cache at %d positions, more than the limit %d", n, kv, ctx, int64(maxBatchKVBytes))
		}
	}
	if _, ok := m.(backend.BatchDecoder); !ok && batched(sizes) {
		return fmt.Errorf("bench: the %s backend cannot decode a batch (no batched decode step yet); use batch size 1", m.Name())
	}
	return nil
}

// runBatch measures batch sessions decoded together: each is prefilled
// with its own random prompt of o.Prompt ids, then o.Gen batched steps
// are timed one by one, each session taking its greedy next token: picked
// on the device where the model is a BatchSampler (fresh sessions, never
// given SetSampling, take the argmax; only ids cross), else on the host
// from the logits of DecodeBatch.
func runBatch(ctx context.Context, m backend.Model, bd backend.BatchDecoder, batch int, o Options) (BatchRow, error) {
	bs, _ := m.(backend.BatchSampler)
	row := BatchRow{Batch: batch}
	vocab := m.Config().Vocab
	rng := rand.New(rand.NewPCG(o.Seed, uint64(batch)))
	sess := make([]backend.Session, 0, batch)
	defer func() {
		for _, s := range sess {
			s.Close()
		}
	}()
	toks, next := make([]int32, batch), make([]int32, batch)
	logits := make([][]float32, batch)
	prompt := make([]int32, o.Prompt)
	for i := 0; i < batch; i++ {
		s, err := m.NewSession(o.Prompt + o.Gen)
		if err != nil {
			return row, fmt.Errorf("bench: batch %d: session %d: %w", batch, i, err)
		}
		sess = append(sess, s)
		for j := range prompt {
			prompt[j] = int32(rng.IntN(vocab))
		}
		logits[i] = make([]float32, vocab)
		if err := s.Prefill(prompt, logits[i]); err != nil {
			return row, fmt.Errorf("bench: batch %d: prefill: %w", batch, err)
		}
		toks[i] = sample.Argmax(logits[i])
	}
	step := func() error {
		if bs != nil {
			if err := bs.DecodeBatchSample(sess, toks, next); err != nil {
				return fmt.Errorf("bench: batch %d: decode: %w", batch, err)
			}
			copy(toks, next)
			return nil
		}
		if err := bd.DecodeBatch(sess, toks, logits); err != nil {
			return fmt.Errorf("bench: batch %d: decode: %w", batch, err)
		}
		for i := range toks {
			toks[i] = sample.Argmax(logits[i])
		}
		return nil
	}
	// Warm-up: a few steps (the backend sizes its batch buffers on the
	// first), then back to the end of the prompts.
	for i := 0; i < min(o.Gen, 4); i++ {
		if err := step(); err != nil {
			return row, err
		}
	}
	for _, s := range sess {
		if err := s.Rewind(o.Prompt); err != nil {
			return row, err
		}
	}
	lat := make([]time.Duration, 0, o.Gen)
	t0 := time.Now()
	prev := t0
	for i := 0; i < o.Gen; i++ {
		if err := ctx.Err(); err != nil {
			return row, err
		}
		if err := step(); err != nil {
			return row, err
		}
		now := time.Now()
		lat = append(lat, now.Sub(prev))
		prev = now
	}
	row.DecodeTokPerS = float64(batch*o.Gen) / prev.Sub(t0).Seconds()
	l := Summarize(lat)
	row.P50MS, row.P99MS = l.P50, l.P99
	return row, nil
}
