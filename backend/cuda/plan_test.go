package cuda

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/model"
)

// planCases are the shapes whose launch plans TestStepsPlan pins, with the
// options a default Load gives them (ptxCases' shapes, two layers each).
func planCases() map[string]kernelDims {
	c := ptxCases()
	delete(c, "q8_0-kvhalf") // the same launches as q8_0 but the cache
	return c
}

// planLayers is how many layers the pinned plans have.
const planLayers = 2

// planSession is a Session of ctx positions on planModel(d, layers),
// without a GPU: its buffers are fake addresses named in names too.
func planSession(d kernelDims, layers, ctx int) (s *Session, names map[uint64]string, fnNames map[uintptr]string) {
	m, names, fnNames := planModel(d, layers)
	s = &Session{m: m, ctx: ctx, nsplit: attnSplits(ctx)}
	b := &s.buf
	for _, a := range []struct {
		p    *uint64
		name string
	}{
		{&b.tp, "tp"}, {&b.toks, "toks"}, {&b.x, "x"}, {&b.q, "q"}, {&b.att, "att"}, {&b.hb, "hb"}, {&b.logits, "logits"},
		{&b.part, "part"}, {&b.counters, "counters"}, {&b.sampleP, "sampleP"}, {&b.bestv, "bestv"}, {&b.besti, "besti"},
		{&b.lmCounter, "lmcounter"}, {&b.tokOut, "tokout"}, {&b.trace, "trace"}, {&b.kc, "kc"}, {&b.vc, "vc"}, {&b.rope, "rope"},
		{&b.ropeLocal, "rope_local"}, {&b.raw, "raw"}, {&b.post, "post"},
	} {
		*a.p = uint64(0x7e0000000000 + 0x1000000*(len(names)+1))
		names[*a.p] = a.name
	}
	return s, names, fnNames
}

// planModel is a Model with dims d and the given layers for planning
// without a GPU: every device buffer is a distinct fake address, whose
// name names[addr] gives, every kernel a distinct handle (fnNames), and
// each product kernel 2 blocks resident a multiprocessor.
func planModel(d kernelDims, layers int) (m *Model, names map[uint64]string, fnNames map[uintptr]string) {
	m = &Model{dims: d, fn: map[string]uintptr{}, resident: map[string]int{}, layers: make([]devLayer, layers),
		cfg: model.Config{Dim: d.Dim, FFNDim: d.FFN, Heads: d.Heads, KVHeads: d.KVHeads, HeadDim: d.HeadDim, Vocab: d.Vocab,
			Layers: layers, NormEps: d.Eps, QKVBias: d.QKVBias, QKNorm: d.QKNorm, PostNorms: d.PostNorms}}
	if d.Window > 0 {
		// every other layer slides, the first included
		m.cfg.Window, m.cfg.LocalRopeBase, m.cfg.Local = d.Window, 10000, make([]bool, layers)
		for l := range m.cfg.Local {
			m.cfg.Local[l] = l%2 == 0
		}
	}
	fnNames = map[uintptr]string{}
	for _, n := range append(append([]string(nil), kernelNames...), rowsShaped...) {
		if _, ok := m.fn[n]; !ok {
			m.fn[n] = uintptr(len(m.fn) + 1)
			fnNames[m.fn[n]] = n
		}
	}
	for _, n := range []string{"k_qkv", "k_wo", "k_gateup", "k_down", "k_lmhead"} {
		m.resident[n] = 2 * max(d.SMs, 1)
	}
	names = map[uint64]string{}
	addr := func(p *uint64, name string) {
		*p = uint64(0x7f0000000000 + 0x1000000*(len(names)+1))
		names[*p] = name
	}
	mat := func(dm *devMat, name string) {
		addr(&dm.w, name+".w")
		addr(&dm.d, name+".d")
		addr(&dm.rs, name+".rs")
	}
	for l := range m.layers {
		L := &m.layers[l]
		p := fmt.Sprintf("L%d.", l)
		mat(&L.qkv, p+"qkv")
		mat(&L.wo, p+"wo")
		mat(&L.gateUp, p+"gateup")
		mat(&L.down, p+"down")
		addr(&L.attnNorm, p+"attn_norm")
		addr(&L.attnSub, p+"attn_sub_norm")
		addr(&L.ffnNorm, p+"ffn_norm")
		addr(&L.ffnSub, p+"ffn_sub_norm")
		addr(&L.attnPost, p+"post_attention_norm")
		addr(&L.ffnPost, p+"post_ffw_norm")
		addr(&L.qkvBias, p+"qkv_bias")
		addr(&L.qNorm, p+"q_norm")
		addr(&L.kNorm, p+"k_norm")
	}
	mat(&m.head, "head")
	mat(&m.embed, "embed")
	addr(&m.outNrm, "output_norm")
	m.escale = 0.5
	return m, names, fnNames
}

// formatPlan writes a launch list one launch a line: kernel name, the
// function launched, grid, block, dynamic shared memory and arguments,
// each a buffer's name (names; offsets into a buffer as name+0xN) or its
// value.
func formatPlan(plan []launch, names map[uint64]string, fnNames map[uintptr]string) string {
	var b strings.Builder
	for _, l := range plan {
		fmt.Fprintf(&b, "%s fn=%s grid=%d,%d,%d block=%d smem=%d args=", l.name, fnNames[l.fn], l.grid[0], l.grid[1], l.grid[2], l.block, l.smem)
		for i, a := range l.args {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(argName(a, names))
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// argName is a's buffer name (or the nearest buffer below it plus the
// offset, for a layer's share of the KV cache), else its value.
func argName(a uint64, names map[uint64]string) string {
	if n, ok := names[a]; ok {
		return n
	}
	var best uint64
	for p := range names {
		if p <= a && p > best {
			best = p
		}
	}
	if best != 0 && a-best < 0x1000000 {
		return fmt.Sprintf("%s+%#x", names[best], a-best)
	}
	return fmt.Sprintf("%#x", a)
}

var updatePlans = flag.Bool("update-plans", false, "rewrite testdata/steps from the current planning code")

// TestStepsPlan pins the launch plans (kernel, function, grid, block,
// shared memory, arguments of every launch) of the decode step and of a
// prefill batch for planCases' shapes and a context of 1,000 positions
// (nsplit 63), so that a change meant to leave what the GPU runs alone
// can be checked without one. The files were written by the planning
// code of the commit before the persistent kernel and the experiment
// options left (and found equal to it; docs/gpu-notes.md); a change that
// means to alter a plan rewrites them with -update-plans and shows the
// difference in its diff.
func TestStepsPlan(t *testing.T) {
	for name, d := range planCases() {
		s, names, fnNames := planSession(d, planLayers, 1000)
		got := "decode\n" + formatPlan(s.steps(false), names, fnNames) + "prefill\n" + formatPlan(s.steps(true), names, fnNames)
		checkGolden(t, filepath.Join("testdata", "steps", name+".txt"), got)
	}
}

// checkGolden compares got with the golden file at path, or with
// -update-plans writes it there.
func checkGolden(t *testing.T, path, got string) {
	t.Helper()
	if *updatePlans {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update-plans to write it)", err)
	}
	if got == string(want) {
		return
	}
	gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
	for i := range max(len(gl), len(wl)) {
		var g, w string
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if g != w {
			t.Fatalf("plan differs from %s at line %d:\n got  %s\n want %s", path, i+1, g, w)
		}
	}
}
