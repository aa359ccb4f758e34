package model

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// TestRopeTable: the table's rotation of every position and pair is what
// RoPE applies, for both pair styles, at positions up to a long context.
func TestRopeTable(t *testing.T) {
	c := Config{HeadDim: 16, RopeBase: 10000}
	freqs := RopeFreqs(&c)
	const n = 5000
	tab := RopeTable(freqs, n)
	if len(tab) != 2*n*len(freqs) {
		t.Fatalf("table of %d, want %d", len(tab), 2*n*len(freqs))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, style := range []RopeStyle{RopeNorm, RopeNeoX} {
		for _, pos := range []int{0, 1, 17, 4999} {
			v := make([]float32, c.HeadDim)
			for i := range v {
				v[i] = rng.Float32()*2 - 1
			}
			want := append([]float32(nil), v...)
			RoPE(want, c.HeadDim, pos, freqs, style)
			for i := range freqs {
				a, b := RopePairs(style, c.HeadDim, i)
				cs, sn := tab[2*(pos*len(freqs)+i)], tab[2*(pos*len(freqs)+i)+1]
				if x, y := v[a]*cs-v[b]*sn, v[a]*sn+v[b]*cs; x != want[a] || y != want[b] {
					t.Fatalf("%v pos %d pair %d: table gives (%g, %g), RoPE (%g, %g)", style, pos, i, x, y, want[a], want[b])
				}
			}
		}
	}
}

// TestCheckFeatures: a backend that lacks a feature the network uses gets
// an error naming it; the plain Llama block uses none.
func TestCheckFeatures(t *testing.T) {
	llama := baseConfig(ArchLlama, 16, 8, 1, 2, 1, 4)
	if f := llama.Features(); len(f) != 0 {
		t.Errorf("plain llama uses %v", f)
	}
	if err := CheckFeatures(&llama, "test"); err != nil {
		t.Error(err)
	}
	g := gemmaConfig(32, 40, 3, 2, 1, 12, 19)
	err := CheckFeatures(&g, "test", FeatQKNorm, FeatPostNorms, FeatGELUTanh, FeatRopeNeoX, FeatEmbedScale, FeatRopeLinear, FeatHeadDim)
	if err == nil || !strings.Contains(err.Error(), "sliding-window, logit-softcap") || !strings.HasPrefix(err.Error(), "test: ") {
		t.Errorf("error %v, want sliding-window and logit-softcap named", err)
	}
	all := g
	all.QKVBias, all.SubNorms, all.Act, all.AttnScale = true, true, ReLU2, 0.1
	all.RopeFreqFactors = make([]float32, all.HeadDim/2)
	if err := CheckFeatures(&all, "test", AllFeatures...); err != nil {
		t.Errorf("AllFeatures misses a feature: %v", err)
	}
	q := baseConfig(ArchQwen2, 16, 8, 1, 2, 1, 4)
	q.QKVBias = true
	if err := CheckFeatures(&q, "test", FeatRopeNeoX); err == nil || !strings.Contains(err.Error(), "qkv-bias") {
		t.Errorf("error %v, want qkv-bias named", err)
	}
}
