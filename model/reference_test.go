package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/quant"
)

// modelSpec describes a tiny random model for tests.
type modelSpec struct {
	cfg      Config
	typ      quant.Type // matrices' type
	embedTyp quant.Type
	tied     bool
	scales   bool // random per-tensor scales (BitNet ".scale" tensors)
}

// baseConfig is the Config FromGGUF makes of a file of arch with these
// sizes and no optional metadata or tensors (head size Dim/Heads, no
// window, no biases).
func baseConfig(arch Arch, dim, ffn, layers, heads, kvHeads, vocab int) Config {
	c := Config{
		Arch: arch, Dim: dim, FFNDim: ffn, Layers: layers, Heads: heads, KVHeads: kvHeads,
		HeadDim: dim / heads, Vocab: vocab, ContextLen: 64, NormEps: 1e-5, RopeBase: 10000, RopeScale: 1,
	}
	architectures[arch].describe(&loader{f: &gguf.File{}, arch: arch, prefix: string(arch) + "."}, &c)
	return c
}

// gemmaConfig is a Gemma 3 config with a head size of its own, a window of
// 3 positions on the layers of a period-3 pattern, and a soft-cap.
func gemmaConfig(dim, ffn, layers, heads, kvHeads, headDim, vocab int) Config {
	c := baseConfig(ArchQwen3, dim, ffn, layers, heads, kvHeads, vocab) // sizes only
	c.Arch, c.HeadDim, c.QKNorm, c.PostNorms, c.Act = ArchGemma3, headDim, true, true, GELUTanh
	c.EmbedScale = float32(math.Sqrt(float64(dim)))
	c.LogitSoftcap = 3
	c.Window, c.LocalRopeBase = 3, 100
	c.Local = make([]bool, layers)
	for i := range c.Local {
		c.Local[i] = i%3 < 2
	}
	c.RopeBase, c.RopeScale = 1000, 2
	return c
}

// testSpecs covers both graphs, GQA, odd sizes (F32/F16 allow any), tied
// and untied heads, RoPE scaling and frequency factors, and the block types
// whose rows fit.
func testSpecs() map[string]modelSpec {
	specs := map[string]modelSpec{}
	c := baseConfig(ArchLlama, 18, 7, 2, 3, 1, 11)
	specs["llama-f32-odd-gqa-untied"] = modelSpec{cfg: c, typ: quant.F32, embedTyp: quant.F32}
	c = baseConfig(ArchBitNet, 20, 13, 2, 2, 2, 9)
	c.RopeScale = 2
	c.RopeFreqFactors = []float32{1, 1.5, 2, 4, 8}
	specs["bitnet-f16-odd-tied-scaled"] = modelSpec{cfg: c, typ: quant.F16, embedTyp: quant.F16, tied: true, scales: true}
	c = baseConfig(ArchLlama, 64, 96, 2, 4, 2, 40)
	specs["llama-q8_0-gqa-tied"] = modelSpec{cfg: c, typ: quant.Q8_0, embedTyp: quant.Q8_0, tied: true}
	c = baseConfig(ArchBitNet158, 128, 256, 2, 4, 1, 33)
	c.RopeBase = 500000
	specs["bitnet158-i2s-gqa"] = modelSpec{cfg: c, typ: quant.I2_S, embedTyp: quant.F16, tied: true}
	c = baseConfig(ArchBitNet, 256, 256, 1, 4, 2, 17)
	specs["bitnet-tq2_0"] = modelSpec{cfg: c, typ: quant.TQ2_0, embedTyp: quant.Q8_0, tied: true, scales: true}
	c = baseConfig(ArchLlama, 64, 128, 1, 2, 1, 5)
	specs["llama-q2_0-untied"] = modelSpec{cfg: c, typ: quant.Q2_0, embedTyp: quant.F16}
	c = baseConfig(ArchQwen2, 24, 20, 2, 4, 2, 13)
	c.QKVBias = true // the file has the biases
	specs["qwen2-f32-bias-untied"] = modelSpec{cfg: c, typ: quant.F32, embedTyp: quant.F32}
	c = baseConfig(ArchQwen3, 20, 36, 2, 4, 2, 15)
	c.HeadDim = 8 // 4 heads of 8: q is 32 wide, more than Dim
	specs["qwen3-f16-headdim-tied"] = modelSpec{cfg: c, typ: quant.F16, embedTyp: quant.F16, tied: true}
	c = gemmaConfig(32, 40, 3, 2, 1, 12, 19)
	specs["gemma3-f32-window-softcap"] = modelSpec{cfg: c, typ: quant.F32, embedTyp: quant.F32, tied: true}
	c = gemmaConfig(64, 128, 2, 4, 2, 32, 21)
	specs["gemma3-q8_0"] = modelSpec{cfg: c, typ: quant.Q8_0, embedTyp: quant.Q8_0, tied: true}
	return specs
}

