package kernels

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestTernaryRowKernels checks the one-token products of 2-bit rows with
// one scale each on the AVX2 kernels (ternaryDotS4 four rows a call for
// rows of up to 8 blocks, the rest of the rows and longer rows by the
// two-row kernel, rows from oneRowCols one at a time) bit for bit against the pure-Go path, on random
// signed inputs and on the extremes of the int16 sums (every code +1 or -1
// with activations all +-127), for widths with and without a 64-weight
// tail, odd row counts and row ranges.
func TestTernaryRowKernels(t *testing.T) {
	if !cpuAVX2 {
		t.Skip("no AVX2")
	}
	defer setISA("avx2")() // the VNNI paths take other kernels
	rng := rand.New(rand.NewPCG(21, 22))
	for _, cols := range []int{128, 192, 576, 960, 1024, 1088, 1152, 1536, 1600, 1984, oneRowCols, oneRowCols + 64, 2560} {
		for _, rows := range []int{1, 4, 5, 7, 8, 13, 67} {
			for _, kind := range []string{"random", "plus", "minus", "alternate"} {
				codes := make([]int8, rows*cols)
				scales := make([]float32, rows*cols/64)
				for r := 0; r < rows; r++ {
					s := float32(rng.NormFloat64())
					for b := 0; b < cols/64; b++ {
						scales[r*cols/64+b] = s
					}
				}
				x := randActs(rng, cols, 1)
				for i := range codes {
					switch kind {
					case "random":
						codes[i] = int8(rng.IntN(3) - 1)
					case "plus":
						codes[i] = 1
					case "minus":
						codes[i] = -1
					default:
						codes[i] = int8(1 - 2*(i%2))
					}
				}
				if kind != "random" {
					// every activation at +-127 after quantization
					for i := range x {
						x[i] = 3
						if kind == "alternate" && i%2 == 1 || kind == "minus" && i%3 == 0 {
							x[i] = -3
						}
					}
				}
				m, err := NewTernary(rows, cols, codes, scales, 64, TernaryOptions{Layout: Layout2Bit})
				if err != nil {
					t.Fatal(err)
				}
				if m.BlockScales() {
					t.Fatalf("%dx%d: per-block scales", rows, cols)
				}
				a := newActs(t, x, cols, false)
				for _, rg := range rowRanges(rng, rows) {
					r0, r1 := rg[0], rg[1]
					name := fmt.Sprintf("%s %dx%d [%d,%d)", kind, rows, cols, r0, r1)
					got, want := guarded(rows), guarded(rows)
					m.MatVec(got, a, r0, r1)
					prev := SetAVX2(false)
					m.MatVec(want, a, r0, r1)
					SetAVX2(prev)
					for i := range got {
						if got[i] != want[i] {
							t.Fatalf("%s: dst[%d] = %v, pure Go %v", name, i, got[i], want[i])
						}
					}
				}
			}
		}
	}
}

// TestQ8_0MatVec checks that a Q8_0 matrix's one-token product (the LM
// head's decode path, int8DotV1h32, which scales each row in the kernel)
// gives each row the bits the batched kernel gives the same token, on
// random blocks (-128 included), odd row counts and row ranges, and stays
// within its rows.
func TestQ8_0MatVec(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	for _, cols := range []int{64, 576, 2560} {
		for _, rows := range []int{1, 3, 8, 67} {
			data := make([]byte, rows*cols/32*34)
			for b := 0; b < rows*cols/32; b++ {
				blk := data[b*34 : b*34+34]
				h := uint16(0x2000 + rng.IntN(0x1800)) // positive and negative scales
				if rng.IntN(2) == 0 {
					h |= 0x8000
				}
				blk[0], blk[1] = byte(h), byte(h>>8)
				for i := 2; i < 34; i++ {
					blk[i] = byte(rng.IntN(256))
				}
			}
			m, err := FromQ8_0(rows, cols, data, nil)
			if err != nil {
				t.Fatal(err)
			}
			a := newActs(t, randActs(rng, cols, 2), cols, false)
			for _, rg := range [][2]int{{0, rows}, {rows / 2, rows}, {rows / 3, rows - rows/3}} {
				r0, r1 := rg[0], rg[1]
				dst, all := guarded(rows), guarded(2*rows)
				m.MatVec(dst, a, r0, r1)
				m.MatMat(all, a, r0, r1)
				checkGuards(t, dst, func(i int) bool { return i >= r0 && i < r1 })
				for r := r0; r < r1; r++ {
					if dst[r] != all[r] {
						t.Fatalf("%dx%d [%d,%d) row %d: MatVec %v, MatMat %v", rows, cols, r0, r1, r, dst[r], all[r])
					}
				}
			}
		}
	}
}
