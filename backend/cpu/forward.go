package cpu

import (
	"math"
	"time"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/backend/cpu/kernels"
	"github.com/edgellm/edgellm/model"
)

// pass is one forward step over nb rows of activations: the tokens of one
// session's prefill chunk (consecutive positions), or one token of each
// session of a decode batch. forward runs every such step: it is the one
// place the CPU backend writes the layer order, reading the model's
// description (model.Config) as the reference does.
type pass struct {
	nb   int
	sess []*Session // row b's session: one session's run of rows forms an attention group
	pos  []int      // row b's position

	// [nb] rows of each: residual, normed input, queries, attention
	// output, new keys and values, FFN gate and up.
	x, xb, q, att, kb, vb, hb, hb2 []float32
	cos, sin                       []float32 // [rows][RoPE sets][HeadDim/2]
	sets                           int       // RoPE sets (model.RopeSets)

	acts actsSet
	mt   *matTask
	gt   gateTask
	at   groupAttnTask

	times *backend.OpTimes // per-operation times; nil when not profiling
}

// groupAttnTask runs the attention of every session of a pass (each set
// up for its rows by its own attnTask) as one pool operation: each worker
// takes, in each session, the items that session's rows alone would give it.
type groupAttnTask struct {
	groups []*attnTask
}

func (t *groupAttnTask) run(w, n int) {
	for _, a := range t.groups {
		a.run(w, n)
	}
}

// lap adds the time since mark to *acc when profiling and returns the new mark.
func (p *pass) lap(acc *float64, mark time.Time) time.Time {
	if p.times == nil {
		return mark
	}
	now := time.Now()
	*acc += now.Sub(mark).Seconds()
	return now
}

// forward runs the pass's tokens through the network, stores their keys
// and values in their sessions' caches, and writes the logits of rows
// logitsFrom..nb-1 to logits (row by row, Vocab each) unless logits is nil.
// It does not advance the sessions' positions. m.mu is held.
func (m *Model) forward(p *pass, tokens []int32, logitsFrom int, logits []float32) {
	c := &m.cfg
	nb := p.nb
	dim, ffn, kvDim, qDim, hd := c.Dim, c.FFNDim, c.KVDim(), c.QDim(), c.HeadDim
	var mark time.Time
	if p.times != nil {
		mark = time.Now()
	}
	pt := p.times
	if pt == nil {
		pt = &backend.OpTimes{}
	}
	x := p.x[:nb*dim]

	// --- embedding: x = Embed[token] * EmbedScale; each row's RoPE angles ---
	for b, t := range tokens {
		row := x[b*dim : (b+1)*dim]
		getRow(m.embed, int(t), row)
		model.Scale(row, c.EmbedMul())
		p.ropeAngles(m.ropeSets, b)
	}
	mark = p.lap(&pt.Embedding, mark)

	for l := range m.layers {
		ly := &m.layers[l]

		// --- attention: q, k, v = W{q,k,v} RMSNorm(x) [+ bias] ---
		rmsNormRows(p.xb, x, ly.attnNorm, nb, dim, c.NormEps)
		mark = p.lap(&pt.Other, mark)
		p.mt.mul3(m.pool, p.acts, p.xb, nb, ly.wq, p.q, ly.wk, p.kb, ly.wv, p.vb)
		set := c.RopeSet(l)
		for b := range nb {
			q, k, v := p.q[b*qDim:(b+1)*qDim], p.kb[b*kvDim:(b+1)*kvDim], p.vb[b*kvDim:(b+1)*kvDim]
			if c.QKVBias {
				model.Add(q, ly.bq)
				model.Add(k, ly.bk)
				model.Add(v, ly.bv)
			}
			if c.QKNorm {
				model.HeadNorm(q, ly.qNorm, hd, c.NormEps)
				model.HeadNorm(k, ly.kNorm, hd, c.NormEps)
			}
			p.rope(q, b, set, c)
			p.rope(k, b, set, c)
			p.sess[b].putKV(l, p.pos[b], k, v)
		}
		mark = p.lap(&pt.QKV, mark)

		// --- causal attention of each session's rows over its cache ---
		p.attention(l)
		mark = p.lap(&pt.Attention, mark)

		// --- x += [post-norm] W_o [sub-norm] attention ---
		m.residual(p, ly.wo, p.att, qDim, ly.attnSubNorm, ly.attnPostNorm)
		mark = p.lap(&pt.Output, mark)

		// --- FFN: x += [post-norm] W_down [sub-norm] (act(W_gate n) * W_up n) ---
		rmsNormRows(p.xb, x, ly.ffnNorm, nb, dim, c.NormEps)
		mark = p.lap(&pt.Other, mark)
		p.mt.mul3(m.pool, p.acts, p.xb, nb, ly.wgate, p.hb, ly.wup, p.hb2, nil, nil)
		p.gt.g, p.gt.u, p.gt.n, p.gt.nb, p.gt.act = p.hb, p.hb2, ffn, nb, c.Act
		m.pool.run(&p.gt)
		mark = p.lap(&pt.FFNUpGate, mark)
		m.residual(p, ly.wdown, p.hb, ffn, ly.ffnSubNorm, ly.ffnPostNorm)
		mark = p.lap(&pt.FFNDown, mark)
	}

	// --- final norm and LM head of the rows asked for, soft-capped ---
	if logits == nil {
		return
	}
	n := nb - logitsFrom
	rmsNormRows(p.xb, x[logitsFrom*dim:], m.out, n, dim, c.NormEps)
	p.mt.mul3(m.pool, p.acts, p.xb, n, m.output, logits, nil, nil, nil, nil)
	if c.LogitSoftcap > 0 {
		for i, v := range logits[:n*c.Vocab] {
			logits[i] = model.Softcap(v, c.LogitSoftcap)
		}
	}
	p.lap(&pt.LMHead, mark)
}

