package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestRMSNorm: on every path, RMSNorm against a float64 reference over odd
// widths (tails of every length, in place and not), and each assembly
// path against the pure-Go one bit for bit.
func TestRMSNorm(t *testing.T) {
	rng := rand.New(rand.NewPCG(71, 72))
	widths := []int{1, 7, 8, 15, 16, 17, 33, 64, 576, 577, 1536, 2560, 2571, 6912}
	type tc struct{ x, w []float32 }
	cases := make([]tc, len(widths))
	for k, n := range widths {
		x, w := make([]float32, n), make([]float32, n)
		scale := float32(math.Exp(rng.Float64()*20 - 10)) // magnitudes far from 1
		for i := range x {
			x[i] = float32(rng.NormFloat64()) * scale
			w[i] = float32(rng.NormFloat64())
		}
		cases[k] = tc{x, w}
	}
	run := func(c tc, inPlace bool) []float32 {
		out := make([]float32, len(c.x))
		if inPlace {
			copy(out, c.x)
			RMSNorm(out, out, c.w, 1e-6)
			return out
		}
		RMSNorm(out, c.x, c.w, 1e-6)
		return out
	}
	restore := setISA("go")
	var want [][]float32
	for _, c := range cases {
		want = append(want, run(c, false))
	}
	restore()
	eachPath(t, func(t *testing.T) {
		for k, c := range cases {
			var ss float64
			for _, v := range c.x {
				ss += float64(v) * float64(v)
			}
			s := 1 / math.Sqrt(ss/float64(len(c.x))+1e-6)
			for _, inPlace := range []bool{false, true} {
				got := run(c, inPlace)
				for i, g := range got {
					ref := float64(c.x[i]) * s * float64(c.w[i])
					if d := math.Abs(float64(g) - ref); d > 1e-6*math.Abs(ref)+1e-30 {
						t.Fatalf("width %d in place %v: out[%d] = %g, float64 %g", len(c.x), inPlace, i, g, ref)
					}
					if math.Float32bits(g) != math.Float32bits(want[k][i]) {
						t.Fatalf("width %d in place %v: out[%d] = %g, pure Go %g", len(c.x), inPlace, i, g, want[k][i])
					}
				}
			}
		}
	})
}
