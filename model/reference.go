package model

import (
	"math"

	"github.com/edgellm/edgellm/quant"
)

// RefState is the reference forward pass's state for one sequence: its KV
// cache and scratch buffers. It is plain and slow on purpose: it is the
// oracle every backend is checked against, so it must be obviously correct.
type RefState struct {
	w     *Weights
	ctx   int
	freqs [][]float32 // RoPE frequencies of each set (RopeSets), HeadDim/2 each

	// activations at the current position
	x      []float32 // [Dim] residual stream
	xb     []float32 // [Dim] normed input of a block
	q      []float32 // [QDim]
	k      []float32 // [KVDim]
	v      []float32 // [KVDim]
	att    []float32 // [ctx] scores of one head
	attOut []float32 // [QDim] attention output (all heads)
	xo     []float32 // [Dim] output of W_o or W_down
	gate   []float32 // [FFNDim]
	up     []float32 // [FFNDim]
	hb     []float32 // [FFNDim]
	logits []float32 // [Vocab]

	// KV cache: [Layers][ctx][KVDim], one slice per layer
	keyCache   [][]float32
	valueCache [][]float32

	matVec func(out []float32, t *Tensor, x []float32) // MatVec unless replaced
}

// NewReference allocates the reference state for up to ctx positions.
func NewReference(w *Weights, ctx int) *RefState {
	c := &w.Config
	ctx = max(ctx, 0)
	qDim := c.QDim()
	st := &RefState{
		w: w, ctx: ctx, freqs: RopeSets(c),
		x: make([]float32, c.Dim), xb: make([]float32, c.Dim),
		q: make([]float32, qDim), k: make([]float32, c.KVDim()), v: make([]float32, c.KVDim()),
		att: make([]float32, ctx), attOut: make([]float32, qDim), xo: make([]float32, c.Dim),
		gate: make([]float32, c.FFNDim), up: make([]float32, c.FFNDim), hb: make([]float32, c.FFNDim),
		logits: make([]float32, c.Vocab), matVec: MatVec,
	}
	for range c.Layers {
		st.keyCache = append(st.keyCache, make([]float32, ctx*c.KVDim()))
		st.valueCache = append(st.valueCache, make([]float32, ctx*c.KVDim()))
	}
	return st
}

// SetMatVec replaces the weight-times-activation product (MatVec by
// default), so a check can make the reference round activations the way a
// backend or llama.cpp does and compare with a tight tolerance.
func (s *RefState) SetMatVec(f func(out []float32, t *Tensor, x []float32)) { s.matVec = f }

// Forward runs token at position pos (positions 0..pos-1 must have been run
// before, in order) and returns the logits [Vocab]. The slice is the state's
// own and is overwritten by the next call. It returns nil when the token or
// the position is out of range.
func (s *RefState) Forward(token int32, pos int) []float32 {
	w, c := s.w, &s.w.Config
	if token < 0 || int(token) >= c.Vocab || pos < 0 || pos >= s.ctx {
		return nil
	}

	// --- embedding: x = Embed[token] * EmbedScale ---
	EmbedRow(s.x, &w.Embed, int(token))
	Scale(s.x, c.EmbedMul())

	for l := range w.Layers {
		s.attention(l, pos)
		s.feedForward(l)
	}

	// --- final norm and LM head: logits = Output RMSNorm(x), soft-capped ---
	RMSNorm(s.xb, s.x, w.OutNorm, c.NormEps)
	s.matVec(s.logits, &w.Output, s.xb)
	if c.LogitSoftcap > 0 {
		for i, v := range s.logits {
			s.logits[i] = Softcap(v, c.LogitSoftcap)
		}
	}
	return s.logits
}

// attention runs layer l's attention block at pos: x += Wo·attn(...).
func (s *RefState) attention(l, pos int) {
	c, L := &s.w.Config, &s.w.Layers[l]
	kvDim, hd := c.KVDim(), c.HeadDim
	group := c.Heads / c.KVHeads // query heads per KV head (GQA)

	// --- xb = RMSNorm(x); q, k, v = Wq xb + bq, Wk xb + bk, Wv xb + bv ---
	RMSNorm(s.xb, s.x, L.AttnNorm, c.NormEps)
	s.matVec(s.q, &L.Wq, s.xb)
	s.matVec(s.k, &L.Wk, s.xb)
	s.matVec(s.v, &L.Wv, s.xb)
	if c.QKVBias {
		Add(s.q, L.Bq)
		Add(s.k, L.Bk)
		Add(s.v, L.Bv)
	}

	// --- Qwen3, Gemma 3: RMSNorm over each head of q and of k ---
	if c.QKNorm {
		HeadNorm(s.q, L.QNorm, hd, c.NormEps)
		HeadNorm(s.k, L.KNorm, hd, c.NormEps)
	}

	// --- RoPE on q and k, with this layer's frequencies ---
	freqs := s.freqs[c.RopeSet(l)]
	RoPE(s.q, hd, pos, freqs, c.RopeStyle)
	RoPE(s.k, hd, pos, freqs, c.RopeStyle)

	// --- KV cache: store k, v at pos ---
	copy(s.keyCache[l][pos*kvDim:(pos+1)*kvDim], s.k)
	copy(s.valueCache[l][pos*kvDim:(pos+1)*kvDim], s.v)

	// --- causal attention, per query head h over the visible positions
	// (all of 0..pos, or the last Window in a sliding-window layer) ---
	first := c.FirstVisible(l, pos)
	scale := c.ScoreScale()
	for h := range c.Heads {
		q := s.q[h*hd : (h+1)*hd]
		kvOff := (h / group) * hd // the KV head this query head reads
		att := s.att[:pos+1-first]
		for i := range att {
			t := first + i
			k := s.keyCache[l][t*kvDim+kvOff : t*kvDim+kvOff+hd]
			var dot float32
			for j := range q {
				dot += q[j] * k[j]
			}
			att[i] = dot * scale
		}
		Softmax(att)
		out := s.attOut[h*hd : (h+1)*hd]
		clear(out)
		for i, a := range att {
			t := first + i
			v := s.valueCache[l][t*kvDim+kvOff : t*kvDim+kvOff+hd]
			for j := range out {
				out[j] += a * v[j]
			}
		}
	}

	// --- x += [post-norm] Wo [sub-norm] attOut ---
	s.residual(&L.Wo, s.attOut, L.AttnSubNorm, L.AttnPostNorm)
}

