package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/backend/cpu/kernels"
)

// eachKernelPath runs f with the pure-Go kernels, the AVX2 ones and the
// AVX-512 VNNI ones (skipped where the CPU or build lacks them; the model
// must be loaded inside f: the layouts are chosen at load).
func eachKernelPath(t *testing.T, f func(t *testing.T)) {
	prev2, prev5 := kernels.SetAVX2(true), kernels.SetAVX512(true)
	hasAsm, has512 := kernels.AVX2(), kernels.AVX512()
	kernels.SetAVX512(prev5)
	kernels.SetAVX2(prev2)
	for _, isa := range []string{"go", "asm", "avx512"} {
		if isa == "asm" && !hasAsm {
			continue // no assembly on this machine or build
		}
		t.Run(isa, func(t *testing.T) {
			if isa == "avx512" && !has512 {
				t.Skip("no AVX-512 VNNI")
			}
			prev2, prev5 := kernels.SetAVX2(isa != "go"), kernels.SetAVX512(isa == "avx512")
			defer func() {
				kernels.SetAVX512(prev5)
				kernels.SetAVX2(prev2)
			}()
			f(t)
		})
	}
}

// TestDecodeBatchExact: sessions at different positions (prefilled with
// prompts of random lengths, some past the attention-chunking thresholds)
// step through random tokens in random batches of 1 to 5; every session's
// logits equal, bit for bit, those of a twin session that decodes the same
// tokens alone. Every test model, on the plain path and on the kernels.
func TestDecodeBatchExact(t *testing.T) {
	steps := 24
	if testing.Short() {
		steps = 8
	}
	eachKernelPath(t, func(t *testing.T) {
		for i, tm := range testModels {
			for _, kern := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/kernels=%v", tm.name, kern), func(t *testing.T) {
					checkBatchExact(t, tm, uint64(i), kern, steps)
				})
			}
		}
	})
}

