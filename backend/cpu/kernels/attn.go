package kernels

import (
	"fmt"
	"math"

	"github.com/edgellm/edgellm/quant"
)

// AttnScores sets out[p] = q · k[p*stride : p*stride+len(q)] for every p <
// len(out) and returns the largest (-Inf for none): one query head against
// the cached keys of len(out) positions, stride floats apart. The sums'
// rounding order is the kernel's own (not a plain left-to-right sum). It
// panics, like a slice index, when k is too short.
func AttnScores(out, q, k []float32, stride int) (mx float32) {
	n, npos := len(q), len(out)
	mx = float32(math.Inf(-1))
	if npos == 0 || n == 0 {
		clear(out)
		return mx
	}
	if stride < n || len(k) < (npos-1)*stride+n {
		panic(fmt.Sprintf("kernels: AttnScores: %d keys of %d floats, %d apart, in %d", npos, n, stride, len(k)))
	}
	if useAVX2 && n%8 == 0 {
		return attnScores(&q[0], &k[0], 4*stride, n, npos, &out[0])
	}
	for p := range out {
		v := dotF32(q, k[p*stride:p*stride+n])
		out[p] = v
		if v > mx {
			mx = v
		}
	}
	return mx
}

// AttnMix adds w[p] * v[p*stride : p*stride+len(y)] to y for every p <
// len(w): the attention-weighted sum of the cached values of len(w)
// positions, stride floats apart.
func AttnMix(y, w, v []float32, stride int) {
	n, npos := len(y), len(w)
	if npos == 0 || n == 0 {
		return
	}
	if stride < n || len(v) < (npos-1)*stride+n {
		panic(fmt.Sprintf("kernels: AttnMix: %d values of %d floats, %d apart, in %d", npos, n, stride, len(v)))
	}
	if useAVX2 && n%8 == 0 {
		attnMix(&y[0], &w[0], &v[0], 4*stride, n, npos)
		return
	}
	for p, a := range w {
		x := v[p*stride : p*stride+n]
		for i := range y {
			y[i] += a * x[i]
		}
	}
}

