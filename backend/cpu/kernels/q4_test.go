package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/quant"
)

// randQ4 returns rows x cols of random Q4_0 blocks (every nibble value,
// small float16 scales) as the file holds them, the matrix FromQ4_0 makes
// of them (4 bits), and its int8 twin (fromQ4_0Int8).
func randQ4(t testing.TB, rng *rand.Rand, rows, cols int) (data []byte, q4, i8 *Int8Mat) {
	t.Helper()
	data = make([]byte, rows*cols/32*18)
	for b := 0; b < len(data); b += 18 {
		h := quant.F32ToF16(float32(rng.NormFloat64() * 0.01))
		data[b], data[b+1] = byte(h), byte(h>>8)
		for i := 2; i < 18; i++ {
			data[b+i] = byte(rng.IntN(256))
		}
	}
	q4, err := FromQ4_0(rows, cols, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	i8, err = fromQ4_0Int8(rows, cols, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q4.nib == nil || i8.vals == nil {
		t.Fatal("FromQ4_0 or fromQ4_0Int8 chose the other layout")
	}
	return data, q4, i8
}

// TestQ4AgainstInt8: on every kernel path, a Q4_0 matrix kept in 4 bits
// gives the results of the same weights repacked to int8 up to the order
// of the float sums (four FMA chains a token against two: within float32
// rounding of the terms' magnitude), one token (MatVec) and batches of 1 to
// 9 (MatMat), over whole and partial row ranges, at widths of odd and even
// numbers of block pairs; and a token's results are the same bits alone as
// in a batch. (TestVNNIEqualsAVX2 holds the q4 kernels of every set to the
// same bits.)
func TestQ4AgainstInt8(t *testing.T) {
	rng := rand.New(rand.NewPCG(61, 62))
	eachPath(t, func(t *testing.T) {
		for _, cols := range []int{64, 128, 192, 320, 576, 1536, 2560, 6912} {
			rows := 1 + rng.IntN(70)
			tokens := 1 + rng.IntN(9)
			_, q4, i8 := randQ4(t, rng, rows, cols)
			a := newActs(t, randActs(rng, cols, tokens), cols, false)
			// mag[tok*rows+r]: the sum of the terms' magnitudes
			mag := make([]float64, tokens*rows)
			w := make([]float32, cols)
			for r := range rows {
				i8.Row(r, w)
				for tok := range tokens {
					for j, q := range a.token(tok) {
						mag[tok*rows+r] += math.Abs(float64(w[j]) * float64(q) * float64(a.InvScale[tok]))
					}
				}
			}
			r0 := rng.IntN(rows)
			r1 := r0 + 1 + rng.IntN(rows-r0)
			for _, rg := range [][2]int{{0, rows}, {r0, r1}} {
				for _, op := range []string{"MatVec", "MatMat"} {
					run := func(m *Int8Mat) []float32 {
						d := guarded(tokens * rows)
						if op == "MatVec" {
							m.MatVec(d, a, rg[0], rg[1])
						} else {
							m.MatMat(d, a, rg[0], rg[1])
						}
						return d
					}
					want, got := run(i8), run(q4)
					for i := range got {
						if got[i] == guard || want[i] == guard {
							if got[i] != want[i] {
								t.Fatalf("%dx%d %s rows [%d,%d): dst[%d] written by one layout only", rows, cols, op, rg[0], rg[1], i)
							}
							continue
						}
						if d := math.Abs(float64(got[i]) - float64(want[i])); !(d <= 1e-6*mag[i]+1e-9) {
							t.Fatalf("%dx%d %s rows [%d,%d) tokens %d: dst[%d] = %v in 4 bits, %v in int8 (terms %g)",
								rows, cols, op, rg[0], rg[1], tokens, i, got[i], want[i], mag[i])
						}
					}
				}
			}
			name := fmt.Sprintf("q4 %dx%d tokens %d", rows, cols, tokens)
			checkBatchExact(t, name, q4, a, rng, q4.rowsTok1)
		}
	})
}

// TestQ4Limits runs the q4 kernels at the ends of their ranges: every
// weight -8 or +7 (nibble 0 or 15) against activations all +127 or all
// -127, so each int16 pair (AVX2) and int32 lane is at its largest, on
// every path and token count.
func TestQ4Limits(t *testing.T) {
	const rows, cols = 3, 2560
	eachPath(t, func(t *testing.T) {
		for _, nib := range []byte{0x00, 0xff} {
			for _, act := range []float32{1, -1} {
				data := make([]byte, rows*cols/32*18)
				for b := 0; b < len(data); b += 18 {
					data[b], data[b+1] = 0x00, 0x3c // 1.0
					for i := 2; i < 18; i++ {
						data[b+i] = nib
					}
				}
				m, err := FromQ4_0(rows, cols, data, nil)
				if err != nil {
					t.Fatal(err)
				}
				for tokens := 1; tokens <= 5; tokens++ {
					x := make([]float32, tokens*cols)
					for i := range x {
						x[i] = act
					}
					a := newActs(t, x, cols, false)
					w := -8
					if nib != 0 {
						w = 7
					}
					want := float32(w*cols*127) * act * a.InvScale[0]
					d := guarded(tokens * rows)
					m.MatMat(d, a, 0, rows)
					v := guarded(rows)
					m.MatVec(v, a, 0, rows)
					for i, got := range append(d[:tokens*rows], v[:rows]...) {
						if got != want {
							t.Fatalf("nibbles %#x acts %v tokens %d: result %d = %v, want %v", nib, act, tokens, i, got, want)
						}
					}
				}
			}
		}
	})
}

// TestActsBias: Acts.Set writes each 4 activations' -8*sum on the assembly
// and Go paths alike, extremes included.
func TestActsBias(t *testing.T) {
	rng := rand.New(rand.NewPCG(63, 64))
	const cols, tokens = 320, 3
	x := randActs(rng, cols, tokens)
	for i := 0; i < 8; i++ { // a lane of +127s and one of -127s
		x[i] = float32(1-2*(i/4)) * 1e3
	}
	eachPath(t, func(t *testing.T) {
		a := newActs(t, x, cols, false)
		for l, got := range a.bias[:tokens*cols/4] {
			q := a.Q[4*l : 4*l+4]
			if want := -8 * (int32(q[0]) + int32(q[1]) + int32(q[2]) + int32(q[3])); got != want {
				t.Fatalf("lane %d: bias %d, want %d", l, got, want)
			}
		}
		if a.bias[0] != -8*4*127 || a.bias[1] != 8*4*127 {
			t.Fatalf("extreme lanes %d, %d", a.bias[0], a.bias[1])
		}
	})
}

// TestQ4Row: Row gives a 4-bit matrix's weights as the file's blocks
// dequantize.
func TestQ4Row(t *testing.T) {
	rng := rand.New(rand.NewPCG(65, 66))
	const rows, cols = 5, 576
	data, q4, _ := randQ4(t, rng, rows, cols)
	deq := make([]float32, rows*cols)
	if err := quant.Dequantize(quant.Q4_0, deq, data); err != nil {
		t.Fatal(err)
	}
	row := make([]float32, cols)
	for r := range rows {
		q4.Row(r, row)
		for i, v := range row {
			if v != deq[r*cols+i] {
				t.Fatalf("row %d element %d: %v, want %v", r, i, v, deq[r*cols+i])
			}
		}
	}
}

// TestQ4NeedsLaneBias: only 4-bit matrices ask for the lane biases, and
// their product on the assembly path refuses activations without them
// (their sums would be off by 8 times the activations) rather than run.
func TestQ4NeedsLaneBias(t *testing.T) {
	rng := rand.New(rand.NewPCG(67, 68))
	_, q4, i8 := randQ4(t, rng, 4, 128)
	if !NeedsLaneBias(q4) || NeedsLaneBias(i8) {
		t.Fatalf("NeedsLaneBias: 4-bit %v, int8 %v", NeedsLaneBias(q4), NeedsLaneBias(i8))
	}
	if !AVX2() {
		return // the Go path decodes the nibbles and reads no biases
	}
	a, _ := NewActs(128, 1)
	a.Set(randActs(rng, 128, 1))
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "EnableLaneBias") {
			t.Fatalf("product without lane biases: recovered %v", r)
		}
	}()
	q4.MatVec(make([]float32, 4), a, 0, 4)
}
