// Package sample picks the next token from a vector of logits: greedy,
// temperature, top-k, top-p, min-p and llama.cpp-style repetition penalty,
// with a seeded RNG so the same seed and prompt give the same output.
//
// A Sampler preallocates every buffer it needs for its vocabulary, so
// picking a token allocates nothing. It knows nothing of models, backends or
// tokenizers: it sees only logits and token ids.
package sample

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// Params selects the sampling policy.
//
// The filters run in llama.cpp's default order: repetition penalty, top-k,
// top-p, min-p, temperature, then a draw. Temperature <= 0 means greedy
// (argmax after the repetition penalty).
type Params struct {
	Temperature float32 // <= 0: greedy
	TopK        int     // keep the K most likely tokens; <= 0 keeps all
	TopP        float32 // keep the smallest set whose probability >= TopP; <= 0 or >= 1 keeps all
	MinP        float32 // drop tokens with p < MinP * p(max); <= 0 keeps all
	// RepeatPenalty divides positive logits and multiplies negative ones of
	// every token seen in the last RepeatLastN accepted tokens; 1 or 0 is off.
	RepeatPenalty float32
	RepeatLastN   int // window of the penalty; 0 disables it
	Seed          uint64
}

// Validate reports parameters no sampler can use.
func (p Params) Validate() error {
	if p.RepeatLastN < 0 || p.RepeatLastN > maxRepeatLastN {
		return fmt.Errorf("sample: repeat_last_n %d out of range [0, %d]", p.RepeatLastN, maxRepeatLastN)
	}
	if isNaN(p.Temperature) || isNaN(p.TopP) || isNaN(p.MinP) || isNaN(p.RepeatPenalty) || p.RepeatPenalty < 0 {
		return fmt.Errorf("sample: invalid parameters %+v", p)
	}
	return nil
}

// Penalizes reports whether the repetition penalty changes any logit.
func (p Params) Penalizes() bool {
	return p.RepeatLastN > 0 && p.RepeatPenalty != 0 && p.RepeatPenalty != 1
}

// IsGreedy reports plain argmax decoding: no temperature, no penalty.
func (p Params) IsGreedy() bool { return p.Temperature <= 0 && !p.Penalizes() }

// Greedy returns the parameters of plain argmax decoding.
func Greedy() Params { return Params{} }

// maxRepeatLastN bounds the history window so a hostile request cannot make
// the sampler allocate without limit.
const maxRepeatLastN = 1 << 20

// Sampler picks tokens under one Params. It is not safe for concurrent use.
type Sampler struct {
	p     Params
	vocab int
	rng   *rand.Rand
	pcg   *rand.PCG

	logits []float32 // penalised copy of the input logits
	idx    []int32   // candidate token ids
	probs  []float32 // candidate probabilities, parallel to idx

	hist  []int32 // ring buffer of the last RepeatLastN accepted tokens
	hpos  int     // next write slot in hist
	hlen  int     // filled slots
	stamp []uint32
	gen   uint32 // stamp generation, so dedup needs no clearing
}

