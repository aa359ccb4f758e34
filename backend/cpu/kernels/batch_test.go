package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/edgellm/edgellm/quant"
)

// TestTernaryBatchKernel checks the batched int kernels (assembly and Go)
// against plain int sums for every width up to 2560, 1 to 4 tokens, with
// the int16 worst case (every code +1, every activation ±127) at 1024 and
// 2048, and guards past the rows written.
func TestTernaryBatchKernel(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	eachPath(t, func(t *testing.T) {
		for cols := 64; cols <= 2560; cols += 64 {
			const rows = 5
			tc := randTernary(rng, rows, cols, "row")
			q := make([]int8, 4*cols)
			for i := range q {
				q[i] = int8(rng.IntN(255) - 127)
			}
			if cols == 1024 || cols == 2048 {
				for i := range tc.codes {
					tc.codes[i] = 1
				}
				for i := range q {
					q[i] = 127
					if cols == 2048 && i%cols >= cols/2 {
						q[i] = -127
					}
				}
			}
			m, err := NewTernary(rows, cols, tc.codes, tc.bscale, 64, TernaryOptions{Layout: Layout2Bit})
			if err != nil {
				t.Fatal(err)
			}
			for nt := 1; nt <= 4; nt++ {
				for n := 1; n <= rows; n++ {
					out := make([]int32, 4*n+4)
					for i := range out {
						out[i] = 12345
					}
					dotsBatch(out[:4*n], m.data, m.stride, q[:nt*cols], cols, nt)
					for r := 0; r < n; r++ {
						for k := 0; k < nt; k++ {
							var want int32
							for j := 0; j < cols; j++ {
								want += int32(tc.codes[r*cols+j]+1) * int32(q[k*cols+j])
							}
							if out[4*r+k] != want {
								t.Fatalf("cols %d tokens %d rows %d: row %d token %d dot %d, want %d", cols, nt, n, r, k, out[4*r+k], want)
							}
						}
					}
					for i := 4 * n; i < len(out); i++ {
						if out[i] != 12345 {
							t.Fatalf("cols %d tokens %d rows %d: wrote out[%d]", cols, nt, n, i)
						}
					}
				}
			}
		}
	})
}

// TestMatMatEqualsMatVec: for 1 to 9 tokens, every width (multiples of 64)
// and partial row ranges, each token's row of MatMat equals, bit for bit,
// the single-token kernel's result for that token (the int dots are exact
// and the scaling is the same expression), for ternary and Q8_0/Q4_0-style
// int8 matrices; it also matches the oracle.
func TestMatMatEqualsMatVec(t *testing.T) {
	rng := rand.New(rand.NewPCG(33, 34))
	eachPath(t, func(t *testing.T) {
		for cols := 64; cols <= 2560; cols += 64 {
			if cols > 1024 && cols%512 != 0 && cols != 2560-64 {
				continue // keep it quick: all small widths, a few wide ones
			}
			rows := 3 + rng.IntN(80)
			tokens := 1 + rng.IntN(9)
			if cols <= 576 {
				tokens = 1 + (cols/64-1)%9 // every count from 1 to 9
			}
			tc := randTernary(rng, rows, cols, "row")
			tm, err := NewTernary(rows, cols, tc.codes, tc.bscale, 64, TernaryOptions{Layout: Layout2Bit})
			if err != nil {
				t.Fatal(err)
			}
			a := newActs(t, randActs(rng, cols, tokens), cols, false)
			name := fmt.Sprintf("ternary %dx%d tokens %d", rows, cols, tokens)
			checkBatchExact(t, name, tm, a, rng, tm.rowsTok)
			checkTernary(t, name, tm, tc, a, rng)

			im, vals, hs := randQ8Half(t, rng, rows, cols)
			checkBatchExact(t, "int8 half "+name, im, a, rng, im.rowsTok1)
			fm, _ := newInt8MatHalf("Q8_0", rows, cols, vals, append([]uint16(nil), hs...))
			fm.toFloatScales(0.75, nil)
			checkBatchExact(t, "int8 float "+name, fm, a, rng, fm.rowsTok1)
		}
	})
}

