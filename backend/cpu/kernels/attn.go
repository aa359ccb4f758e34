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
	if useAVX2 && len(x) >= 8 {
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
