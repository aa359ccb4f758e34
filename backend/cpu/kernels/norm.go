package kernels

import "math"

// RMSNorm writes x / sqrt(mean(x²) + eps) * w into out (out may be x): the
// reference's RMSNorm (model.RMSNorm) with its sum of squares taken in 16
// float64 lanes (element i in lane i%16) so that the assembly can keep
// four vectors of them, which the reference's one running sum cannot.
// Each square is rounded to float32 and each output is (x*scale)*w, as
// there; only the order of the float64 additions differs, so the scale
// matches the reference's to within float32 rounding (and almost always
// exactly). It runs on the calling thread between the pool's operations,
// where a scalar loop keeps the other threads waiting.
func RMSNorm(out, x, w []float32, eps float32) {
	n := len(x)
	out, w = out[:n], w[:n]
	var lanes [16]float64
	i := 0
	if useAVX2 && n >= 16 {
		i = n &^ 15
		sumSquares(&x[0], i, &lanes)
	}
	for ; i < n; i++ {
		lanes[i%16] += float64(x[i] * x[i])
	}
	var l4 [4]float64
	for j := range l4 {
		l4[j] = (lanes[j] + lanes[j+4]) + (lanes[j+8] + lanes[j+12])
	}
	ss := (l4[0] + l4[1]) + (l4[2] + l4[3])
	scale := float32(1 / math.Sqrt(ss/float64(n)+float64(eps)))
	i = 0
	if useAVX2 && n >= 8 {
		i = n &^ 7
		scaleMul(&out[0], &x[0], &w[0], i, scale)
	}
	for ; i < n; i++ {
		out[i] = x[i] * scale * w[i]
	}
}
