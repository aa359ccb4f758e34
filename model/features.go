package model

import (
	"fmt"
	"strings"
)

// Feature names one thing a layer or the network does beyond the plain
// Llama block (RMSNorm, Q/K/V/O without biases, RoPE, causal attention,
// SiLU-gated FFN). Backends list the features they implement; loading a
// network that uses another is an error naming it (CheckFeatures), never
// a silent wrong answer.
type Feature string

const (
	FeatQKVBias         Feature = "qkv-bias"          // Config.QKVBias
	FeatQKNorm          Feature = "qk-norm"           // Config.QKNorm
	FeatSubNorms        Feature = "sub-norms"         // Config.SubNorms
	FeatPostNorms       Feature = "post-norms"        // Config.PostNorms
	FeatReLU2           Feature = "relu2"             // Config.Act == ReLU2
	FeatGELUTanh        Feature = "gelu-tanh"         // Config.Act == GELUTanh
	FeatRopeNeoX        Feature = "rope-neox"         // Config.RopeStyle == RopeNeoX
	FeatRopeFreqFactors Feature = "rope-freq-factors" // Config.RopeFreqFactors
	FeatRopeLinear      Feature = "rope-linear-scale" // Config.RopeScale != 1
	FeatSlidingWindow   Feature = "sliding-window"    // Config.Local
	FeatAttnScale       Feature = "attention-scale"   // Config.AttnScale
	FeatEmbedScale      Feature = "embedding-scale"   // Config.EmbedScale
	FeatLogitSoftcap    Feature = "logit-softcap"     // Config.LogitSoftcap
	FeatHeadDim         Feature = "head-dim"          // HeadDim*Heads != Dim
)

// AllFeatures is every Feature, for a backend that implements them all.
var AllFeatures = []Feature{
	FeatQKVBias, FeatQKNorm, FeatSubNorms, FeatPostNorms, FeatReLU2, FeatGELUTanh, FeatRopeNeoX,
	FeatRopeFreqFactors, FeatRopeLinear, FeatSlidingWindow, FeatAttnScale, FeatEmbedScale, FeatLogitSoftcap, FeatHeadDim,
}

// Features lists what c uses beyond the plain Llama block.
func (c *Config) Features() []Feature {
	var f []Feature
	add := func(on bool, x Feature) {
		if on {
			f = append(f, x)
		}
	}
	add(c.QKVBias, FeatQKVBias)
	add(c.QKNorm, FeatQKNorm)
	add(c.SubNorms, FeatSubNorms)
	add(c.PostNorms, FeatPostNorms)
	add(c.Act == ReLU2, FeatReLU2)
	add(c.Act == GELUTanh, FeatGELUTanh)
	add(c.RopeStyle == RopeNeoX, FeatRopeNeoX)
	add(c.RopeFreqFactors != nil, FeatRopeFreqFactors)
	add(c.RopeScale != 1, FeatRopeLinear)
	add(c.Local != nil, FeatSlidingWindow)
	add(c.AttnScale != 0, FeatAttnScale)
	add(c.EmbedScale != 0 && c.EmbedScale != 1, FeatEmbedScale)
	add(c.LogitSoftcap > 0, FeatLogitSoftcap)
	add(c.QDim() != c.Dim, FeatHeadDim)
	return f
}

// CheckFeatures returns an error naming every feature of c that is not in
// supported, for backend (its name, for the message).
func CheckFeatures(c *Config, backend string, supported ...Feature) error {
	var missing []string
	for _, f := range c.Features() {
		ok := false
		for _, s := range supported {
			ok = ok || s == f
		}
		if !ok {
			missing = append(missing, string(f))
		}
	}
	if missing != nil {
		return fmt.Errorf("%s: architecture %q uses %s, which this backend does not implement", backend, c.Arch, strings.Join(missing, ", "))
	}
	return nil
}