// checkBatchExact compares MatMat over random row ranges with one(dst, a,
// token, r0, r1), the single-token path, bit for bit, with guards.
func checkBatchExact(t *testing.T, name string, m Matrix, a *Acts, rng *rand.Rand, one func(dst []float32, a *Acts, i, r0, r1 int)) {
	t.Helper()
	rows := m.Rows()
	r0 := rng.IntN(rows)
	for _, rg := range [][2]int{{0, rows}, {r0, r0 + 1 + rng.IntN(rows-r0)}} {
		all := guarded(a.Tokens * rows)
		m.MatMat(all, a, rg[0], rg[1])
		checkGuards(t, all, func(i int) bool { return i < a.Tokens*rows && i%rows >= rg[0] && i%rows < rg[1] })
		want := make([]float32, rows)
		for tok := 0; tok < a.Tokens; tok++ {
			one(want, a, tok, rg[0], rg[1])
			for r := rg[0]; r < rg[1]; r++ {
				if got := all[tok*rows+r]; got != want[r] {
					t.Fatalf("%s: rows [%d,%d) token %d row %d: MatMat %v, single-token %v", name, rg[0], rg[1], tok, r, got, want[r])
				}
			}
		}
	}
}

// TestAttn checks AttnScores and AttnMix (assembly and Go) against float64
// sums for head sizes of 8 to 160 (and odd ones on the Go path), 0 to 21
// positions (the assembly takes 8, then 4 at a time, then 1s), with guards.
func TestAttn(t *testing.T) {
	rng := rand.New(rand.NewPCG(35, 36))
	eachPath(t, func(t *testing.T) {
		for _, n := range []int{8, 16, 24, 56, 64, 72, 128, 136, 160, 5, 17} {
			for npos := 0; npos <= 21; npos++ {
				stride := n + 8*rng.IntN(3)
				q := randActs(rng, n, 1)
				kv := randActs(rng, stride, npos+1)[:max(0, (npos-1)*stride+n)]
				out := guarded(npos)
				// all scores negative now and then: the max must not be 0
				if npos%3 == 1 {
					for i := range q {
						q[i] = float32(math.Abs(float64(q[i])))
					}
					for i := range kv {
						kv[i] = -float32(math.Abs(float64(kv[i])))
					}
				}
				mx := AttnScores(out[:npos], q, kv, stride)
				checkGuards(t, out, func(i int) bool { return i < npos })
				wantMx := float32(math.Inf(-1))
				for _, v := range out[:npos] {
					wantMx = max(wantMx, v)
				}
				if mx != wantMx {
					t.Fatalf("n %d npos %d: max %v, want %v", n, npos, mx, wantMx)
				}
				w := randActs(rng, npos+1, 1)[:npos]
				y := guarded(n)
				y0 := randActs(rng, n, 1)
				copy(y, y0)
				AttnMix(y[:n], w, kv, stride)
				checkGuards(t, y, func(i int) bool { return i < n })
				for p := 0; p < npos; p++ {
					var want, mag float64
					for j := 0; j < n; j++ {
						x := float64(q[j]) * float64(kv[p*stride+j])
						want += x
						mag += math.Abs(x)
					}
					if math.Abs(float64(out[p])-want) > 1e-6*mag+1e-7 {
						t.Fatalf("n %d npos %d: score %d = %v, want %v", n, npos, p, out[p], want)
					}
				}
				for j := 0; j < n; j++ {
					want, mag := float64(y0[j]), math.Abs(float64(y0[j]))
					for p := 0; p < npos; p++ {
						x := float64(w[p]) * float64(kv[p*stride+j])
						want += x
						mag += math.Abs(x)
					}
					if math.Abs(float64(y[j])-want) > 1e-6*mag+1e-7 {
						t.Fatalf("n %d npos %d: y[%d] = %v, want %v", n, npos, j, y[j], want)
					}
				}
			}
		}
	})
}