// randTensor makes a [rows, cols] tensor of N(0, sd) values stored as typ.
func randTensor(t testing.TB, rng *rand.Rand, name string, typ quant.Type, rows, cols int, sd float64) Tensor {
	t.Helper()
	vals := make([]float32, rows*cols)
	for i := range vals {
		vals[i] = float32(rng.NormFloat64() * sd)
	}
	rb, err := typ.RowBytes(cols)
	if err != nil {
		t.Fatal(err)
	}
	tn := Tensor{Name: name, Type: typ, Rows: rows, Cols: cols, Scale: 1}
	if typ == quant.I2_S {
		// One scale per tensor, stored after the codes as in bitnet.cpp.
		buf := make([]byte, rows*rb+quant.I2SScaleBytes)
		s, err := quant.QuantizeI2S(buf, vals)
		if err != nil {
			t.Fatal(err)
		}
		tn.Data, tn.Scale = buf[:rows*rb], s
		return tn
	}
	tn.Data = make([]byte, rows*rb)
	for r := range rows {
		if err := quant.Quantize(typ, tn.Data[r*rb:(r+1)*rb], vals[r*cols:(r+1)*cols]); err != nil {
			t.Fatal(err)
		}
	}
	return tn
}

func randVec(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(1 + 0.2*rng.NormFloat64())
	}
	return v
}

func randBias(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(0.5 * rng.NormFloat64())
	}
	return v
}

func randomWeights(t testing.TB, seed uint64, s modelSpec) *Weights {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	c := s.cfg
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	w := &Weights{Config: c}
	w.Embed = randTensor(t, rng, "token_embd.weight", s.embedTyp, c.Vocab, c.Dim, 1)
	qDim := c.QDim()
	mat := func(name string, rows, cols int) Tensor {
		tn := randTensor(t, rng, name, s.typ, rows, cols, 1/math.Sqrt(float64(cols)))
		if s.scales {
			tn.Scale *= float32(0.5 + rng.Float64())
		}
		return tn
	}
	for i := range c.Layers {
		n := func(s string) string { return fmt.Sprintf("blk.%d.%s.weight", i, s) }
		L := Layer{
			AttnNorm: randVec(rng, c.Dim), FFNNorm: randVec(rng, c.Dim),
			Wq: mat(n("attn_q"), qDim, c.Dim), Wk: mat(n("attn_k"), c.KVDim(), c.Dim),
			Wv: mat(n("attn_v"), c.KVDim(), c.Dim), Wo: mat(n("attn_output"), c.Dim, qDim),
			Wgate: mat(n("ffn_gate"), c.FFNDim, c.Dim), Wup: mat(n("ffn_up"), c.FFNDim, c.Dim),
			Wdown: mat(n("ffn_down"), c.Dim, c.FFNDim),
		}
		if c.SubNorms {
			L.AttnSubNorm, L.FFNSubNorm = randVec(rng, qDim), randVec(rng, c.FFNDim)
		}
		if c.QKVBias {
			L.Bq, L.Bk, L.Bv = randBias(rng, qDim), randBias(rng, c.KVDim()), randBias(rng, c.KVDim())
		}
		if c.QKNorm {
			L.QNorm, L.KNorm = randVec(rng, c.HeadDim), randVec(rng, c.HeadDim)
		}
		if c.PostNorms {
			L.AttnPostNorm, L.FFNPostNorm = randVec(rng, c.Dim), randVec(rng, c.Dim)
		}
		w.Layers = append(w.Layers, L)
	}
	w.OutNorm = randVec(rng, c.Dim)
	if s.tied {
		w.Output, w.Tied = w.Embed, true
	} else {
		w.Output = randTensor(t, rng, "output.weight", s.embedTyp, c.Vocab, c.Dim, 1/math.Sqrt(float64(c.Dim)))
	}
	return w
}

