package cuda

import (
	"strings"
	"testing"

	"github.com/edgellm/edgellm/model"
)

// planNames is the kernel names of a launch list, space-separated.
func planNames(plan []launch) string {
	var b strings.Builder
	for i, l := range plan {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(l.name)
	}
	return b.String()
}

// TestSteps checks the launch lists without a GPU: the decode step of a
// model whose kernels fuse QKV and attention runs k_qkv_attn and a k_wo
// reading its partials (4 launches a layer, 122 for SmolLM's 30 layers),
// the unfused step 5 a layer, and prefill always the separate kernels,
// reading the batch's token ids, without the LM head.
func TestSteps(t *testing.T) {
	const layers = 30
	cases := []struct {
		dims kernelDims
		want int
	}{
		{testDims()[4], 4*layers + 2}, // smollm-135m preset: fused
		{testDims()[0], 5*layers + 2}, // bitnet-2b: not
	}
	for _, c := range cases {
		d := c.dims
		d.RowChunks = max(d.RowChunks, 1) // as load sets it
		m := &Model{dims: d, fn: map[string]uintptr{}, resident: map[string]int{}, layers: make([]devLayer, layers),
			cfg: model.Config{Dim: d.Dim, FFNDim: d.FFN, Heads: d.Heads, KVHeads: d.KVHeads, HeadDim: d.HeadDim, Vocab: d.Vocab, Layers: layers}}
		for _, n := range kernelNames {
			m.fn[n] = uintptr(len(m.fn) + 1)
		}
		s := &Session{m: m, ctx: 64, nsplit: 4, tp: 100, toks: 200}
		const part = 300
		decode := s.steps(false, 0, 0, 0, part, 0, 0, 0, 0, 0, 0)
		prefill := s.steps(true, 0, 0, 0, part, 0, 0, 0, 0, 0, 0)
		fused, splits, threads := d.fusedAttention()
		if len(decode) != c.want {
			t.Fatalf("%s: decode step of %d launches, want %d: %s", d.WK, len(decode), c.want, planNames(decode))
		}
		names := planNames(decode)
		if fused != strings.Contains(names, "k_qkv_attn") || fused == strings.Contains(names, "k_attn ") {
			t.Fatalf("fused %v, decode step %s", fused, names)
		}
		for _, l := range decode {
			switch l.name {
			case "k_qkv_attn":
				if l.grid[0] != uint32(d.Heads*(splits+2)) || l.block != uint32(threads) || l.args[len(l.args)-2] != part {
					t.Fatalf("k_qkv_attn launch %+v", l)
				}
			case "k_wo":
				if fused && l.args[0] != part {
					t.Fatalf("fused k_wo reads %d, not the partials", l.args[0])
				}
			}
		}
		if len(prefill) != 5*layers+1 || strings.Contains(planNames(prefill), "k_qkv_attn") || strings.Contains(planNames(prefill), "k_lmhead") {
			t.Fatalf("prefill step: %s", planNames(prefill))
		}
		if prefill[0].args[0] != s.toks || decode[0].args[0] != s.tp {
			t.Fatalf("embedding reads %d (prefill) and %d (decode)", prefill[0].args[0], decode[0].args[0])
		}
		for _, l := range prefill {
			if b, ok := m.fn[l.name+batchSuffix]; ok && l.fn != b {
				t.Fatalf("prefill %s does not run its batch entry point", l.name)
			}
		}
	}
}