// New returns a Sampler for a vocabulary of vocab tokens.
func New(vocab int, p Params) (*Sampler, error) {
	if vocab <= 0 {
		return nil, fmt.Errorf("sample: vocabulary size %d must be positive", vocab)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	s := &Sampler{
		p:      p,
		vocab:  vocab,
		logits: make([]float32, vocab),
		idx:    make([]int32, vocab),
		probs:  make([]float32, vocab),
	}
	s.pcg = rand.NewPCG(p.Seed, p.Seed^0x9e3779b97f4a7c15)
	s.rng = rand.New(s.pcg)
	if p.Penalizes() {
		s.hist = make([]int32, p.RepeatLastN)
		s.stamp = make([]uint32, vocab)
	}
	return s, nil
}

func isNaN(f float32) bool { return f != f }

// Params returns the sampler's parameters.
func (s *Sampler) Params() Params { return s.p }

// Reset clears the penalty history and reseeds the RNG with seed.
func (s *Sampler) Reset(seed uint64) {
	s.hpos, s.hlen = 0, 0
	s.p.Seed = seed
	s.pcg.Seed(seed, seed^0x9e3779b97f4a7c15)
}

// Accept records a token (prompt or generated) for the repetition penalty.
func (s *Sampler) Accept(tok int32) {
	if s.hist == nil {
		return
	}
	s.hist[s.hpos] = tok
	s.hpos++
	if s.hpos == len(s.hist) {
		s.hpos = 0
	}
	if s.hlen < len(s.hist) {
		s.hlen++
	}
}

// Sample picks a token from logits (len vocab; not modified). It does not
// Accept the token: the caller does, once it keeps it.
func (s *Sampler) Sample(logits []float32) (int32, error) {
	idx, probs, err := s.candidates(logits)
	if err != nil || probs == nil {
		return idx[0], err
	}
	u := float32(s.rng.Float64())
	var cum float32
	for i, p := range probs {
		cum += p
		if u < cum {
			return idx[i], nil
		}
	}
	// Rounding left the sum a hair below u: the last candidate takes it.
	return idx[len(idx)-1], nil
}

// Distribution returns the tokens the next Sample could draw from logits
// and their probabilities (fresh slices), for checking another sampler
// (a device's) against this one. Greedy gives the argmax with probability 1.
func (s *Sampler) Distribution(logits []float32) ([]int32, []float32, error) {
	idx, probs, err := s.candidates(logits)
	if err != nil {
		return nil, nil, err
	}
	if probs == nil {
		return []int32{idx[0]}, []float32{1}, nil
	}
	return slices.Clone(idx), slices.Clone(probs), nil
}

// candidates applies the penalty and the filters and returns the ids left
// with their probabilities at the temperature (views of the sampler's
// buffers); for greedy, probs is nil and idx[0] is the argmax.
func (s *Sampler) candidates(logits []float32) (idx []int32, probs []float32, err error) {
	if len(logits) != s.vocab {
		return []int32{0}, nil, fmt.Errorf("sample: %d logits for a vocabulary of %d", len(logits), s.vocab)
	}
	l := s.logits
	copy(l, logits)
	s.applyPenalty(l)

	if s.p.Temperature <= 0 {
		s.idx[0] = Argmax(l)
		return s.idx[:1], nil, nil
	}

	// Candidates start as the whole vocabulary.
	n := s.vocab
	idx = s.idx[:n]
	for i := range idx {
		idx[i] = int32(i)
	}
	sorted := false
	if k := s.p.TopK; k > 0 && k < n {
		selectTopK(idx, l, k)
		n = k
		idx = idx[:n]
		s.sortDesc(idx)
		sorted = true
	}
	topP := s.p.TopP > 0 && s.p.TopP < 1
	if topP && !sorted {
		s.sortDesc(idx)
		sorted = true
	}

	// Softmax over the candidates at temperature 1: top-p and min-p are
	// measured there, as llama.cpp does (temperature comes last).
	probs = s.probs[:n]
	softmax(probs, idx, l, 1)

	if topP {
		var cum float32
		keep := n
		for i, p := range probs {
			cum += p
			if cum >= s.p.TopP {
				keep = i + 1
				break
			}
		}
		n = keep
		idx, probs = idx[:n], probs[:n]
	}
	if s.p.MinP > 0 && n > 1 {
		var pmax float32
		for _, p := range probs {
			pmax = max(pmax, p)
		}
		cut := s.p.MinP * pmax
		m := 0
		for i, p := range probs {
			if p >= cut {
				idx[m] = idx[i]
				m++
			}
		}
		n = m
		idx, probs = idx[:n], probs[:n]
	}

	softmax(probs, idx, l, s.p.Temperature)
	return idx, probs, nil
}

// applyPenalty applies the repetition penalty once per distinct token in
// the history window (llama.cpp's semantics).
func (s *Sampler) applyPenalty(l []float32) {
	if s.hist == nil || s.hlen == 0 {
		return
	}
	s.gen++
	if s.gen == 0 { // wrapped: old stamps could collide
		clear(s.stamp)
		s.gen = 1
	}
	pen := s.p.RepeatPenalty
	for _, t := range s.hist[:s.hlen] {
		if t < 0 || int(t) >= s.vocab || s.stamp[t] == s.gen {
			continue
		}
		s.stamp[t] = s.gen
		if l[t] > 0 {
			l[t] /= pen
		} else {
			l[t] *= pen
		}
	}
}

// Argmax returns the index of the largest value; the lowest index wins
// ties. It is greedy sampling, shared by everything that picks greedily.
func Argmax(l []float32) int32 {
	best := 0
	bv := float32(math.Inf(-1))
	for i, v := range l {
		if v > bv {
			bv, best = v, i
		}
	}
	return int32(best)
}

// softmax writes exp((l[idx[i]]-max)/temp) normalised into probs.
func softmax(probs []float32, idx []int32, l []float32, temp float32) {
	mx := float32(math.Inf(-1))
	for _, t := range idx {
		mx = max(mx, l[t])
	}
	var sum float64
	inv := 1 / temp
	for i, t := range idx {
		e := float32(math.Exp(float64((l[t] - mx) * inv)))
		probs[i] = e
		sum += float64(e)
	}
	r := float32(1 / sum)
	for i := range probs {
		probs[i] *= r
	}
}

// sortDesc sorts candidate ids by descending logit, ties by ascending id so
// the order (and so the draw) is deterministic.
func (s *Sampler) sortDesc(idx []int32) {
	l := s.logits
	slices.SortFunc(idx, func(a, b int32) int {
		switch {
		case l[a] > l[b]:
			return -1
		case l[a] < l[b]:
			return 1
		}
		return int(a) - int(b)
	})
}

// selectTopK moves the k largest (by l) ids to idx[:k], in no order, with
// an in-place quickselect (expected linear time, no allocation).
func selectTopK(idx []int32, l []float32, k int) {
	less := func(a, b int32) bool { // a ranks before b
		if l[a] != l[b] {
			return l[a] > l[b]
		}
		return a < b
	}
	lo, hi := 0, len(idx)-1
	for lo < hi {
		// Median of three as the pivot keeps sorted input linear.
		mid := lo + (hi-lo)/2
		if less(idx[mid], idx[lo]) {
			idx[mid], idx[lo] = idx[lo], idx[mid]
		}
		if less(idx[hi], idx[lo]) {
			idx[hi], idx[lo] = idx[lo], idx[hi]
		}
		if less(idx[hi], idx[mid]) {
			idx[hi], idx[mid] = idx[mid], idx[hi]
		}
		pivot := idx[mid]
		i, j := lo, hi
		for i <= j {
			for less(idx[i], pivot) {
				i++
			}
			for less(pivot, idx[j]) {
				j--
			}
			if i <= j {
				idx[i], idx[j] = idx[j], idx[i]
				i++
				j--
			}
		}
		switch {
		case k-1 <= j:
			hi = j
		case k-1 >= i:
			lo = i
		default:
			return
		}
	}
}
