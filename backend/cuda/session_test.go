package cuda

import (
	"strings"
	"testing"
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
		s, _, _ := planSession(d, layers, 64)
		m, part := s.m, s.buf.part
		decode := s.steps(false)
		prefill := s.steps(true)
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
		if prefill[0].args[0] != s.buf.toks || decode[0].args[0] != s.buf.tp {
			t.Fatalf("embedding reads %d (prefill) and %d (decode)", prefill[0].args[0], decode[0].args[0])
		}
		for _, l := range prefill {
			if b, ok := m.fn[l.name+batchSuffix]; ok && l.fn != b {
				t.Fatalf("prefill %s does not run its batch entry point", l.name)
			}
		}
	}
}

// TestStepsSkip: kernels the harness names in knobs.Knobs.Skip are left
// out of both steps, every other launch kept in order.
func TestStepsSkip(t *testing.T) {
	s, _, _ := planSession(testDims()[0], 2, 64)
	full := planNames(s.steps(false))
	s.m.knobs.Skip = "k_gateup,k_lmhead"
	got := planNames(s.steps(false))
	want := strings.NewReplacer(" k_gateup", "", " k_lmhead", "").Replace(full)
	if got != want || strings.Contains(planNames(s.steps(true)), "k_gateup") {
		t.Fatalf("skipping k_gateup and k_lmhead: decode %q, want %q", got, want)
	}
}