// --- a float64 reference, written independently of reference.go ---

// dequant64 returns t's values (times Scale) as float64, row-major.
func dequant64(t testing.TB, tn *Tensor) []float64 {
	t.Helper()
	f := make([]float32, tn.Rows*tn.Cols)
	if err := quant.Dequantize(tn.Type, f, tn.Data); err != nil {
		t.Fatalf("%s: %v", tn.Name, err)
	}
	out := make([]float64, len(f))
	for i, v := range f {
		out[i] = float64(v) * float64(tn.Scale)
	}
	return out
}

func f64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func matvec64(m []float64, x []float64) []float64 {
	out := make([]float64, len(m)/len(x))
	for r := range out {
		for c, v := range x {
			out[r] += m[r*len(x)+c] * v
		}
	}
	return out
}

func rmsnorm64(x, w []float64, eps float64) []float64 {
	var ss float64
	for _, v := range x {
		ss += v * v
	}
	s := 1 / math.Sqrt(ss/float64(len(x))+eps)
	out := make([]float64, len(x))
	for i := range x {
		out[i] = x[i] * s * w[i]
	}
	return out
}

// rope64 rotates each head: pair i is (2i, 2i+1) or (i, i+hd/2), angle
// pos / RopeScale * base^(-2i/hd) / factor_i, or in a local layer pos *
// LocalRopeBase^(-2i/hd) / factor_i.
func rope64(v []float64, c *Config, pos int, local bool) {
	hd := c.HeadDim
	base, scale := float64(c.RopeBase), float64(c.RopeScale)
	if local {
		base, scale = float64(c.LocalRopeBase), 1
	}
	for h := 0; h < len(v); h += hd {
		for i := 0; i < hd/2; i++ {
			a, b := h+2*i, h+2*i+1
			if c.RopeStyle == RopeNeoX {
				a, b = h+i, h+i+hd/2
			}
			theta := float64(pos) / scale * math.Pow(base, -float64(2*i)/float64(hd))
			if c.RopeFreqFactors != nil {
				theta /= float64(c.RopeFreqFactors[i])
			}
			x, y := v[a], v[b]
			v[a] = x*math.Cos(theta) - y*math.Sin(theta)
			v[b] = x*math.Sin(theta) + y*math.Cos(theta)
		}
	}
}

type ref64 struct {
	w      *Weights
	c      *Config
	layers []map[string][]float64
	embed  []float64
	output []float64
	keys   [][][]float64 // [layer][pos][kvDim]
	values [][][]float64
}

func newRef64(t testing.TB, w *Weights) *ref64 {
	r := &ref64{w: w, c: &w.Config, embed: dequant64(t, &w.Embed), output: dequant64(t, &w.Output)}
	for i := range w.Layers {
		L := &w.Layers[i]
		r.layers = append(r.layers, map[string][]float64{
			"q": dequant64(t, &L.Wq), "k": dequant64(t, &L.Wk), "v": dequant64(t, &L.Wv), "o": dequant64(t, &L.Wo),
			"gate": dequant64(t, &L.Wgate), "up": dequant64(t, &L.Wup), "down": dequant64(t, &L.Wdown),
		})
	}
	r.keys = make([][][]float64, len(w.Layers))
	r.values = make([][][]float64, len(w.Layers))
	return r
}

func addBias64(x []float64, b []float32) {
	for i := range b {
		x[i] += float64(b[i])
	}
}

