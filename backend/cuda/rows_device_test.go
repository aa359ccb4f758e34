package cuda

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/sample"
	"github.com/edgellm/edgellm/synth"
)

// The many-row step on a GPU (these skip without one): prefill through it
// against the lone decode step, batched decode against batches of one (bit
// for bit) and lone decode, device picks, and no allocation per step.
// SelfTest checks the same against the reference on whole models.

// rowsModel loads kernelCases' case name (one layer), or skips without a
// GPU.
func rowsModel(t *testing.T, name string) *Model {
	t.Helper()
	if err := Available(); err != nil {
		t.Skipf("no GPU: %v", err)
	}
	for _, c := range kernelCases() {
		if c.name != name {
			continue
		}
		w, err := synth.Weights(c.preset, synth.Options{Seed: 21})
		if err != nil {
			t.Fatal(err)
		}
		if c.feat != nil {
			c.feat(w, rand.New(rand.NewPCG(22, 23)))
		}
		m, err := load(w, c.opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	t.Fatalf("no kernel case %s", name)
	return nil
}

// rowsCases are the models the device tests run: ternary, every newer
// feature (post-norms, window, biases, q/k norms), float layers.
var rowsCases = []string{"smollm-135m", "features-q8_0", "odd-f16", "odd-ternary-kvhalf"}

func newTestSession(t *testing.T, m *Model, ctx int) *Session {
	t.Helper()
	s, err := m.newSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func countingTokens(n, vocab, from int) []int32 {
	toks := make([]int32, n)
	for i := range toks {
		toks[i] = int32((37*(i+from) + 5) % vocab)
	}
	return toks
}

// TestRowsPrefillDevice: a prompt of 600 tokens (two chunks) through the
// rows step: every position's logits (PrefillLogits, the head in groups)
// against the lone decode step's, Prefill's last logits equal to
// PrefillLogits' last row, and a prefill continuing a session at 600.
func TestRowsPrefillDevice(t *testing.T) {
	for _, name := range rowsCases {
		t.Run(name, func(t *testing.T) {
			m := rowsModel(t, name)
			v := m.cfg.Vocab
			tol := DefaultTolerance(m.Kinds())
			const n = 600
			toks := countingTokens(n+10, v, 0)
			all := make([]float32, n*v)
			a := newTestSession(t, m, n+10)
			if err := a.PrefillLogits(toks[:n], all); err != nil {
				t.Fatal(err)
			}
			d := newTestSession(t, m, n+10)
			got := make([]float32, v)
			worst := 0.0
			for pos := range n {
				if err := d.Decode(toks[pos], got); err != nil {
					t.Fatal(err)
				}
				e := relErr(all[pos*v:(pos+1)*v], got)
				if math.IsNaN(e) || e > tol {
					t.Fatalf("position %d: prefill logits %.3g from decode's (tol %.3g)", pos, e, tol)
				}
				worst = max(worst, e)
			}
			t.Logf("%s: prefill of %d vs decode: worst rel diff %.3g", name, n, worst)
			b := newTestSession(t, m, n+10)
			last := make([]float32, v)
			if err := b.Prefill(toks[:n], last); err != nil {
				t.Fatal(err)
			}
			if e := relErr(last, all[(n-1)*v:]); e > 1e-6 {
				t.Fatalf("Prefill's last logits %.3g from PrefillLogits' last row", e)
			}
			// 10 more tokens continue the sequence: the cache before the
			// chunk is attended to.
			if err := b.Prefill(toks[n:], last); err != nil {
				t.Fatal(err)
			}
			for _, tk := range toks[n:] {
				if err := d.Decode(tk, got); err != nil {
					t.Fatal(err)
				}
			}
			if e := relErr(last, got); math.IsNaN(e) || e > tol || b.Pos() != n+10 {
				t.Fatalf("continued prefill: %.3g from decode at %d (tol %.3g)", e, b.Pos(), tol)
			}
		})
	}
}

// TestDecodeBatchDevice: sessions at mixed positions and contexts decode
// random subsets in random order, 70 at once (two groups) at the end;
// each session's logits equal bit for bit those of its twin decoded in a
// batch of one, stay near its lone twin's (the decode step's kernels),
// and DecodeBatchSample's picks equal the batched logits' argmax.
func TestDecodeBatchDevice(t *testing.T) {
	for _, name := range rowsCases {
		t.Run(name, func(t *testing.T) {
			m := rowsModel(t, name)
			v := m.cfg.Vocab
			tol := DefaultTolerance(m.Kinds())
			rng := rand.New(rand.NewPCG(5, 6))
			const nsess = 70
			var batch, twin, greedy, lone []*Session
			for i := range nsess {
				p, ctx := rng.IntN(300), 320+rng.IntN(3)*100
				prompt := countingTokens(p, v, i)
				for _, set := range []*[]*Session{&batch, &twin, &greedy, &lone} {
					s := newTestSession(t, m, ctx)
					if err := s.Prefill(prompt, nil); err != nil {
						t.Fatal(err)
					}
					*set = append(*set, s)
				}
			}
			want := make([]float32, v)
			worst := 0.0
			for step := range 12 {
				k := 1 + rng.IntN(16)
				if step == 11 {
					k = nsess
				}
				idx := rng.Perm(nsess)[:k]
				ss, gs := make([]backend.Session, k), make([]backend.Session, k)
				toks, next := make([]int32, k), make([]int32, k)
				logits := make([][]float32, k)
				for j, i := range idx {
					ss[j], gs[j], toks[j], logits[j] = batch[i], greedy[i], int32(rng.IntN(v)), make([]float32, v)
					for x := range logits[j] {
						logits[j][x] = float32(math.NaN()) // nothing may be left unwritten
					}
				}
				if err := m.DecodeBatch(ss, toks, logits); err != nil {
					t.Fatal(err)
				}
				if err := m.DecodeBatchSample(gs, toks, next); err != nil {
					t.Fatal(err)
				}
				for j, i := range idx {
					if err := m.DecodeBatch([]backend.Session{twin[i]}, toks[j:j+1], [][]float32{want}); err != nil {
						t.Fatal(err)
					}
					if !sameBits(logits[j], want) {
						t.Fatalf("step %d, batch of %d: session %d (pos %d) logits differ from its batch of one", step, k, i, batch[i].Pos()-1)
					}
					if pick := sample.Argmax(logits[j]); next[j] != pick {
						t.Fatalf("step %d: session %d picked %d, its logits' argmax %d", step, i, next[j], pick)
					}
					if err := lone[i].Decode(toks[j], want); err != nil {
						t.Fatal(err)
					}
					e := relErr(logits[j], want)
					if math.IsNaN(e) || e > tol {
						t.Fatalf("step %d: session %d logits %.3g from its lone decode (tol %.3g)", step, i, e, tol)
					}
					worst = max(worst, e)
					if batch[i].Pos() != lone[i].Pos() || greedy[i].Pos() != lone[i].Pos() {
						t.Fatalf("session %d at %d and %d, alone at %d", i, batch[i].Pos(), greedy[i].Pos(), lone[i].Pos())
					}
				}
			}
			t.Logf("%s: batched vs lone decode: worst rel diff %.3g", name, worst)
		})
	}
}

// TestDecodeBatchSampleDevice: each row samples with its own session's
// parameters: top-k 1 draws the argmax, sessions alike (same cache, seed
// and tokens) draw alike, a session without a sampler takes the argmax,
// and a greedy SetSampling drops a session's sampler.
func TestDecodeBatchSampleDevice(t *testing.T) {
	m := rowsModel(t, "smollm-135m")
	v := m.cfg.Vocab
	prompt := countingTokens(40, v, 0)
	var ss []*Session
	for range 5 {
		s := newTestSession(t, m, 100)
		if err := s.Prefill(prompt, nil); err != nil {
			t.Fatal(err)
		}
		ss = append(ss, s)
	}
	p := sample.Params{Temperature: 1.5, TopK: 200, TopP: 1, RepeatPenalty: 1.1, RepeatLastN: 8, Seed: 9}
	greedyK := p
	greedyK.TopK = 1
	for i, pp := range []sample.Params{p, p, greedyK} {
		if ok, err := ss[i].SetSampling(pp, prompt); !ok || err != nil {
			t.Fatalf("SetSampling: %v %v", ok, err)
		}
	}
	// ss[3] has no sampler; ss[4] is ss[3]'s twin decoded alone (argmax).
	bs := []backend.Session{ss[2], ss[0], ss[3], ss[1]}
	toks, next := make([]int32, 4), make([]int32, 4)
	tok := prompt[len(prompt)-1] + 1
	for step := range 6 {
		for j := range toks {
			toks[j] = tok
		}
		if err := m.DecodeBatchSample(bs, toks, next); err != nil {
			t.Fatal(err)
		}
		want, err := ss[4].DecodeArgmax(tok)
		if err != nil {
			t.Fatal(err)
		}
		if next[0] != want || next[2] != want {
			t.Fatalf("step %d: top-k 1 drew %d, no sampler %d, the argmax alone %d", step, next[0], next[2], want)
		}
		if next[1] != next[3] {
			t.Fatalf("step %d: twin samplers drew %d and %d", step, next[1], next[3])
		}
		tok = next[1]
	}
	// A greedy SetSampling drops the sampler: the batch takes the argmax.
	if ok, _ := ss[0].SetSampling(sample.Params{}, nil); ok {
		t.Fatal("greedy parameters taken by the device sampler")
	}
	if ss[0].slot(true).Sample != 0 {
		t.Fatal("a session without a sampler hands k_rsample its block")
	}
}

// TestDecodeBatchAllocs: a batched step allocates no more than a lone
// decode step (whose only allocations are the driver calls' own, through
// purego): nothing per session, row or step of ours.
func TestDecodeBatchAllocs(t *testing.T) {
	m := rowsModel(t, "smollm-135m")
	v := m.cfg.Vocab
	var ss []backend.Session
	for range 16 {
		s := newTestSession(t, m, 64)
		ss = append(ss, s)
	}
	toks, next := countingTokens(16, v, 3), make([]int32, 16)
	step := func() {
		for _, s := range ss {
			s.Rewind(0)
		}
		if err := m.DecodeBatchSample(ss, toks, next); err != nil {
			t.Fatal(err)
		}
	}
	step() // captures the bucket's graph
	lone := ss[0].(*Session)
	loneStep := func() {
		lone.Rewind(0)
		if _, err := lone.DecodeArgmax(toks[0]); err != nil {
			t.Fatal(err)
		}
	}
	loneStep()
	batched, alone := testing.AllocsPerRun(20, step), testing.AllocsPerRun(20, loneStep)
	t.Logf("allocations a step: batch of 16 %.1f, lone decode %.1f", batched, alone)
	if batched > alone {
		t.Fatalf("a batch step allocates %.1f times, a lone step %.1f", batched, alone)
	}
}
