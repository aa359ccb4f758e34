package model

import (
	"fmt"
	"math"
)

// Limits on hyper-parameters, so a hostile header cannot make a loader or a
// backend allocate without bound before any tensor has been checked.
const (
	maxDim    = 1 << 16
	maxLayers = 1 << 10
	maxHeads  = 1 << 10
	maxVocab  = 1 << 22
)

// Validate checks that the sizes are positive, consistent and within sane
// limits. Loaders call it; backends may rely on a loaded Config passing it.
func (c *Config) Validate() error {
	switch {
	case c.Dim <= 0 || c.Dim > maxDim:
		return fmt.Errorf("model: embedding length %d out of range", c.Dim)
	case c.FFNDim <= 0 || c.FFNDim > 16*maxDim:
		return fmt.Errorf("model: feed-forward length %d out of range", c.FFNDim)
	case c.Layers <= 0 || c.Layers > maxLayers:
		return fmt.Errorf("model: block count %d out of range", c.Layers)
	case c.Heads <= 0 || c.Heads > maxHeads:
		return fmt.Errorf("model: head count %d out of range", c.Heads)
	case c.KVHeads <= 0 || c.KVHeads > c.Heads || c.Heads%c.KVHeads != 0:
		return fmt.Errorf("model: KV head count %d does not divide head count %d", c.KVHeads, c.Heads)
	case c.HeadDim <= 0 || c.HeadDim%2 != 0 || c.HeadDim > maxDim || c.HeadDim*c.Heads > 4*maxDim:
		return fmt.Errorf("model: head size %d must be positive, even and at most %d in all", c.HeadDim, 4*maxDim)
	case c.Vocab <= 0 || c.Vocab > maxVocab:
		return fmt.Errorf("model: vocabulary size %d out of range", c.Vocab)
	case c.ContextLen < 0:
		return fmt.Errorf("model: context length %d is negative", c.ContextLen)
	case !(c.NormEps > 0) || c.NormEps > 1:
		return fmt.Errorf("model: RMS norm epsilon %g out of range", c.NormEps)
	case !(c.RopeBase > 1) || math.IsInf(float64(c.RopeBase), 0):
		return fmt.Errorf("model: RoPE base %g out of range", c.RopeBase)
	case !(c.RopeScale > 0) || math.IsInf(float64(c.RopeScale), 0):
		return fmt.Errorf("model: RoPE scale %g out of range", c.RopeScale)
	case c.RopeStyle != RopeNorm && c.RopeStyle != RopeNeoX:
		return fmt.Errorf("model: unknown RoPE style %d", c.RopeStyle)
	case c.Act != SiLU && c.Act != ReLU2 && c.Act != GELUTanh:
		return fmt.Errorf("model: unknown activation %d", c.Act)
	case !finiteAtLeast(c.AttnScale, 0) || !finiteAtLeast(c.EmbedScale, 0) || !finiteAtLeast(c.LogitSoftcap, 0):
		return fmt.Errorf("model: attention scale %g, embedding scale %g or logit soft-cap %g out of range", c.AttnScale, c.EmbedScale, c.LogitSoftcap)
	}
	if c.Local != nil {
		switch {
		case len(c.Local) != c.Layers:
			return fmt.Errorf("model: %d sliding-window layer flags for %d layers", len(c.Local), c.Layers)
		case c.Window <= 0:
			return fmt.Errorf("model: sliding window of %d positions", c.Window)
		case !(c.LocalRopeBase > 1) || math.IsInf(float64(c.LocalRopeBase), 0):
			return fmt.Errorf("model: sliding-window RoPE base %g out of range", c.LocalRopeBase)
		}
	}
	if c.RopeFreqFactors != nil {
		if len(c.RopeFreqFactors) != c.HeadDim/2 {
			return fmt.Errorf("model: %d RoPE frequency factors, want %d", len(c.RopeFreqFactors), c.HeadDim/2)
		}
		for i, f := range c.RopeFreqFactors {
			if !(f > 0) || math.IsInf(float64(f), 0) {
				return fmt.Errorf("model: RoPE frequency factor %d is %g", i, f)
			}
		}
	}
	return nil
}

