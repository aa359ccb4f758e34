package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestVNNIEqualsAVX2: MatVec and MatMat on the AVX-512 kernels, and on the
// AVX-VNNI ones, give the AVX2 kernels' results bit for bit, for ternary
// (Layout2Bit, one scale a row) and group-32 int8 matrices (Q8_0's float16
// scales, and float32 scales), over widths with and without a 64-weight
// tail, 1 to 9 tokens and row ranges at odd offsets. (eachPath's tests
// check each path against the oracle; this pins the assembly paths to each
// other.)
func TestVNNIEqualsAVX2(t *testing.T) {
	for _, isa := range []string{"avx512", "avxvnni"} {
		t.Run(isa, func(t *testing.T) {
			if !hasISA(isa) {
				t.Skip("this CPU lacks " + isa)
			}
			equalsAVX2(t, isa)
		})
	}
}

// equalsAVX2 is TestVNNIEqualsAVX2 for the kernels of vnni.
func equalsAVX2(t *testing.T, vnni string) {
	defer setISA("avx2")()
	rng := rand.New(rand.NewPCG(51, 52))
	for _, cols := range []int{64, 128, 192, 320, 576, 1536, 2048 - 64, 2560, 6912} {
		rows := 1 + rng.IntN(150)
		tokens := 1 + rng.IntN(9)
		tc := randTernary(rng, rows, cols, "row")
		tm, err := NewTernary(rows, cols, tc.codes, tc.bscale, 64, TernaryOptions{Layout: Layout2Bit})
		if err != nil {
			t.Fatal(err)
		}
		hm, vals, hs := randQ8Half(t, rng, rows, cols)
		fm, _ := newInt8MatHalf("Q8_0", rows, cols, vals, append([]uint16(nil), hs...))
		fm.toFloatScales(0.75, nil)
		_, q4, _ := randQ4(t, rng, rows, cols)
		a := newActs(t, randActs(rng, cols, tokens), cols, false)
		for _, m := range []struct {
			name string
			m    Matrix
		}{{"ternary", tm}, {"q8_0", hm}, {"int8 float", fm}, {"q4_0", q4}} {
			r0 := rng.IntN(rows)
			r1 := r0 + 1 + rng.IntN(rows-r0)
			for _, op := range []string{"MatVec", "MatMat"} {
				run := func(isa string) []float32 {
					defer setISA(isa)()
					if isa == "avx512" && !AVX512() || isa == "avxvnni" && !AVXVNNI() {
						t.Fatalf("%s kernels not selected", isa)
					}
					d := guarded(tokens * rows)
					if op == "MatVec" {
						m.m.MatVec(d, a, r0, r1)
					} else {
						m.m.MatMat(d, a, r0, r1)
					}
					return d
				}
				want, got := run("avx2"), run(vnni)
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("%s %dx%d %s rows [%d,%d) tokens %d: dst[%d] = %v on %s, %v on AVX2",
							m.name, rows, cols, op, r0, r1, tokens, i, got[i], vnni, want[i])
					}
				}
			}
		}
	}
}

// TestTernaryVNNILimits runs the AVX-512 and AVX-VNNI ternary kernels at
// their extremes: every code +1 with activations of +-127 (each
// accumulator lane at its largest) over the longest row they take, and
// rows one 128-block past 64 weights.
func TestTernaryVNNILimits(t *testing.T) {
	for _, isa := range []string{"avx512", "avxvnni"} {
		t.Run(isa, func(t *testing.T) {
			if !hasISA(isa) {
				t.Skip("this CPU lacks " + isa)
			}
			defer setISA(isa)()
			for _, cols := range []int{maxZCols, maxZCols - 64, 192} {
				for _, sign := range []int8{127, -127} {
					vnniLimit(t, cols, sign)
				}
			}
			if avx512On(maxZCols+64) || avxvnniOn(maxZCols+64) {
				t.Fatalf("rows over %d weights on a VNNI kernel", maxZCols)
			}
		})
	}
}

// vnniLimit checks one row of cols codes +1 against activations all sign,
// for 1 to 4 tokens, on the kernels selected.
func vnniLimit(t *testing.T, cols int, sign int8) {
	t.Helper()
	codes := make([]int8, cols)
	for i := range codes {
		codes[i] = 1
	}
	m, err := NewTernary(1, cols, codes, []float32{1}, cols, TernaryOptions{Layout: Layout2Bit})
	if err != nil {
		t.Fatal(err)
	}
	for nt := 1; nt <= 4; nt++ {
		q := make([]int8, nt*cols)
		for i := range q {
			q[i] = sign
		}
		out := make([]int32, 4)
		want := int32(2 * int(sign) * cols)
		if nt == 1 && avx512On(cols) {
			// One token runs the scaled kernel: scale 1, sum 0.
			var f [1]float32
			sum, inv := int32(0), float32(1)
			vecScaled(f[:], m.data, m.stride, q, cols, []float32{1}, &sum, &inv)
			if f[0] != float32(want) {
				t.Fatalf("cols %d sign %d: one token %v, want %d", cols, sign, f[0], want)
			}
			continue
		}
		dotsBatch(out, m.data, m.stride, q, cols, nt)
		for k := 0; k < nt; k++ {
			if out[k] != want {
				t.Fatalf("cols %d sign %d tokens %d: token %d dot %d, want %d", cols, sign, nt, k, out[k], want)
			}
		}
	}
}