func (r *ref64) forward(token int32, pos int) []float64 {
	c := r.c
	x := append([]float64(nil), r.embed[int(token)*c.Dim:(int(token)+1)*c.Dim]...)
	if c.EmbedScale != 0 {
		for i := range x {
			x[i] *= float64(c.EmbedScale)
		}
	}
	hd := c.HeadDim
	for l, L := range r.w.Layers {
		m := r.layers[l]
		local := c.Local != nil && c.Local[l]
		xb := rmsnorm64(x, f64(L.AttnNorm), float64(c.NormEps))
		q, k, v := matvec64(m["q"], xb), matvec64(m["k"], xb), matvec64(m["v"], xb)
		if c.QKVBias {
			addBias64(q, L.Bq)
			addBias64(k, L.Bk)
			addBias64(v, L.Bv)
		}
		if c.QKNorm {
			for h := 0; h < len(q); h += hd {
				copy(q[h:h+hd], rmsnorm64(q[h:h+hd], f64(L.QNorm), float64(c.NormEps)))
			}
			for h := 0; h < len(k); h += hd {
				copy(k[h:h+hd], rmsnorm64(k[h:h+hd], f64(L.KNorm), float64(c.NormEps)))
			}
		}
		rope64(q, c, pos, local)
		rope64(k, c, pos, local)
		r.keys[l] = append(r.keys[l], k)
		r.values[l] = append(r.values[l], v)
		first := 0
		if local {
			first = max(0, pos-c.Window+1)
		}
		scale := 1 / math.Sqrt(float64(hd))
		if c.AttnScale != 0 {
			scale = float64(c.AttnScale)
		}
		att := make([]float64, c.Heads*hd)
		for h := range c.Heads {
			kvh := h / (c.Heads / c.KVHeads)
			scores := make([]float64, pos+1)
			maxs := math.Inf(-1)
			for t := first; t <= pos; t++ {
				for i := range hd {
					scores[t] += q[h*hd+i] * r.keys[l][t][kvh*hd+i]
				}
				scores[t] *= scale
				maxs = max(maxs, scores[t])
			}
			var sum float64
			for t := first; t <= pos; t++ {
				scores[t] = math.Exp(scores[t] - maxs)
				sum += scores[t]
			}
			for t := first; t <= pos; t++ {
				for i := range hd {
					att[h*hd+i] += scores[t] / sum * r.values[l][t][kvh*hd+i]
				}
			}
		}
		if c.SubNorms {
			att = rmsnorm64(att, f64(L.AttnSubNorm), float64(c.NormEps))
		}
		o := matvec64(m["o"], att)
		if c.PostNorms {
			o = rmsnorm64(o, f64(L.AttnPostNorm), float64(c.NormEps))
		}
		for i, v := range o {
			x[i] += v
		}
		xb = rmsnorm64(x, f64(L.FFNNorm), float64(c.NormEps))
		g, u := matvec64(m["gate"], xb), matvec64(m["up"], xb)
		for i := range g {
			switch c.Act {
			case ReLU2:
				g[i] = max(g[i], 0) * max(g[i], 0) * u[i]
			case GELUTanh:
				g[i] = 0.5 * g[i] * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(g[i]+0.044715*g[i]*g[i]*g[i]))) * u[i]
			default:
				g[i] = g[i] / (1 + math.Exp(-g[i])) * u[i]
			}
		}
		if c.SubNorms {
			g = rmsnorm64(g, f64(L.FFNSubNorm), float64(c.NormEps))
		}
		d := matvec64(m["down"], g)
		if c.PostNorms {
			d = rmsnorm64(d, f64(L.FFNPostNorm), float64(c.NormEps))
		}
		for i, v := range d {
			x[i] += v
		}
	}
	logits := matvec64(r.output, rmsnorm64(x, f64(r.w.OutNorm), float64(c.NormEps)))
	if c.LogitSoftcap > 0 {
		for i, v := range logits {
			logits[i] = float64(c.LogitSoftcap) * math.Tanh(v/float64(c.LogitSoftcap))
		}
	}
	return logits
}

func TestReferenceMatchesFloat64(t *testing.T) {
	for name, spec := range testSpecs() {
		t.Run(name, func(t *testing.T) {
			w := randomWeights(t, 1, spec)
			const ctx = 12 // beyond the gemma specs' window of 3
			st, r := NewReference(w, ctx), newRef64(t, w)
			rng := rand.New(rand.NewPCG(2, 3))
			var worst float64
			for pos := range ctx {
				tok := int32(rng.IntN(w.Vocab))
				got, want := st.Forward(tok, pos), r.forward(tok, pos)
				var scale float64
				for _, v := range want {
					scale = max(scale, math.Abs(v))
				}
				for i := range want {
					worst = max(worst, math.Abs(float64(got[i])-want[i])/scale)
				}
			}
			// float32 vs float64 on these sizes: <= 4.2e-7 relative to the
			// largest logit; 1e-5 leaves margin and catches any formula
			// error.
			t.Logf("max |float32 - float64| / max|logit| = %.3g", worst)
			if worst > 1e-5 {
				t.Errorf("float32 reference differs from float64 by %.3g (relative to the largest logit)", worst)
			}
		})
	}
}

