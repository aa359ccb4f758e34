package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"unsafe"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/model"
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
		opts := c.opts
		opts.Rows = RowsOn // the step under test
		m, err := load(w, opts)
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
			tol := RowsTolerance(DefaultTolerance(m.Kinds())) // prompt attention in f16
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

// TestRowsKernels checks rows.cu's and sample.cu's many-row kernels alone
// in the kernel harness (kernel_test.go), launched as the rows plan
// launches them, outputs poisoned first: k_rembed against model.EmbedRow,
// k_rpostnorm against the reference's post-norm, k_rargmax against
// sample.Argmax (ties to the lowest id, an all-NaN row to 0), and
// k_rsample: a row without a sampler takes the argmax, a padding row
// writes nothing, and a sampling row's draws follow package sample's
// distribution (as checkSample checks k_sample's).
func TestRowsKernels(t *testing.T) {
	for _, name := range []string{"smollm-135m", "features-q8_0"} {
		t.Run(name, func(t *testing.T) {
			var c kernelCase
			for _, kc := range kernelCases() {
				if kc.name == name {
					c = kc
				}
			}
			h := kernelHarnessFor(t, c)
			done := h.enter(t)
			defer done()
			m, cfg := h.m, h.cfg()
			m.rowsMu.Lock()
			r, err := m.rowsWorkspace()
			m.rowsMu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			const n = 3
			plan := m.rowsPlan(&r.buf, n, false, tailSample)
			plan = append(plan, m.rowsPlan(&r.buf, n, false, tailArgmax)...)
			var pin runtime.Pinner
			defer pin.Unpin()
			find := func(name string) *launch {
				for i := range plan {
					if plan[i].name == name {
						pinLaunch(&pin, &plan[i])
						return &plan[i]
					}
				}
				return nil
			}
			d := m.dev.d
			run := func(l *launch) {
				t.Helper()
				if err := r.launch(d, l); err != nil {
					t.Fatal(err)
				}
				h.do(t, d.cuStreamSynchronize(r.stream), "cuStreamSynchronize("+l.name+")")
			}
			rng := rand.New(rand.NewPCG(31, 32))
			v, dim := cfg.Vocab, cfg.Dim
			putRows := func(rows []rowDesc, slots []slotDesc) {
				h.putBytes(t, r.buf.rows, unsafe.Slice((*byte)(unsafe.Pointer(&rows[0])), len(rows)*int(unsafe.Sizeof(rows[0]))))
				h.putBytes(t, r.buf.slots, unsafe.Slice((*byte)(unsafe.Pointer(&slots[0])), len(slots)*int(unsafe.Sizeof(slots[0]))))
			}

			// k_rembed
			toks := []int32{0, int32(v - 1), int32(rng.IntN(v))}
			putRows([]rowDesc{{Tok: toks[0]}, {Tok: toks[1], Pos: 5}, {Tok: toks[2], Slot: -1}}, []slotDesc{{}})
			h.poison(t, r.buf.x, 4*dim*n)
			h.do(t, d.cuStreamSynchronize(h.s.stream), "poison")
			run(find("k_rembed"))
			got := h.get(t, r.buf.x, dim*n)
			for i, tok := range toks {
				want := make([]float32, dim)
				model.EmbedRow(want, &h.w.Embed, int(tok))
				model.Scale(want, cfg.EmbedMul())
				h.expect(t, fmt.Sprintf("row %d: embedding of token %d", i, tok), got[i*dim:(i+1)*dim], want, 1e-6)
			}

			// k_rpostnorm
			if l := find("k_rpostnorm"); l != nil {
				y, x := randVec(rng, dim*n, 1), randVec(rng, dim*n, 1)
				h.put(t, r.buf.post, y)
				h.put(t, r.buf.x, x)
				run(l)
				got := h.get(t, r.buf.x, dim*n)
				w := h.w.Layers[0].AttnPostNorm
				for i := range n {
					want := append([]float32(nil), y[i*dim:(i+1)*dim]...)
					model.RMSNorm(want, want, w, cfg.NormEps)
					model.Add(want, x[i*dim:(i+1)*dim])
					h.expect(t, fmt.Sprintf("row %d: post-norm", i), got[i*dim:(i+1)*dim], want, tolFloat)
				}
			} else if cfg.PostNorms {
				t.Fatal("no k_rpostnorm in a plan with post-norms")
			}

			// k_rargmax: a tie in row 0, NaN in row 1
			logits := randVec(rng, v*n, 3)
			a, b := rng.IntN(v/2), v/2+rng.IntN(v/2)
			logits[a], logits[b] = 100, 100
			for i := v; i < 2*v; i++ {
				logits[i] = float32(math.NaN())
			}
			h.put(t, r.buf.logits, logits)
			h.poison(t, r.buf.next, 4*n)
			h.do(t, d.cuStreamSynchronize(h.s.stream), "poison")
			run(find("k_rargmax"))
			next := h.get(t, r.buf.next, n)
			for i := range n {
				if id := int32(math.Float32bits(next[i])); id != sample.Argmax(logits[i*v:(i+1)*v]) || (i == 0 && id != int32(a)) {
					t.Fatalf("row %d: k_rargmax %d, want %d", i, id, sample.Argmax(logits[i*v:(i+1)*v]))
				}
			}

			// k_rsample: row 0 no sampler (argmax), row 1 samples, row 2 padding
			ls := find("k_rsample")
			hist := []int32{int32(rng.IntN(v)), int32(rng.IntN(v))}
			token := int32(rng.IntN(v))
			host, err := sample.New(v, sampleParams)
			if err != nil {
				t.Fatal(err)
			}
			for _, tk := range append(slices.Clone(hist), token) {
				host.Accept(tk)
			}
			row := randVec(rng, v, 3)
			ids, probs, err := host.Distribution(slices.Clone(row))
			if err != nil {
				t.Fatal(err)
			}
			putRows([]rowDesc{{Slot: 0}, {Slot: 1}, {Slot: -1}}, []slotDesc{{}, {Sample: h.s.buf.sampleP}})
			draws := make([]int32, 0, sampleDraws)
			for i := range sampleDraws {
				p := sampleParams
				p.Seed = uint64(i)
				if ok, err := h.s.SetSampling(p, hist); !ok || err != nil {
					t.Fatalf("SetSampling: %v %v", ok, err)
				}
				if err := h.s.uploadSampling(token, r.stream); err != nil {
					t.Fatal(err)
				}
				h.put(t, r.buf.logits, append(append(slices.Clone(logits[:v]), row...), logits[2*v:]...))
				h.poison(t, r.buf.next, 4*n)
				h.do(t, d.cuStreamSynchronize(h.s.stream), "poison")
				run(ls)
				next := h.get(t, r.buf.next, n)
				if id := int32(math.Float32bits(next[0])); id != int32(a) {
					t.Fatalf("draw %d: row 0 without a sampler took %d, its argmax is %d", i, id, a)
				}
				if pad := int32(math.Float32bits(next[2])); pad != -1 {
					t.Fatalf("draw %d: the padding row wrote %d", i, pad)
				}
				draws = append(draws, int32(math.Float32bits(next[1])))
			}
			tv, outside := drawStats(draws, ids, probs)
			if outside > 0 || tv > sampleMaxTV {
				t.Errorf("%d draws over %d candidates: total variation %.3f (max %.2f), %d outside", len(draws), len(ids), tv, sampleMaxTV, outside)
			}
		})
	}
}