// TestExpKernels checks SoftmaxExp and SiLUMul against math.Exp over the
// whole useful range (both ends clamped), every length 0..40 and longer
// ones (the AVX-512 softmax takes 64, then 16, then 8 at a time).
func TestExpKernels(t *testing.T) {
	rng := rand.New(rand.NewPCG(37, 38))
	lens := []int{63, 64, 65, 72, 88, 100, 129, 200}
	for n := 40; n >= 0; n-- {
		lens = append([]int{n}, lens...)
	}
	eachPath(t, func(t *testing.T) {
		for _, n := range lens {
			x := make([]float32, n)
			for i := range x {
				// scores at most the max (scaled), as softmax has them
				x[i] = float32(-rng.Float64() * 100)
				if i%5 == 0 {
					x[i] = float32(-rng.Float64() * 3)
				}
			}
			scale, m := float32(0.5+rng.Float64()), float32(rng.Float64()-0.5)
			y := append([]float32(nil), x...)
			sum := SoftmaxExp(y, scale, m)
			var wantSum float64
			for i, v := range x {
				arg := float64(v*scale - m)
				want := math.Exp(arg)
				wantSum += want
				got := float64(y[i])
				if arg < softmaxFlush {
					if got != 0 {
						t.Fatalf("exp(%v) = %v, want 0 (flushed)", arg, got)
					}
					wantSum -= want
					continue
				}
				if math.Abs(got-want) > 4e-7*want {
					t.Fatalf("exp(%v) = %v, want %v", arg, got, want)
				}
			}
			if math.Abs(float64(sum)-wantSum) > 1e-6*wantSum {
				t.Fatalf("n %d: sum %v, want %v", n, sum, wantSum)
			}
			g := make([]float32, n)
			u := make([]float32, n)
			for i := range g {
				g[i], u[i] = float32(rng.NormFloat64()*6), float32(rng.NormFloat64())
			}
			g0 := append([]float32(nil), g...)
			SiLUMul(g, u)
			for i, v := range g0 {
				want := float64(v) / (1 + math.Exp(-float64(v))) * float64(u[i])
				if math.Abs(float64(g[i])-want) > 1e-6*math.Abs(want)+1e-30 {
					t.Fatalf("silu(%v)*%v = %v, want %v", v, u[i], g[i], want)
				}
			}
		}
	})
}

// TestAttnF16 checks the float16 cache kernels against float64 sums of the
// float16 values, and ToF16 against quant.F32ToF16 (same bits), every
// length, both paths.
func TestAttnF16(t *testing.T) {
	rng := rand.New(rand.NewPCG(39, 40))
	eachPath(t, func(t *testing.T) {
		for _, n := range []int{8, 16, 64, 72, 128, 5} {
			for npos := 0; npos <= 21; npos++ {
				stride := n + 8*rng.IntN(3)
				q := randActs(rng, n, 1)
				f := randActs(rng, stride, npos+1)
				kv := make([]uint16, len(f))
				ToF16(kv, f)
				for i, v := range f {
					if kv[i] != quant.F32ToF16(v) {
						t.Fatalf("ToF16(%v) = %#x, want %#x", v, kv[i], quant.F32ToF16(v))
					}
				}
				kv = kv[:max(0, (npos-1)*stride+n)]
				out := guarded(npos)
				mx := AttnScoresF16(out[:npos], q, kv, stride)
				checkGuards(t, out, func(i int) bool { return i < npos })
				wantMx := float32(math.Inf(-1))
				for p := 0; p < npos; p++ {
					var want, mag float64
					for j := 0; j < n; j++ {
						x := float64(q[j]) * float64(quant.F16ToF32(kv[p*stride+j]))
						want += x
						mag += math.Abs(x)
					}
					if math.Abs(float64(out[p])-want) > 1e-6*mag+1e-7 {
						t.Fatalf("n %d npos %d: score %d = %v, want %v", n, npos, p, out[p], want)
					}
					wantMx = max(wantMx, out[p])
				}
				if mx != wantMx {
					t.Fatalf("n %d npos %d: max %v, want %v", n, npos, mx, wantMx)
				}
				w := randActs(rng, npos+1, 1)[:npos]
				y := guarded(n)
				y0 := randActs(rng, n, 1)
				copy(y, y0)
				AttnMixF16(y[:n], w, kv, stride)
				checkGuards(t, y, func(i int) bool { return i < n })
				for j := 0; j < n; j++ {
					want, mag := float64(y0[j]), math.Abs(float64(y0[j]))
					for p := 0; p < npos; p++ {
						x := float64(w[p]) * float64(quant.F16ToF32(kv[p*stride+j]))
						want += x
						mag += math.Abs(x)
					}
					if math.Abs(float64(y[j])-want) > 1e-6*mag+1e-7 {
						t.Fatalf("n %d npos %d: y[%d] = %v, want %v", n, npos, j, y[j], want)
					}
				}
			}
		}
	})
}