func checkBatchExact(t *testing.T, tm testModel, seed uint64, kern bool, steps int) {
	const nsess, ctx = 5, 128
	w := tm.build(t, seed)
	m := loadOpts(t, w, Options{Threads: 3, NoKernels: !kern})
	r := rand.New(rand.NewPCG(seed, 42))
	batched := make([]*Session, nsess)
	alone := make([]*Session, nsess)
	for i := range nsess {
		batched[i], alone[i] = newSess(t, m, ctx), newSess(t, m, ctx)
		// 0..90 prompt tokens: positions on both sides of 32 and 64,
		// where a lone decode starts splitting attention in ranges.
		if n := r.IntN(91); n > 0 {
			p := promptFor(r, n, tm.vocab)
			for _, s := range []*Session{batched[i], alone[i]} {
				if err := s.Prefill(p, nil); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	want := make([]float32, tm.vocab)
	var sess []backend.Session
	var toks []int32
	var logits [][]float32
	for step := range steps {
		sess, toks, logits = sess[:0], toks[:0], logits[:0]
		for _, i := range r.Perm(nsess)[:1+r.IntN(nsess)] {
			if batched[i].Pos() == ctx {
				continue
			}
			sess = append(sess, batched[i])
			toks = append(toks, int32(r.IntN(tm.vocab)))
			l := make([]float32, tm.vocab)
			for j := range l {
				l[j] = float32(math.NaN()) // nothing may be left unwritten
			}
			logits = append(logits, l)
		}
		if err := m.DecodeBatch(sess, toks, logits); err != nil {
			t.Fatal(err)
		}
		for k, bs := range sess {
			s := bs.(*Session)
			i := indexOf(batched, s)
			if err := alone[i].Decode(toks[k], want); err != nil {
				t.Fatal(err)
			}
			if s.Pos() != alone[i].Pos() {
				t.Fatalf("step %d: session %d at %d, its twin at %d", step, i, s.Pos(), alone[i].Pos())
			}
			for j := range want {
				if math.Float32bits(logits[k][j]) != math.Float32bits(want[j]) {
					t.Fatalf("step %d, batch of %d: session %d (pos %d) logit %d = %v, alone %v",
						step, len(sess), i, s.Pos()-1, j, logits[k][j], want[j])
				}
			}
		}
	}
}

func indexOf(ss []*Session, s *Session) int {
	for i, x := range ss {
		if x == s {
			return i
		}
	}
	return -1
}

// A batch larger than maxBatch runs in pieces and still matches.
func TestDecodeBatchLarge(t *testing.T) {
	tm := testModels[4]
	w := tm.build(t, 11)
	m := loadOpts(t, w, Options{Threads: 2})
	n := maxBatch + 3
	if testing.Short() {
		n = maxBatch + 1
	}
	sess := make([]backend.Session, n)
	toks := make([]int32, n)
	logits := make([][]float32, n)
	for i := range n {
		sess[i] = newSess(t, m, 4)
		toks[i] = int32(i % tm.vocab)
		logits[i] = make([]float32, tm.vocab)
	}
	if err := m.DecodeBatch(sess, toks, logits); err != nil {
		t.Fatal(err)
	}
	want := make([]float32, tm.vocab)
	for _, i := range []int{0, maxBatch - 1, maxBatch, n - 1} {
		s := newSess(t, m, 4)
		if err := s.Decode(toks[i], want); err != nil {
			t.Fatal(err)
		}
		for j := range want {
			if math.Float32bits(logits[i][j]) != math.Float32bits(want[j]) {
				t.Fatalf("session %d of %d: logit %d = %v, alone %v", i, n, j, logits[i][j], want[j])
			}
		}
	}
}

func TestDecodeBatchNoAllocs(t *testing.T) {
	for _, kern := range []bool{false, true} {
		tm := testModels[4]
		w := tm.build(t, 12)
		m := loadOpts(t, w, Options{Threads: 2, NoKernels: !kern})
		const n = 4
		sess := make([]backend.Session, n)
		toks := make([]int32, n)
		logits := make([][]float32, n)
		for i := range n {
			sess[i] = newSess(t, m, 200)
			toks[i] = int32(i)
			logits[i] = make([]float32, tm.vocab)
		}
		if err := m.DecodeBatch(sess, toks, logits); err != nil {
			t.Fatal(err)
		}
		allocs := testing.AllocsPerRun(50, func() {
			if err := m.DecodeBatch(sess, toks, logits); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("kernels=%v: %v allocations per batched step", kern, allocs)
		}
	}
}

// Bad batches are errors that leave every session where it was.
func TestDecodeBatchErrors(t *testing.T) {
	tm := testModels[0]
	w := tm.build(t, 13)
	m := loadT(t, w, 2)
	other := loadT(t, w, 1)
	a, b := newSess(t, m, 8), newSess(t, m, 1)
	full := newSess(t, m, 1)
	if err := full.Decode(1, make([]float32, tm.vocab)); err != nil {
		t.Fatal(err)
	}
	closed := newSess(t, m, 8)
	closed.Close()
	foreign := newSess(t, other, 8)
	l := func() []float32 { return make([]float32, tm.vocab) }
	cases := []struct {
		name   string
		sess   []backend.Session
		toks   []int32
		logits [][]float32
		want   string
	}{
		{"lengths", []backend.Session{a, b}, []int32{1}, [][]float32{l(), l()}, "2 sessions, 1 tokens"},
		{"duplicate", []backend.Session{a, b, a}, []int32{1, 2, 3}, [][]float32{l(), l(), l()}, "also session 0"},
		{"token", []backend.Session{a, b}, []int32{1, int32(tm.vocab)}, [][]float32{l(), l()}, "vocabulary"},
		{"negative token", []backend.Session{a}, []int32{-1}, [][]float32{l()}, "vocabulary"},
		{"logits", []backend.Session{a, b}, []int32{1, 2}, [][]float32{l(), l()[:3]}, "logits buffer of 3"},
		{"full", []backend.Session{a, full}, []int32{1, 2}, [][]float32{l(), l()}, "past the 1-position context"},
		{"closed", []backend.Session{closed}, []int32{1}, [][]float32{l()}, "closed"},
		{"foreign", []backend.Session{a, foreign}, []int32{1, 2}, [][]float32{l(), l()}, "another model"},
		{"nil", []backend.Session{nil}, []int32{1}, [][]float32{l()}, "not a cpu session"},
	}
	for _, tc := range cases {
		err := m.DecodeBatch(tc.sess, tc.toks, tc.logits)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
		if a.Pos() != 0 || b.Pos() != 0 {
			t.Fatalf("%s: sessions moved to %d, %d", tc.name, a.Pos(), b.Pos())
		}
	}
	if err := m.DecodeBatch(nil, nil, nil); err != nil {
		t.Errorf("empty batch: %v", err)
	}
	m.Close()
	if err := m.DecodeBatch([]backend.Session{a}, []int32{1}, [][]float32{l()}); err == nil {
		t.Error("decode batch on a closed model accepted")
	}
}

// BenchmarkDecodeBatch times one batched decode step of the smollm-135m
// bench preset (written by `edgellm bench` to the user cache; skipped when
// absent) for 1 to 8 sessions at position 128, reporting tokens per second
// over the whole batch: the weights are read once per step, so they grow
// with the batch until the products stop being bound by memory.
func BenchmarkDecodeBatch(b *testing.B) {
	w := loadPresetB(b, "smollm-135m-q2_0-q8_0")
	for _, threads := range []int{1, 2} {
		m, err := Load(w, Options{Threads: threads})
		if err != nil {
			b.Fatal(err)
		}
		prompt := make([]int32, 128)
		for i := range prompt {
			prompt[i] = int32(i * 7 % w.Vocab)
		}
		for _, n := range []int{1, 2, 4, 8} {
			b.Run(fmt.Sprintf("t%d/batch%d", threads, n), func(b *testing.B) {
				sess := make([]backend.Session, n)
				toks := make([]int32, n)
				logits := make([][]float32, n)
				for i := range n {
					s, err := m.NewSession(256)
					if err != nil {
						b.Fatal(err)
					}
					defer s.Close()
					if err := s.Prefill(prompt, nil); err != nil {
						b.Fatal(err)
					}
					sess[i], toks[i], logits[i] = s, int32(i+1), make([]float32, w.Vocab)
				}
				b.ResetTimer()
				for range b.N {
					if sess[0].Pos() == 256 {
						for _, s := range sess {
							s.Rewind(128)
						}
					}
					if err := m.(*Model).DecodeBatch(sess, toks, logits); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "tok/s")
			})
		}
		m.Close()
	}
}