func TestForwardRejectsBadInput(t *testing.T) {
	w := randomWeights(t, 1, testSpecs()["llama-f32-odd-gqa-untied"])
	st := NewReference(w, 4)
	for _, tc := range []struct {
		tok int32
		pos int
	}{{-1, 0}, {int32(w.Vocab), 0}, {0, -1}, {0, 4}} {
		if got := st.Forward(tc.tok, tc.pos); got != nil {
			t.Errorf("Forward(%d, %d) = logits, want nil", tc.tok, tc.pos)
		}
	}
	if NewReference(w, -3).Forward(0, 0) != nil {
		t.Error("Forward with ctx < 0 returned logits")
	}
}

func TestRoPE(t *testing.T) {
	c := baseConfig(ArchLlama, 16, 8, 1, 2, 2, 4)
	c.RopeFreqFactors = []float32{1, 2, 3, 4}
	c.RopeScale = 4
	freqs := RopeFreqs(&c)
	for i, f := range freqs {
		want := math.Pow(10000, -float64(2*i)/8) / float64(c.RopeFreqFactors[i]) / 4
		if math.Abs(float64(f)-want) > 1e-7*want {
			t.Errorf("freq %d = %g, want %g", i, f, want)
		}
	}
	for _, style := range []RopeStyle{RopeNorm, RopeNeoX} {
		c.RopeStyle = style
		rng := rand.New(rand.NewPCG(5, 5))
		v := make([]float32, 16)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		want := f64(v)
		RoPE(v, c.HeadDim, 37, freqs, style)
		rope64(want, &c, 37, false)
		for i := range v {
			if math.Abs(float64(v[i])-want[i]) > 1e-5 {
				t.Fatalf("style %d: element %d = %g, want %g", style, i, v[i], want[i])
			}
		}
	}
	// Position 0 is the identity.
	v := []float32{1, 2, 3, 4}
	RoPE(v, 4, 0, freqs[:2], RopeNorm)
	if v[0] != 1 || v[1] != 2 || v[2] != 3 || v[3] != 4 {
		t.Errorf("RoPE at position 0 changed %v", v)
	}
}

func TestValidate(t *testing.T) {
	good := baseConfig(ArchLlama, 16, 8, 1, 2, 1, 4)
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := map[string]func(c *Config){
		"zero dim":          func(c *Config) { c.Dim = 0 },
		"kv heads 3 of 2":   func(c *Config) { c.KVHeads = 3 },
		"odd head dim":      func(c *Config) { c.HeadDim = 7 },
		"huge vocab":        func(c *Config) { c.Vocab = 1 << 30 },
		"eps 0":             func(c *Config) { c.NormEps = 0 },
		"NaN base":          func(c *Config) { c.RopeBase = float32(math.NaN()) },
		"zero rope scale":   func(c *Config) { c.RopeScale = 0 },
		"short freq factor": func(c *Config) { c.RopeFreqFactors = []float32{1} },
		"zero freq factor":  func(c *Config) { c.RopeFreqFactors = []float32{1, 1, 0, 1} },
		"bad activation":    func(c *Config) { c.Act = 9 },
		"window flags":      func(c *Config) { c.Local, c.Window, c.LocalRopeBase = []bool{true, false}, 4, 10000 },
		"zero window":       func(c *Config) { c.Local, c.LocalRopeBase = []bool{true}, 10000 },
		"local base":        func(c *Config) { c.Local, c.Window = []bool{true}, 4 },
		"negative softcap":  func(c *Config) { c.LogitSoftcap = -1 },
		"NaN attn scale":    func(c *Config) { c.AttnScale = float32(math.NaN()) },
		"inf embed scale":   func(c *Config) { c.EmbedScale = float32(math.Inf(1)) },
	}
	for name, change := range bad {
		c := good
		change(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
		}
	}
}