// finiteAtLeast tells whether v is a finite number of at least lo.
func finiteAtLeast(v, lo float32) bool { return v >= lo && !math.IsInf(float64(v), 0) }

// RopeFreqs returns the HeadDim/2 rotation frequencies (radians per
// position) of one head of the layers without a sliding window:
// base^(-2i/HeadDim), divided by the frequency factor i when there are
// factors, and by RopeScale (linear scaling). The angle of pair i at
// position pos is pos*freqs[i]; ropeFreqs is the one place the formula
// lives, so every backend should take its tables from here (RopeSets).
func RopeFreqs(c *Config) []float32 {
	return ropeFreqs(c.HeadDim, c.RopeBase, c.RopeScale, c.RopeFreqFactors)
}

// RopeSets returns the distinct frequency sets of the network's layers:
// RopeFreqs, then, when some layers have a sliding window, theirs (base
// LocalRopeBase, unscaled, as llama.cpp's Gemma 3). Layer l uses set
// c.RopeSet(l).
func RopeSets(c *Config) [][]float32 {
	sets := [][]float32{RopeFreqs(c)}
	if c.Local != nil {
		sets = append(sets, ropeFreqs(c.HeadDim, c.LocalRopeBase, 1, c.RopeFreqFactors))
	}
	return sets
}

// RopeSet is the index in RopeSets of layer l's frequencies.
func (c *Config) RopeSet(l int) int {
	if c.IsLocal(l) {
		return 1
	}
	return 0
}

func ropeFreqs(headDim int, base, scale float32, factors []float32) []float32 {
	freqs := make([]float32, headDim/2)
	s := float64(scale)
	if s == 0 {
		s = 1
	}
	for i := range freqs {
		f := math.Pow(float64(base), -2*float64(i)/float64(headDim))
		if factors != nil {
			f /= float64(factors[i])
		}
		freqs[i] = float32(f / s)
	}
	return freqs
}

// RopePairs returns, for the given style, the indices (within one head) of
// the two values pair i rotates: adjacent (2i, 2i+1) for RopeNorm, halves
// (i, i+HeadDim/2) for RopeNeoX.
func RopePairs(style RopeStyle, headDim, i int) (a, b int) {
	if style == RopeNeoX {
		return i, i + headDim/2
	}
	return 2 * i, 2*i + 1
}

// RoPE rotates every head of vec (heads of headDim values, back to back) in
// place for position pos, with freqs from RopeFreqs. The angle is computed in
// float64 so the tables do not drift at long positions; backends that use
// float32 angles should expect differences of a few ulps.
func RoPE(vec []float32, headDim, pos int, freqs []float32, style RopeStyle) {
	for h := 0; h+headDim <= len(vec); h += headDim {
		head := vec[h : h+headDim]
		for i, f := range freqs {
			a, b := RopePairs(style, headDim, i)
			cos, sin := ropeRotation(pos, f)
			x0, x1 := head[a], head[b]
			head[a] = x0*cos - x1*sin
			head[b] = x0*sin + x1*cos
		}
	}
}

// ropeRotation is the cosine and sine of the angle pos*f, computed in
// float64 (RoPE's note).
func ropeRotation(pos int, f float32) (cos, sin float32) {
	s, c := math.Sincos(float64(pos) * float64(f))
	return float32(c), float32(s)
}

// RopeTable returns the rotations of positions 0..n-1, as RoPE computes
// them: for position p and pair i, cos and sin of p*freqs[i] at
// 2*(p*len(freqs)+i) and the index after it.
func RopeTable(freqs []float32, n int) []float32 {
	t := make([]float32, 2*n*len(freqs))
	for p := range n {
		for i, f := range freqs {
			t[2*(p*len(freqs)+i)], t[2*(p*len(freqs)+i)+1] = ropeRotation(p, f)
		}
	}
	return t
}

// RMSNorm writes x / sqrt(mean(x²) + eps) * w into out (all of one length).
// Squares are taken in float32 and summed in float64, as llama.cpp does.
func RMSNorm(out, x, w []float32, eps float32) {
	var ss float64
	for _, v := range x {
		ss += float64(v * v)
	}
	scale := float32(1 / math.Sqrt(ss/float64(len(x))+float64(eps)))
	for i, v := range x {
		out[i] = v * scale * w[i]
	}
}
