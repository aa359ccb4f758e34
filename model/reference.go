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
	freqs []float32 // [HeadDim/2] RoPE frequencies

	// activations at the current position
	x      []float32 // [Dim] residual stream
	xb     []float32 // [Dim] normed input of a block
	q      []float32 // [Heads*HeadDim]
	k      []float32 // [KVDim]
	v      []float32 // [KVDim]
	att    []float32 // [ctx] scores of one head
	attOut []float32 // [Heads*HeadDim] attention output (all heads)
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
	qDim := c.Heads * c.HeadDim
	st := &RefState{
		w: w, ctx: ctx, freqs: RopeFreqs(c),
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
	kvDim := c.KVDim()
	group := c.Heads / c.KVHeads // query heads per KV head (GQA)

	// --- embedding: x = Embed[token] ---
	EmbedRow(s.x, &w.Embed, int(token))

	for l := range w.Layers {
		L := &w.Layers[l]

		// --- attention: xb = RMSNorm(x); q, k, v = Wq xb, Wk xb, Wv xb ---
		RMSNorm(s.xb, s.x, L.AttnNorm, c.NormEps)
		s.matVec(s.q, &L.Wq, s.xb)
		s.matVec(s.k, &L.Wk, s.xb)
		s.matVec(s.v, &L.Wv, s.xb)

		// --- RoPE on q and k ---
		RoPE(s.q, c.HeadDim, pos, s.freqs, c.RopeStyle)
		RoPE(s.k, c.HeadDim, pos, s.freqs, c.RopeStyle)

		// --- KV cache: store k, v at pos ---
		copy(s.keyCache[l][pos*kvDim:(pos+1)*kvDim], s.k)
		copy(s.valueCache[l][pos*kvDim:(pos+1)*kvDim], s.v)

		// --- causal attention, per query head h over positions 0..pos ---
		scale := float32(1 / math.Sqrt(float64(c.HeadDim)))
		for h := range c.Heads {
			q := s.q[h*c.HeadDim : (h+1)*c.HeadDim]
			kvOff := (h / group) * c.HeadDim // the KV head this query head reads
			att := s.att[:pos+1]
			for t := range att {
				k := s.keyCache[l][t*kvDim+kvOff : t*kvDim+kvOff+c.HeadDim]
				var dot float32
				for i := range q {
					dot += q[i] * k[i]
				}
				att[t] = dot * scale
			}
			Softmax(att)
			out := s.attOut[h*c.HeadDim : (h+1)*c.HeadDim]
			clear(out)
			for t, a := range att {
				v := s.valueCache[l][t*kvDim+kvOff : t*kvDim+kvOff+c.HeadDim]
				for i := range out {
					out[i] += a * v[i]
				}
			}
		}

		// --- BitNet: attn_sub_norm before W_o ---
		if c.SubNorms {
			RMSNorm(s.attOut, s.attOut, L.AttnSubNorm, c.NormEps)
		}

		// --- x += Wo attOut ---
		s.matVec(s.xo, &L.Wo, s.attOut)
		for i := range s.x {
			s.x[i] += s.xo[i]
		}

		// --- FFN: xb = RMSNorm(x); hb = act(Wgate xb) * (Wup xb) ---
		RMSNorm(s.xb, s.x, L.FFNNorm, c.NormEps)
		s.matVec(s.gate, &L.Wgate, s.xb)
		s.matVec(s.up, &L.Wup, s.xb)
		for i, g := range s.gate {
			s.hb[i] = Activate(c.Act, g) * s.up[i]
		}

		// --- BitNet: ffn_sub_norm before W_down ---
		if c.SubNorms {
			RMSNorm(s.hb, s.hb, L.FFNSubNorm, c.NormEps)
		}

		// --- x += Wdown hb ---
		s.matVec(s.xo, &L.Wdown, s.hb)
		for i := range s.x {
			s.x[i] += s.xo[i]
		}
	}

	// --- final norm and LM head: logits = Output RMSNorm(x) ---
	RMSNorm(s.xb, s.x, w.OutNorm, c.NormEps)
	s.matVec(s.logits, &w.Output, s.xb)
	return s.logits
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

// Activate applies the FFN gate's non-linearity: silu(g) = g*sigmoid(g), or
// relu(g)².
func Activate(act Activation, g float32) float32 {
	if act == ReLU2 {
		r := max(g, 0)
		return r * r
	}
	return g / (1 + float32(math.Exp(float64(-g))))
}
