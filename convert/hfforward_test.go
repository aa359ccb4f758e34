package convert

import (
	"fmt"
	"math"
)

// hfForward is an independent float64 forward pass of a tiny checkpoint,
// written from the Hugging Face modelling code's conventions, not from
// EdgeLLM's: the source tensors as stored (q and k rows in HF order,
// RoPE rotating the two halves of each head), Gemma's 1+w norms and
// query_pre_attn_scalar, BitNet's sub-norms and absmean ternary weights
// (its int8 activation quantization left out, as in EdgeLLM's reference).
// It returns the logits after each of ids.
func hfForward(s tiny, h *hfCkpt, ids []int) [][]float64 {
	gemma := s.hfArch == "Gemma3ForCausalLM"
	bitnet := s.hfArch == "BitNetForCausalLM" || s.hfArch == "BitnetForCausalLM"
	get := func(name string) []float64 {
		t, ok := h.tensors[name]
		if !ok {
			panic("hfForward: no " + name)
		}
		if t.dtype == "U8" { // packed ternary: value-1, divided by the scale (BitLinear) or times it (AutoBitLinear)
			scale := float64(h.tensors[name+"_scale"].f[0])
			q, cols := int(t.shape[0]), int(t.shape[1])
			out := make([]float64, 4*q*cols)
			for i := range 4 {
				for r := range q {
					for c := range cols {
						code := float64(int(t.raw[r*cols+c]>>(2*i))&3 - 1)
						if s.autoBitLinear {
							out[(i*q+r)*cols+c] = code * scale
						} else {
							out[(i*q+r)*cols+c] = code / scale
						}
					}
				}
			}
			return out
		}
		out := make([]float64, len(t.f))
		for i, v := range t.f {
			out[i] = float64(v)
		}
		return out
	}
	// BitNet master weights: s = 1/max(mean|w|, 1e-5), clamp(round(w s)) / s.
	ternary := func(w []float64) []float64 {
		var sum float64
		for _, v := range w {
			sum += math.Abs(v)
		}
		sc := 1 / math.Max(sum/float64(len(w)), 1e-5)
		out := make([]float64, len(w))
		for i, v := range w {
			out[i] = math.Max(-1, math.Min(1, math.RoundToEven(v*sc))) / sc
		}
		return out
	}
	linear := func(name string) []float64 {
		w := get(name)
		if bitnet && h.tensors[name].dtype != "U8" {
			w = ternary(w)
		}
		return w
	}
	norm := func(x, w []float64) []float64 {
		var ss float64
		for _, v := range x {
			ss += v * v
		}
		r := 1 / math.Sqrt(ss/float64(len(x))+s.eps)
		out := make([]float64, len(x))
		for i, v := range x {
			g := w[i]
			if gemma {
				g++
			}
			out[i] = v * r * g
		}
		return out
	}
	matvec := func(w []float64, x []float64) []float64 {
		rows := len(w) / len(x)
		out := make([]float64, rows)
		for r := range rows {
			var acc float64
			for c, v := range x {
				acc += w[r*len(x)+c] * v
			}
			out[r] = acc
		}
		return out
	}
	add := func(a, b []float64) {
		for i := range a {
			a[i] += b[i]
		}
	}
	// RoPE as transformers' apply_rotary_pos_emb: x*cos + rotate_half(x)*sin.
	// inv_freq as transformers' rope initialisations compute it: linear
	// divides by the factor (global layers only, for Gemma), llama3 scales
	// the low frequencies by its wavelength bands.
	invFreq := func(i int, base float64, local bool) float64 {
		f := math.Pow(base, -2*float64(i)/float64(s.headDim))
		if s.linear > 0 && !local {
			f /= s.linear
		}
		if s.llama3 {
			const factor, low, high, orig = 8.0, 1.0, 4.0, 1024.0
			switch wl := 2 * math.Pi / f; {
			case wl < orig/high:
			case wl > orig/low:
				f /= factor
			default:
				smooth := (orig/wl - low) / (high - low)
				f = (1-smooth)*f/factor + smooth*f
			}
		}
		return f
	}
	rope := func(x []float64, pos int, base float64, local bool) {
		d := s.headDim
		for h0 := 0; h0 < len(x); h0 += d {
			for i := range d / 2 {
				th := float64(pos) * invFreq(i, base, local)
				c, sn := math.Cos(th), math.Sin(th)
				a, b := x[h0+i], x[h0+i+d/2]
				x[h0+i] = a*c - b*sn
				x[h0+i+d/2] = b*c + a*sn
			}
		}
	}
	headNorm := func(x, w []float64) {
		for h0 := 0; h0 < len(x); h0 += s.headDim {
			copy(x[h0:h0+s.headDim], norm(x[h0:h0+s.headDim], w))
		}
	}
	act := func(g float64) float64 {
		switch s.act {
		case "silu":
			return g / (1 + math.Exp(-g))
		case "relu2":
			r := math.Max(g, 0)
			return r * r
		case "gelu_pytorch_tanh":
			return 0.5 * g * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(g+0.044715*g*g*g)))
		}
		panic("act " + s.act)
	}
	isLocal := func(l int) bool { return gemma && s.period != 1 && (s.period == 0 || l%s.period < s.period-1) }

	embed := get("model.embed_tokens.weight")
	head := embed
	if !s.tied {
		head = get("lm_head.weight")
	}
	keys := make([][][]float64, s.layers)
	vals := make([][][]float64, s.layers)
	var logits [][]float64
	for pos, id := range ids {
		x := append([]float64(nil), embed[id*s.hidden:(id+1)*s.hidden]...)
		if gemma {
			for i := range x {
				x[i] *= math.Sqrt(float64(s.hidden))
			}
		}
		for l := range s.layers {
			p := fmt.Sprintf("model.layers.%d.", l)
			xn := norm(x, get(p+"input_layernorm.weight"))
			q := matvec(linear(p+"self_attn.q_proj.weight"), xn)
			k := matvec(linear(p+"self_attn.k_proj.weight"), xn)
			v := matvec(linear(p+"self_attn.v_proj.weight"), xn)
			if s.hfArch == "Qwen2ForCausalLM" {
				add(q, get(p+"self_attn.q_proj.bias"))
				add(k, get(p+"self_attn.k_proj.bias"))
				add(v, get(p+"self_attn.v_proj.bias"))
			}
			if s.hfArch == "Qwen3ForCausalLM" || gemma {
				headNorm(q, get(p+"self_attn.q_norm.weight"))
				headNorm(k, get(p+"self_attn.k_norm.weight"))
			}
			base := s.ropeTheta
			if isLocal(l) {
				base = s.localTheta
			}
			rope(q, pos, base, isLocal(l))
			rope(k, pos, base, isLocal(l))
			keys[l] = append(keys[l], k)
			vals[l] = append(vals[l], v)
			scale := 1 / math.Sqrt(float64(s.headDim)) // Gemma: query_pre_attn_scalar = head_dim here
			att := make([]float64, s.qDim())
			group := s.heads / s.kvHeads
			for hh := range s.heads {
				kvh := hh / group
				qh := q[hh*s.headDim : (hh+1)*s.headDim]
				first := 0
				if isLocal(l) {
					first = max(0, pos-s.window+1)
				}
				sc := make([]float64, pos+1)
				mx := math.Inf(-1)
				for j := first; j <= pos; j++ {
					kj := keys[l][j][kvh*s.headDim : (kvh+1)*s.headDim]
					var dot float64
					for i := range qh {
						dot += qh[i] * kj[i]
					}
					sc[j] = dot * scale
					mx = math.Max(mx, sc[j])
				}
				var z float64
				for j := first; j <= pos; j++ {
					sc[j] = math.Exp(sc[j] - mx)
					z += sc[j]
				}
				for j := first; j <= pos; j++ {
					vj := vals[l][j][kvh*s.headDim : (kvh+1)*s.headDim]
					for i := range vj {
						att[hh*s.headDim+i] += sc[j] / z * vj[i]
					}
				}
			}
			if bitnet {
				att = norm(att, get(p+s.bitnetSubNormNames[0]))
			}
			o := matvec(linear(p+"self_attn.o_proj.weight"), att)
			if gemma {
				add(x, norm(o, get(p+"post_attention_layernorm.weight")))
				xn = norm(x, get(p+"pre_feedforward_layernorm.weight"))
			} else {
				add(x, o)
				xn = norm(x, get(p+"post_attention_layernorm.weight"))
			}
			g := matvec(linear(p+"mlp.gate_proj.weight"), xn)
			u := matvec(linear(p+"mlp.up_proj.weight"), xn)
			for i := range g {
				g[i] = act(g[i]) * u[i]
			}
			if bitnet {
				g = norm(g, get(p+s.bitnetSubNormNames[1]))
			}
			m := matvec(linear(p+"mlp.down_proj.weight"), g)
			if gemma {
				m = norm(m, get(p+"post_feedforward_layernorm.weight"))
			}
			add(x, m)
		}
		out := matvec(head, norm(x, get("model.norm.weight")))
		if gemma && s.softcap > 0 {
			for i := range out {
				out[i] = s.softcap * math.Tanh(out[i]/s.softcap)
			}
		}
		logits = append(logits, out)
	}
	return logits
}
