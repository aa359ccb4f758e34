package kernels

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/edgellm/edgellm/quant"
)

// TestAttnF16G checks the grouped-query kernels (assembly: groups of 1-4
// heads, larger groups 4 at a time; and Go) against float64 sums of the
// float16 keys and values, for group sizes 1 to 9, head sizes that the
// assembly takes and odd ones, 0 to 21 positions and a longer run (the
// assembly takes 8, 4 or 2 positions at a time, then 1s), odd strides,
// with guards around every output.
func TestAttnF16G(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	eachPath(t, func(t *testing.T) {
		for g := 1; g <= 9; g++ {
			for _, n := range []int{8, 16, 48, 64, 72, 80, 128, 5, 24} {
				for _, npos := range []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13, 17, 21, 67} {
					stride := n + 8*rng.IntN(3) + rng.IntN(2)
					q := randActs(rng, n*g, 1)
					f := randActs(rng, stride, npos+1)
					kv := make([]uint16, len(f))
					ToF16(kv, f)
					kv = kv[:max(0, (npos-1)*stride+n)]
					// all scores negative now and then: the max must not be 0
					if npos%3 == 1 {
						for i := range q {
							q[i] = float32(math.Abs(float64(q[i])))
						}
						for i, v := range kv {
							kv[i] = v | 0x8000
						}
					}
					var vp []uint16 // values to prefetch, or none
					if npos%2 == 0 {
						vp = kv
					}
					// score rows npos apart, or padded to an odd length
					os := npos + rng.IntN(3)
					out, mx := guarded(g*os), guarded(g)
					AttnScoresF16G(out[:max(0, (g-1)*os+npos)], npos, os, mx[:g], q, kv, stride, vp)
					checkGuards(t, out, func(i int) bool { return os > 0 && i%os < npos && i < g*os })
					checkGuards(t, mx, func(i int) bool { return i < g })
					for h := range g {
						wantMx := float32(math.Inf(-1))
						for p := range npos {
							var want, mag float64
							for j := range n {
								x := float64(q[h*n+j]) * float64(quant.F16ToF32(kv[p*stride+j]))
								want += x
								mag += math.Abs(x)
							}
							got := out[h*os+p]
							if math.Abs(float64(got)-want) > 1e-6*mag+1e-7 {
								t.Fatalf("g %d n %d npos %d: head %d score %d = %v, want %v", g, n, npos, h, p, got, want)
							}
							wantMx = max(wantMx, got)
						}
						if mx[h] != wantMx {
							t.Fatalf("g %d n %d npos %d: head %d max %v, want %v", g, n, npos, h, mx[h], wantMx)
						}
					}

					w := randActs(rng, g*os+1, 1)[:max(0, (g-1)*os+npos)]
					y := guarded(g * n)
					y0 := randActs(rng, g*n, 1)
					copy(y, y0)
					AttnMixF16G(y[:g*n], g, w, npos, os, kv, stride)
					checkGuards(t, y, func(i int) bool { return i < g*n })
					for h := range g {
						for j := range n {
							want, mag := float64(y0[h*n+j]), math.Abs(float64(y0[h*n+j]))
							for p := range npos {
								x := float64(w[h*os+p]) * float64(quant.F16ToF32(kv[p*stride+j]))
								want += x
								mag += math.Abs(x)
							}
							if got := y[h*n+j]; math.Abs(float64(got)-want) > 1e-6*mag+1e-7 {
								t.Fatalf("g %d n %d npos %d: head %d y[%d] = %v, want %v", g, n, npos, h, j, got, want)
							}
						}
					}
				}
			}
		}
	})
}