// feedForward runs layer l's FFN block: x += W_down (act(W_gate n) * W_up n).
func (s *RefState) feedForward(l int) {
	c, L := &s.w.Config, &s.w.Layers[l]

	// --- xb = RMSNorm(x); hb = act(Wgate xb) * (Wup xb) ---
	RMSNorm(s.xb, s.x, L.FFNNorm, c.NormEps)
	s.matVec(s.gate, &L.Wgate, s.xb)
	s.matVec(s.up, &L.Wup, s.xb)
	for i, g := range s.gate {
		s.hb[i] = Activate(c.Act, g) * s.up[i]
	}

	// --- x += [post-norm] Wdown [sub-norm] hb ---
	s.residual(&L.Wdown, s.hb, L.FFNSubNorm, L.FFNPostNorm)
}

// residual ends a block: x += [post-norm] (w [sub-norm] in), the norms
// where the description has them (BitNet's sub-norm normalises in, in
// place, before the product; Gemma's post-norm the product's output).
func (s *RefState) residual(w *Tensor, in, subNorm, postNorm []float32) {
	c := &s.w.Config
	if c.SubNorms {
		RMSNorm(in, in, subNorm, c.NormEps)
	}
	s.matVec(s.xo, w, in)
	if c.PostNorms {
		RMSNorm(s.xo, s.xo, postNorm, c.NormEps)
	}
	Add(s.x, s.xo)
}

// Add adds src to dst element by element.
func Add(dst, src []float32) {
	for i, v := range src {
		dst[i] += v
	}
}

// Scale multiplies x by f in place (nothing to do for 1).
func Scale(x []float32, f float32) {
	if f == 1 {
		return
	}
	for i := range x {
		x[i] *= f
	}
}

// HeadNorm applies RMSNorm with weights w (one head's) to each head of x
// (heads of headDim values, back to back) in place.
func HeadNorm(x, w []float32, headDim int, eps float32) {
	for h := 0; h+headDim <= len(x); h += headDim {
		RMSNorm(x[h:h+headDim], x[h:h+headDim], w, eps)
	}
}

// Softcap is c*tanh(v/c), computed in float64.
func Softcap(v, c float32) float32 {
	return float32(float64(c) * math.Tanh(float64(v)/float64(c)))
}

// MatVec is the hot spot of the reference: out[r] = (row r of t) · x times
// t.Scale, one quant.Dot per row. len(out) = t.Rows, len(x) = t.Cols.
func MatVec(out []float32, t *Tensor, x []float32) {
	rb, err := t.Type.RowBytes(t.Cols)
	if err != nil {
		panic("model: MatVec on an unchecked tensor " + t.Name + ": " + err.Error())
	}
	for r := range out {
		out[r] = quant.Dot(t.Type, t.Data[r*rb:(r+1)*rb], x) * t.Scale
	}
}

// EmbedRow writes row `row` of t, dequantized and times t.Scale, into dst
// [t.Cols].
func EmbedRow(dst []float32, t *Tensor, row int) {
	rb, err := t.Type.RowBytes(t.Cols)
	if err == nil {
		err = quant.Dequantize(t.Type, dst[:t.Cols], t.Data[row*rb:(row+1)*rb])
	}
	if err != nil {
		panic("model: EmbedRow on an unchecked tensor " + t.Name + ": " + err.Error())
	}
	if t.Scale != 1 {
		for i := range dst[:t.Cols] {
			dst[i] *= t.Scale
		}
	}
}

// Softmax replaces x by softmax(x), in float32 after subtracting the max.
func Softmax(x []float32) {
	maxv := float32(math.Inf(-1))
	for _, v := range x {
		maxv = max(maxv, v)
	}
	var sum float32
	for i, v := range x {
		x[i] = float32(math.Exp(float64(v - maxv)))
		sum += x[i]
	}
	for i := range x {
		x[i] /= sum
	}
}

// Activate applies the FFN gate's non-linearity: silu(g) = g*sigmoid(g),
// relu(g)², or GELU's tanh form 0.5g(1+tanh(sqrt(2/pi)(g+0.044715g³)))
// (computed in float64).
func Activate(act Activation, g float32) float32 {
	switch act {
	case ReLU2:
		r := max(g, 0)
		return r * r
	case GELUTanh:
		x := float64(g)
		return float32(0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x))))
	}
	return g / (1 + float32(math.Exp(float64(-g))))
}