// dotF32 is a float32 dot with four accumulators.
func dotF32(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// SoftmaxExp sets x[i] = e^(x[i]*scale - m) and returns their sum: the
// softmax numerators of scores x, m being the largest x[i]*scale. The
// assembly's exp is within a few ulp of math.Exp. Terms below e^-64 become
// exactly 0 on every path: they change no sum, and as weights of the
// values they would make denormal products, which slow the FMAs of
// AttnMix several times over.
func SoftmaxExp(x []float32, scale, m float32) (sum float32) {
	i := 0
	switch {
	case useAVX2 && useAVX512 && len(x) >= 16:
		i = len(x) &^ 7
		sum = softmaxExpZ(&x[0], i, scale, m)
	case useAVX2 && len(x) >= 8:
		i = len(x) &^ 7
		sum = softmaxExp(&x[0], i, scale, m)
	}
	for ; i < len(x); i++ {
		var e float32
		if a := x[i]*scale - m; a >= softmaxFlush {
			e = float32(math.Exp(float64(a)))
		}
		x[i] = e
		sum += e
	}
	return sum
}

// softmaxFlush is the exponent below which SoftmaxExp gives 0 (as the
// assembly's exp_flush).
const softmaxFlush = -64

// SiLUMul sets g[i] = silu(g[i]) * u[i] = g[i]/(1+e^-g[i]) * u[i]: the
// SwiGLU gate of a feed-forward layer.
func SiLUMul(g, u []float32) {
	u = u[:len(g)]
	i := 0
	if useAVX2 && len(g) >= 8 {
		i = len(g) &^ 7
		siluMul(&g[0], &u[0], i)
	}
	for ; i < len(g); i++ {
		v := g[i]
		g[i] = v / (1 + float32(math.Exp(float64(-v)))) * u[i]
	}
}

// AttnScoresF16 is AttnScores for keys stored as float16.
func AttnScoresF16(out, q []float32, k []uint16, stride int) (mx float32) {
	n, npos := len(q), len(out)
	mx = float32(math.Inf(-1))
	if npos == 0 || n == 0 {
		clear(out)
		return mx
	}
	if stride < n || len(k) < (npos-1)*stride+n {
		panic(fmt.Sprintf("kernels: AttnScoresF16: %d keys of %d values, %d apart, in %d", npos, n, stride, len(k)))
	}
	if useAVX2 && n%8 == 0 {
		return attnScoresH(&q[0], &k[0], 2*stride, n, npos, &out[0])
	}
	for p := range out {
		kp := k[p*stride : p*stride+n]
		var s0, s1 float32
		for i := 0; i+1 < n; i += 2 {
			s0 += q[i] * quant.F16ToF32(kp[i])
			s1 += q[i+1] * quant.F16ToF32(kp[i+1])
		}
		if n%2 != 0 {
			s0 += q[n-1] * quant.F16ToF32(kp[n-1])
		}
		v := s0 + s1
		out[p] = v
		if v > mx {
			mx = v
		}
	}
	return mx
}

// AttnMixF16 is AttnMix for values stored as float16.
func AttnMixF16(y, w []float32, v []uint16, stride int) {
	n, npos := len(y), len(w)
	if npos == 0 || n == 0 {
		return
	}
	if stride < n || len(v) < (npos-1)*stride+n {
		panic(fmt.Sprintf("kernels: AttnMixF16: %d values of %d, %d apart, in %d", npos, n, stride, len(v)))
	}
	if useAVX2 && n%8 == 0 {
		attnMixH(&y[0], &w[0], &v[0], 2*stride, n, npos)
		return
	}
	for p, a := range w {
		x := v[p*stride : p*stride+n]
		for i := range y {
			y[i] += a * quant.F16ToF32(x[i])
		}
	}
}

// ToF16 converts src to float16 in dst (as long), rounding to nearest even.
func ToF16(dst []uint16, src []float32) {
	dst = dst[:len(src)]
	i := 0
	if useAVX2 && len(src) >= 8 {
		i = len(src) &^ 7
		f32ToF16(&dst[0], &src[0], i)
	}
	for ; i < len(src); i++ {
		dst[i] = quant.F32ToF16(src[i])
	}
}

// AttnScoresF16G is AttnScoresF16 for the g = len(mx) query heads that
// share one KV head (grouped-query attention): q holds the g heads one
// after another (n = len(q)/g floats each); row h of scores,
// out[h*ostride : h*ostride+npos], gets q_h · k_p for the npos keys, and
// mx[h] its largest. Each key is read and converted once for the whole
// group. v, when not nil, holds the values of the same positions (kstride
// apart): the assembly prefetches them as it reads the keys, so that
// AttnMixF16G finds them in cache. It panics, like a slice index, when the
// shapes do not fit.
func AttnScoresF16G(out []float32, npos, ostride int, mx, q []float32, k []uint16, kstride int, v []uint16) {
	g := len(mx)
	if g == 0 || npos < 0 {
		return
	}
	n := len(q) / g
	if len(q)%g != 0 || ostride < npos || len(out) < (g-1)*ostride+npos || (npos > 0 && (kstride < n || len(k) < (npos-1)*kstride+n || v != nil && len(v) < (npos-1)*kstride+n)) {
		panic(fmt.Sprintf("kernels: AttnScoresF16G: %d heads, %d queries, %d positions in %d scores %d apart, stride %d, %d keys", g, len(q), npos, len(out), ostride, kstride, len(k)))
	}
	if npos == 0 || n == 0 || !useAVX2 || n%8 != 0 {
		for h := range g {
			mx[h] = AttnScoresF16(out[h*ostride:h*ostride+npos], q[h*n:(h+1)*n], k, kstride)
		}
		return
	}
	pv := &k[0]
	if v != nil {
		pv = &v[0]
	}
	z := useAVX512 && n%16 == 0
	// groups above 4 heads go 4 (then the rest) at a time
	for h := 0; h < g; {
		gg := min(g-h, 4)
		qh, oh, mh := &q[h*n], &out[h*ostride], &mx[h]
		switch {
		case z && gg == 1:
			attnScoresZG1(qh, &k[0], 2*kstride, n, npos, oh, 4*ostride, mh, pv)
		case z && gg == 2:
			attnScoresZG2(qh, &k[0], 2*kstride, n, npos, oh, 4*ostride, mh, pv)
		case z && gg == 3:
			attnScoresZG3(qh, &k[0], 2*kstride, n, npos, oh, 4*ostride, mh, pv)
		case z:
			attnScoresZG4(qh, &k[0], 2*kstride, n, npos, oh, 4*ostride, mh, pv)
		case gg == 1:
			attnScoresHG1(qh, &k[0], 2*kstride, n, npos, oh, 4*ostride, mh, pv)
		case gg == 2:
			attnScoresHG2(qh, &k[0], 2*kstride, n, npos, oh, 4*ostride, mh, pv)
		case gg == 3:
			attnScoresHG3(qh, &k[0], 2*kstride, n, npos, oh, 4*ostride, mh, pv)
		default:
			attnScoresHG4(qh, &k[0], 2*kstride, n, npos, oh, 4*ostride, mh, pv)
		}
		h += gg
	}
}

// AttnMixF16G is AttnMixF16 for the g query heads that share one KV head:
// y holds the g heads' outputs one after another (n = len(y)/g floats
// each), and y_h gets sum_p w_h[p] * v_p added for the npos values, w_h
// being w[h*wstride : h*wstride+npos]. Each value is read and converted
// once for the whole group.
func AttnMixF16G(y []float32, g int, w []float32, npos, wstride int, v []uint16, vstride int) {
	if g <= 0 || npos < 0 {
		if len(y) != 0 || g < 0 {
			panic(fmt.Sprintf("kernels: AttnMixF16G: %d heads, %d positions", g, npos))
		}
		return
	}
	n := len(y) / g
	if len(y)%g != 0 || wstride < npos || len(w) < (g-1)*wstride+npos || (npos > 0 && (vstride < n || len(v) < (npos-1)*vstride+n)) {
		panic(fmt.Sprintf("kernels: AttnMixF16G: %d heads, %d outputs, %d positions in %d weights %d apart, stride %d, %d values", g, len(y), npos, len(w), wstride, vstride, len(v)))
	}
	if npos == 0 || n == 0 || !useAVX2 || n%8 != 0 {
		for h := range g {
			AttnMixF16(y[h*n:(h+1)*n], w[h*wstride:h*wstride+npos], v, vstride)
		}
		return
	}
	z := useAVX512 && n%16 == 0
	for h := 0; h < g; {
		gg := min(g-h, 4)
		yh, wh := &y[h*n], &w[h*wstride]
		switch {
		case z && gg == 1:
			attnMixZG1(yh, wh, 4*wstride, &v[0], 2*vstride, n, npos)
		case z && gg == 2:
			attnMixZG2(yh, wh, 4*wstride, &v[0], 2*vstride, n, npos)
		case z && gg == 3:
			attnMixZG3(yh, wh, 4*wstride, &v[0], 2*vstride, n, npos)
		case z:
			attnMixZG4(yh, wh, 4*wstride, &v[0], 2*vstride, n, npos)
		case gg == 1:
			attnMixHG1(yh, wh, 4*wstride, &v[0], 2*vstride, n, npos)
		case gg == 2:
			attnMixHG2(yh, wh, 4*wstride, &v[0], 2*vstride, n, npos)
		case gg == 3:
			attnMixHG3(yh, wh, 4*wstride, &v[0], 2*vstride, n, npos)
		default:
			attnMixHG4(yh, wh, 4*wstride, &v[0], 2*vstride, n, npos)
		}
		h += gg
	}
}