// residual ends a block for every row: x += [post-norm] (w [sub-norm] in),
// in being n wide, as the reference's residual.
func (m *Model) residual(p *pass, w matmul, in []float32, n int, subNorm, postNorm []float32) {
	c := &m.cfg
	nb, dim := p.nb, c.Dim
	if c.SubNorms {
		rmsNormRows(in, in, subNorm, nb, n, c.NormEps)
	}
	p.mt.mul3(m.pool, p.acts, in, nb, w, p.xb, nil, nil, nil, nil)
	if c.PostNorms {
		rmsNormRows(p.xb, p.xb, postNorm, nb, dim, c.NormEps)
	}
	model.Add(p.x[:nb*dim], p.xb[:nb*dim])
}

// attention runs layer l's attention for every row: each session's run of
// rows attends causally over its cache (the rows' own keys already in it),
// all sessions in one pool operation.
func (p *pass) attention(l int) {
	qDim := p.sess[0].m.cfg.QDim()
	p.at.groups = p.at.groups[:0]
	for b := 0; b < p.nb; {
		s, e := p.sess[b], b+1
		for e < p.nb && p.sess[e] == s {
			e++
		}
		s.at.setup(l, p.pos[b], e-b, p.q[b*qDim:e*qDim], p.att[b*qDim:e*qDim])
		p.at.groups = append(p.at.groups, &s.at)
		b = e
	}
	m := p.sess[0].m
	m.pool.run(&p.at)
	for _, a := range p.at.groups {
		if a.chunks > 1 {
			a.merge()
		}
	}
	clear(p.at.groups[:cap(p.at.groups)])
	p.at.groups = p.at.groups[:0]
}

// ropeAngles fills row b's cos/sin for its position, for every RoPE set,
// in float64 as the reference does.
func (p *pass) ropeAngles(sets [][]float32, b int) {
	half := len(sets[0])
	for set, freqs := range sets {
		off := (b*len(sets) + set) * half
		pos := float64(p.pos[b])
		for i, f := range freqs {
			sn, cs := math.Sincos(pos * float64(f))
			p.cos[off+i] = float32(cs)
			p.sin[off+i] = float32(sn)
		}
	}
}

// rope rotates every head of v (one row's q or k) by row b's angles of
// RoPE set set: the reference's pairs (model.RopePairs) and arithmetic,
// with the pair layout chosen once a call rather than per element.
func (p *pass) rope(v []float32, b, set int, c *model.Config) {
	hd := c.HeadDim
	half := hd / 2
	off := (b*p.sets + set) * half
	cs, sn := p.cos[off:off+half], p.sin[off:off+half]
	for h := 0; h+hd <= len(v); h += hd {
		head := v[h : h+hd]
		if c.RopeStyle == model.RopeNeoX {
			lo, hi := head[:half], head[half:]
			for i, cos := range cs {
				a, bb := lo[i], hi[i]
				lo[i] = a*cos - bb*sn[i]
				hi[i] = a*sn[i] + bb*cos
			}
			continue
		}
		for i, cos := range cs {
			pr := head[2*i : 2*i+2]
			a, bb := pr[0], pr[1]
			pr[0] = a*cos - bb*sn[i]
			pr[1] = a*sn[i] + bb*cos
		}
	}
}

// rmsNormRows normalises nb rows of width n of x into dst (which may be x
// itself), row by row, with the kernels' RMSNorm (the reference's, its sum
// of squares in vector lanes): it runs on the caller between the pool's
// operations, where the other threads wait.
func rmsNormRows(dst, x, w []float32, nb, n int, eps float32) {
	for b := range nb {
		kernels.RMSNorm(dst[b*n:(b+1)*n], x[b*n:(b+1)*n], w, eps)
	}
}

// gateTask computes the FFN's gated activation act(g) * u into g, nb rows
// of n, over the pool: its exp is a visible share of a token on one core.
type gateTask struct {
	g, u  []float32
	n, nb int
	act   model.Activation
}

func (t *gateTask) run(w, n int) {
	// Shares in whole 8s: the assembly takes 8 at a time and a Go tail the
	// rest, which round differently; aligned shares keep every element on
	// the same path whatever the number of workers or rows.
	chunks := (t.n + 7) / 8
	i0, i1 := min(chunks*w/n*8, t.n), min(chunks*(w+1)/n*8, t.n)
	for b := range t.nb {
		gate(t.g[b*t.n+i0:b*t.n+i1], t.u[b*t.n+i0:b*t.n+i1], t.act)
	}
}

// gate computes the FFN's gated activation into g: act(g) * u.
func gate(g, u []float32, act model.Activation) {
	switch act {
	case model.ReLU2:
		for i, v := range g {
			v = max(v, 0)
			g[i] = v * v * u[i]
		}
	case model.GELUTanh:
		for i, v := range g {
			g[i] = model.Activate(model.GELUTanh, v) * u[i]
		}
	default:
		kernels.SiLUMul(g, u)
	}
}