// TestAttnZEqualsAVX2 checks that the AVX-512 mix and exponentials give
// the AVX2 kernels' results bit for bit (each lane takes the same
// operations in the same order; only horizontal sums may differ), for
// group sizes 1 to 9 and head sizes the AVX-512 kernels take.
func TestAttnZEqualsAVX2(t *testing.T) {
	if !hasISA("avx512") {
		t.Skip("this CPU lacks avx512")
	}
	rng := rand.New(rand.NewPCG(43, 44))
	run := func(isa string, f func()) {
		defer setISA(isa)()
		f()
	}
	for g := 1; g <= 9; g++ {
		for _, n := range []int{16, 48, 64, 128} {
			npos := 1 + rng.IntN(70)
			stride := n + 16*rng.IntN(2)
			f := randActs(rng, stride, npos)
			v := make([]uint16, len(f))
			ToF16(v, f)
			w := randActs(rng, g*npos, 1)
			y0 := randActs(rng, g*n, 1)
			var ys [2][]float32
			for i, isa := range []string{"avx2", "avx512"} {
				ys[i] = append([]float32(nil), y0...)
				run(isa, func() { AttnMixF16G(ys[i], g, w, npos, npos, v, stride) })
			}
			for i := range y0 {
				if math.Float32bits(ys[0][i]) != math.Float32bits(ys[1][i]) {
					t.Fatalf("g %d n %d npos %d: mix y[%d] avx512 %v, avx2 %v", g, n, npos, i, ys[1][i], ys[0][i])
				}
			}
		}
	}
	for _, n := range []int{16, 24, 64, 72, 136, 200} {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(-rng.Float64() * 80)
		}
		var es [2][]float32
		for i, isa := range []string{"avx2", "avx512"} {
			es[i] = append([]float32(nil), x...)
			run(isa, func() { SoftmaxExp(es[i], 0.7, 0.25) })
		}
		for i := range x {
			if math.Float32bits(es[0][i]) != math.Float32bits(es[1][i]) {
				t.Fatalf("n %d: exp[%d] avx512 %v, avx2 %v", n, i, es[1][i], es[0][i])
			}
		}
	}
}

// TestAttnF16GShapes checks that mismatched shapes panic (as a slice
// index would) rather than read past the cache.
func TestAttnF16GShapes(t *testing.T) {
	k := make([]uint16, 64*3)
	for _, f := range []func(){
		func() { AttnScoresF16G(make([]float32, 6), 3, 3, make([]float32, 2), make([]float32, 127), k, 64, nil) }, // q not g heads
		func() { AttnScoresF16G(make([]float32, 8), 4, 4, make([]float32, 2), make([]float32, 128), k, 64, nil) }, // 4 positions, 3 keys
		func() { AttnScoresF16G(make([]float32, 6), 3, 4, make([]float32, 2), make([]float32, 128), k, 64, nil) }, // rows past the scores
		func() { AttnMixF16G(make([]float32, 128), 2, make([]float32, 8), 4, 4, k, 64) },                          // 4 positions, 3 values
		func() { AttnMixF16G(make([]float32, 128), 2, make([]float32, 6), 3, 3, k, 32) },                          // stride below n
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			f()
		}()
	}
}

// BenchmarkAttnF16G times the parts of one SmolLM-135M layer's decode
// attention at 384 positions (3 KV heads of 3 query heads, head dim 64),
// cache in L2: scores, softmax and mix, per layer.
func BenchmarkAttnF16G(b *testing.B) {
	const g, kvHeads, hd, npos = 3, 3, 64, 384
	rng := rand.New(rand.NewPCG(1, 2))
	f := randActs(rng, hd, kvHeads*npos)
	k, v := make([]uint16, len(f)), make([]uint16, len(f))
	ToF16(k, f)
	ToF16(v, f)
	q := randActs(rng, g*hd, kvHeads)
	sc, mx, y := make([]float32, g*npos), make([]float32, g), make([]float32, g*hd)
	scores := func() {
		for h := range kvHeads {
			AttnScoresF16G(sc, npos, npos, mx, q[h*g*hd:(h+1)*g*hd], k[h*npos*hd:], hd, v[h*npos*hd:])
		}
	}
	softmax := func() {
		for range kvHeads {
			for h := range g {
				SoftmaxExp(sc[h*npos:(h+1)*npos], 0.125, mx[h])
			}
		}
	}
	mix := func() {
		for h := range kvHeads {
			AttnMixF16G(y, g, sc, npos, npos, v[h*npos*hd:], hd)
		}
	}
	scores()
	for i := range mx {
		mx[i] *= 0.125
	}
	for _, p := range []struct {
		name string
		f    func()
	}{{"scores", scores}, {"softmax", softmax}, {"mix", mix}} {
		b.Run(p.name, func(b *testing.B) {
			for range b.N {
				p.f()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e3, "us/layer")
		})
	}
}
