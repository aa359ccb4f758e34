package sample

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// logitsOf returns logits whose softmax is probs.
func logitsOf(probs ...float64) []float32 {
	l := make([]float32, len(probs))
	for i, p := range probs {
		l[i] = float32(math.Log(p))
	}
	return l
}

func mustNew(t *testing.T, vocab int, p Params) *Sampler {
	t.Helper()
	s, err := New(vocab, p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// histogram draws n tokens and returns their frequencies.
func histogram(t *testing.T, s *Sampler, l []float32, n int) []float64 {
	t.Helper()
	h := make([]float64, len(l))
	for range n {
		id, err := s.Sample(l)
		if err != nil {
			t.Fatal(err)
		}
		h[id]++
	}
	for i := range h {
		h[i] /= float64(n)
	}
	return h
}

func checkDist(t *testing.T, got, want []float64, tol float64) {
	t.Helper()
	for i := range want {
		if math.Abs(got[i]-want[i]) > tol {
			t.Errorf("token %d: frequency %.4f, want %.4f (±%.3f); all %v", i, got[i], want[i], tol, got)
		}
	}
}

func TestGreedy(t *testing.T) {
	s := mustNew(t, 5, Greedy())
	l := []float32{0.1, 3, -2, 3, 2.9}
	for range 3 {
		id, err := s.Sample(l)
		if err != nil || id != 1 {
			t.Fatalf("greedy = %d, %v; want 1 (first of tied maxima)", id, err)
		}
	}
	if _, err := s.Sample(l[:4]); err == nil {
		t.Fatal("wrong logits length accepted")
	}
}

func TestRepeatPenalty(t *testing.T) {
	s := mustNew(t, 4, Params{RepeatPenalty: 2, RepeatLastN: 2})
	l := []float32{4, 3, -1, 1}
	s.Accept(0)
	s.Accept(0) // a repeated token is penalised once, not twice
	copy(s.logits, l)
	s.applyPenalty(s.logits)
	if want := []float32{2, 3, -1, 1}; !slices.Equal(s.logits, want) {
		t.Fatalf("penalised %v, want %v", s.logits, want)
	}
	if id, _ := s.Sample(l); id != 1 {
		t.Fatalf("greedy after penalty = %d, want 1", id)
	}
	// The window is 2: accepting 2 and 3 pushes 0 out; negatives are multiplied.
	s.Accept(2)
	s.Accept(3)
	copy(s.logits, l)
	s.applyPenalty(s.logits)
	if want := []float32{4, 3, -2, 0.5}; !slices.Equal(s.logits, want) {
		t.Fatalf("penalised %v, want %v", s.logits, want)
	}
	if !slices.Equal(l, []float32{4, 3, -1, 1}) {
		t.Fatal("Sample modified its input")
	}
	s.Reset(0)
	copy(s.logits, l)
	s.applyPenalty(s.logits)
	if !slices.Equal(s.logits, l) {
		t.Fatal("Reset kept the history")
	}
}

func TestTemperatureDistribution(t *testing.T) {
	l := logitsOf(0.5, 0.3, 0.15, 0.05)
	for _, temp := range []float32{1, 0.5, 2} {
		s := mustNew(t, len(l), Params{Temperature: temp, Seed: 7})
		want := make([]float64, len(l))
		var sum float64
		for i, v := range l {
			want[i] = math.Exp(float64(v / temp))
			sum += want[i]
		}
		for i := range want {
			want[i] /= sum
		}
		checkDist(t, histogram(t, s, l, 40000), want, 0.01)
	}
}

func TestTopK(t *testing.T) {
	l := logitsOf(0.1, 0.4, 0.2, 0.3)
	s := mustNew(t, 4, Params{Temperature: 1, TopK: 2, Seed: 1})
	checkDist(t, histogram(t, s, l, 40000), []float64{0, 4.0 / 7, 0, 3.0 / 7}, 0.01)
	s = mustNew(t, 4, Params{Temperature: 1, TopK: 1, Seed: 1})
	checkDist(t, histogram(t, s, l, 1000), []float64{0, 1, 0, 0}, 0)
}

func TestTopP(t *testing.T) {
	l := logitsOf(0.15, 0.5, 0.05, 0.3)
	// 0.5 + 0.3 >= 0.8: tokens 1 and 3 remain.
	s := mustNew(t, 4, Params{Temperature: 1, TopP: 0.79, Seed: 2})
	checkDist(t, histogram(t, s, l, 40000), []float64{0, 5.0 / 8, 0, 3.0 / 8}, 0.01)
	// 0.8 needs a third token (0.5+0.3 may round below 0.8 in float32, so ask 0.81).
	s = mustNew(t, 4, Params{Temperature: 1, TopP: 0.81, Seed: 2})
	checkDist(t, histogram(t, s, l, 40000), []float64{0.15 / 0.95, 0.5 / 0.95, 0, 0.3 / 0.95}, 0.01)
}

func TestMinP(t *testing.T) {
	l := logitsOf(0.15, 0.5, 0.05, 0.3)
	// Cut at 0.5*0.5 = 0.25: tokens 1 and 3 remain.
	s := mustNew(t, 4, Params{Temperature: 1, MinP: 0.5, Seed: 3})
	checkDist(t, histogram(t, s, l, 40000), []float64{0, 5.0 / 8, 0, 3.0 / 8}, 0.01)
	// Min-p is measured before temperature: a hot temperature flattens the
	// survivors but cannot bring back the dropped ones.
	s = mustNew(t, 4, Params{Temperature: 100, MinP: 0.5, Seed: 3})
	h := histogram(t, s, l, 20000)
	if h[0] != 0 || h[2] != 0 || math.Abs(h[1]-0.5) > 0.02 {
		t.Fatalf("hot min-p distribution %v", h)
	}
}

func TestSeedReproducible(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	l := make([]float32, 300)
	for i := range l {
		l[i] = float32(r.NormFloat64() * 2)
	}
	p := Params{Temperature: 0.9, TopK: 40, TopP: 0.95, MinP: 0.01, RepeatPenalty: 1.1, RepeatLastN: 16, Seed: 42}
	draw := func(p Params) []int32 {
		s := mustNew(t, len(l), p)
		var out []int32
		for range 200 {
			id, err := s.Sample(l)
			if err != nil {
				t.Fatal(err)
			}
			s.Accept(id)
			out = append(out, id)
		}
		return out
	}
	a, b := draw(p), draw(p)
	if !slices.Equal(a, b) {
		t.Fatal("same seed gave different tokens")
	}
	p.Seed = 43
	if slices.Equal(a, draw(p)) {
		t.Fatal("different seeds gave the same 200 tokens")
	}
	// Reset reseeds: the sampler replays the same stream.
	s := mustNew(t, len(l), p)
	first, _ := s.Sample(l)
	s.Reset(p.Seed)
	if again, _ := s.Sample(l); again != first {
		t.Fatal("Reset did not replay the stream")
	}
}

func TestSelectTopK(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1, 2, 3, 7, 31, 100, 513} {
		for _, ties := range []bool{false, true} {
			l := make([]float32, n)
			for i := range l {
				if ties {
					l[i] = float32(r.IntN(4))
				} else {
					l[i] = float32(r.NormFloat64())
				}
			}
			all := make([]int32, n)
			for i := range all {
				all[i] = int32(i)
			}
			s := &Sampler{logits: l}
			s.sortDesc(all)
			for _, k := range []int{1, 2, n / 2, n - 1, n} {
				if k < 1 || k > n {
					continue
				}
				idx := make([]int32, n)
				for i := range idx {
					idx[i] = int32(i)
				}
				r.Shuffle(n, func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
				selectTopK(idx, l, k)
				got := slices.Clone(idx[:k])
				s.sortDesc(got)
				if !slices.Equal(got, all[:k]) {
					t.Fatalf("n=%d k=%d ties=%v: top-k %v, want %v", n, k, ties, got, all[:k])
				}
			}
		}
	}
}

func TestNoAllocs(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	l := make([]float32, 5000)
	for i := range l {
		l[i] = float32(r.NormFloat64())
	}
	for _, p := range []Params{
		Greedy(),
		{Temperature: 0.8, TopK: 40, TopP: 0.9, MinP: 0.05, RepeatPenalty: 1.1, RepeatLastN: 64, Seed: 1},
		{Temperature: 0.8, TopP: 0.9, Seed: 1},
		{Temperature: 1, Seed: 1},
	} {
		s := mustNew(t, len(l), p)
		allocs := testing.AllocsPerRun(50, func() {
			id, err := s.Sample(l)
			if err != nil {
				t.Fatal(err)
			}
			s.Accept(id)
		})
		if allocs != 0 {
			t.Errorf("%+v: %v allocations per token", p, allocs)
		}
	}
}

func TestBadParams(t *testing.T) {
	nan := float32(math.NaN())
	for _, tc := range []struct {
		vocab int
		p     Params
	}{
		{0, Params{}},
		{10, Params{RepeatLastN: -1}},
		{10, Params{RepeatLastN: maxRepeatLastN + 1}},
		{10, Params{Temperature: nan}},
		{10, Params{RepeatPenalty: -1}},
	} {
		if _, err := New(tc.vocab, tc.p); err == nil {
			t.Errorf("New(%d, %+v) accepted", tc.vocab, tc.p)
		}
	}
}

// TestDistributionMatchesSample draws many tokens and compares their
// frequencies with Distribution's probabilities.
func TestDistributionMatchesSample(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	logits := make([]float32, 500)
	for i := range logits {
		logits[i] = float32(rng.NormFloat64() * 3)
	}
	for _, p := range []Params{
		{Temperature: 0.8, TopK: 40, TopP: 0.9, MinP: 0.02, Seed: 1},
		{Temperature: 1.3, TopK: 10, Seed: 2},
		{Temperature: 0.5, TopP: 0.5, Seed: 3},
		{Temperature: 0},
	} {
		s, err := New(len(logits), p)
		if err != nil {
			t.Fatal(err)
		}
		ids, probs, err := s.Distribution(logits)
		if err != nil {
			t.Fatal(err)
		}
		want := map[int32]float64{}
		var sum float64
		for i, id := range ids {
			want[id] = float64(probs[i])
			sum += float64(probs[i])
		}
		if math.Abs(sum-1) > 1e-4 {
			t.Fatalf("%+v: probabilities sum to %g", p, sum)
		}
		const n = 40000
		got := map[int32]float64{}
		for range n {
			id, err := s.Sample(logits)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := want[id]; !ok {
				t.Fatalf("%+v: drew %d, outside the distribution", p, id)
			}
			got[id] += 1.0 / n
		}
		var tv float64
		for id, w := range want {
			tv += math.Abs(got[id]-w) / 2
		}
		if tv > 0.03 {
			t.Errorf("%+v: total variation %.4f between draws and Distribution", p, tv)
		}
	}
}
