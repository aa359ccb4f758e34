package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/edgellm/edgellm/quant"
)

// eachPath runs f on every kernel path: pure Go, AVX2 (where the CPU and
// the build have it) and AVX-512 VNNI (skipped where they lack it).
func eachPath(t *testing.T, f func(t *testing.T)) {
	for _, isa := range isas {
		if isa == "avx2" && !cpuAVX2 {
			continue
		}
		t.Run(isa, func(t *testing.T) {
			if !hasISA(isa) {
				t.Skip("this CPU lacks " + isa)
			}
			defer setISA(isa)()
			f(t)
		})
	}
}

// isas are the kernel paths, slowest first.
var isas = []string{"go", "avx2", "avxvnni", "avx512"}

// hasISA reports whether this CPU and build run isa.
func hasISA(isa string) bool {
	switch isa {
	case "avx2":
		return cpuAVX2
	case "avxvnni":
		return cpuAVXVNNI
	case "avx512":
		return cpuAVX512
	}
	return true
}

// setISA selects the kernels of isa ("go", "avx2", "avxvnni" or "avx512") and returns
// a func that restores the previous selection.
func setISA(isa string) (restore func()) {
	p2 := SetAVX2(isa != "go")
	pv := SetAVXVNNI(isa == "avxvnni")
	p5 := SetAVX512(isa == "avx512")
	return func() {
		SetAVX512(p5)
		SetAVXVNNI(pv)
		SetAVX2(p2)
	}
}

// randActs returns tokens random activation vectors of cols, signed, with
// an outlier now and then (so absmax matters).
func randActs(rng *rand.Rand, cols, tokens int) []float32 {
	x := make([]float32, cols*tokens)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
		if rng.IntN(97) == 0 {
			x[i] *= 20
		}
	}
	return x
}

// newActs quantizes x; lut says whether the LUT tables are built (NewActs
// enables them by itself without assembly; false removes them).
func newActs(t *testing.T, x []float32, cols int, lut bool) *Acts {
	t.Helper()
	a, err := NewActs(cols, len(x)/cols)
	if err != nil {
		t.Fatal(err)
	}
	if lut {
		a.EnableLUT()
	} else {
		a.lut, a.tl = nil, nil
	}
	a.EnableLaneBias() // for every matrix a test may pass it to
	a.Set(x)
	return a
}

const guard = float32(-777.25)

// guarded returns a dst of n+3 values all set to guard.
func guarded(n int) []float32 {
	d := make([]float32, n+3)
	for i := range d {
		d[i] = guard
	}
	return d
}

// checkGuards fails when dst changed outside the rows written.
func checkGuards(t *testing.T, dst []float32, written func(i int) bool) {
	t.Helper()
	for i, v := range dst {
		if !written(i) && v != guard {
			t.Fatalf("dst[%d] = %v outside the rows written", i, v)
		}
	}
}

func TestQuantizeActs(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 7, 64, 576, 2560} {
		x := randActs(rng, n, 1)
		q := make([]int8, n)
		s, sum := QuantizeActs(x, q)
		var m float64
		for _, v := range x {
			m = math.Max(m, math.Abs(float64(v)))
		}
		if want := 127 / float32(m); s != want {
			t.Fatalf("n=%d: scale %v, want %v", n, s, want)
		}
		var wantSum int32
		sawMax := false
		for i, v := range x {
			want := math.RoundToEven(float64(v * s))
			if float64(q[i]) != want {
				t.Fatalf("n=%d: q[%d] = %d, want %v", n, i, q[i], want)
			}
			if q[i] == 127 || q[i] == -127 {
				sawMax = true
			}
			wantSum += int32(q[i])
		}
		if sum != wantSum || !sawMax {
			t.Fatalf("n=%d: sum %d want %d, max reached %v", n, sum, wantSum, sawMax)
		}
	}
	// zeros, NaN and Inf never give a code outside [-127, 127]
	x := []float32{0, float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), 1e-30}
	q := make([]int8, len(x))
	s, _ := QuantizeActs(x, q)
	if math.IsNaN(float64(s)) || math.IsInf(float64(s), 0) {
		t.Fatalf("scale %v", s)
	}
	for i, v := range q {
		if v < -127 {
			t.Fatalf("q[%d] = %d", i, v)
		}
	}
	if q[0] != 0 || q[1] != 0 {
		t.Fatalf("zero/NaN quantized to %d, %d", q[0], q[1])
	}
}

func TestActsSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	eachPath(t, func(t *testing.T) {
		for _, cols := range []int{64, 192, 576, 2560} {
			x := randActs(rng, cols, 3)
			// specials: zeros, a NaN, an Inf, tiny values
			copy(x[cols:], make([]float32, cols))
			x[2*cols+5] = float32(math.NaN())
			if cols > 64 {
				x[2*cols+70] = float32(math.Inf(-1))
			}
			a := newActs(t, x, cols, false)
			nb := cols / 64
			for i := 0; i < 3; i++ {
				q := make([]int8, cols)
				s, sum := QuantizeActs(x[i*cols:(i+1)*cols], q)
				if a.Scale[i] != s || a.Sum[i] != sum || a.InvScale[i] != 1/s {
					t.Fatalf("cols %d token %d: scale %v sum %d, want %v %d", cols, i, a.Scale[i], a.Sum[i], s, sum)
				}
				for j, v := range q {
					if a.Q[i*cols+j] != v {
						t.Fatalf("cols %d token %d: q[%d] = %d, want %d", cols, i, j, a.Q[i*cols+j], v)
					}
				}
				for b := 0; b < nb; b++ {
					var bs int32
					for _, v := range q[b*64 : b*64+64] {
						bs += int32(v)
					}
					if a.BlockSum[i*nb+b] != bs {
						t.Fatalf("cols %d token %d block %d: sum %d want %d", cols, i, b, a.BlockSum[i*nb+b], bs)
					}
				}
			}
		}
	})
	// ties round half to even on every path (max 127 makes s exactly 1)
	eachPath(t, func(t *testing.T) {
		x := make([]float32, 64)
		x[0] = 127
		for i := 1; i < 64; i++ {
			x[i] = float32(i%20) - 9.5
		}
		a := newActs(t, x, 64, false)
		for i := 1; i < 64; i++ {
			if want := int8(math.RoundToEven(float64(x[i]))); a.Q[i] != want {
				t.Fatalf("%v quantized to %d, want %d", x[i], a.Q[i], want)
			}
		}
	})
	if _, err := NewActs(100, 1); err == nil {
		t.Fatal("cols 100 accepted")
	}
	a, _ := NewActs(192, 1)
	defer func() {
		if recover() == nil {
			t.Fatal("Set of a partial token did not panic")
		}
	}()
	a.Set(make([]float32, 100))
}

// ternaryCase is a random ternary matrix with its scales per 64 weights.
type ternaryCase struct {
	rows, cols int
	codes      []int8
	bscale     []float32 // per 64 weights, row-major
}

// randTernary makes codes with some all-zero 64-blocks; kind "row" gives each
// row one scale (0 on its all-zero blocks, as TQ2_0 stores them), "block"
// a random scale per block.
func randTernary(rng *rand.Rand, rows, cols int, kind string) ternaryCase {
	tc := ternaryCase{rows: rows, cols: cols, codes: make([]int8, rows*cols), bscale: make([]float32, rows*cols/64)}
	for r := 0; r < rows; r++ {
		d := float32(0.5 + rng.Float64())
		for b := 0; b < cols/64; b++ {
			k := r*cols/64 + b
			zero := rng.IntN(7) == 0
			for j := 0; j < 64; j++ {
				if !zero {
					tc.codes[k*64+j] = int8(rng.IntN(3)) - 1
				}
			}
			switch {
			case kind == "block":
				tc.bscale[k] = float32(0.5 + rng.Float64())
			case zero:
				tc.bscale[k] = 0
			default:
				tc.bscale[k] = d
			}
		}
	}
	return tc
}

// refRow is the oracle: the int dot of each 64-block (exact, in int64), then
// the float64 sum of scale*dot / s, and the sum of magnitudes for the
// tolerance.
func refRow(codes []int8, bscale []float32, q []int8, inv float32) (want, mag float64) {
	for b := range bscale {
		var d, m int64
		for j := b * 64; j < b*64+64; j++ {
			p := int64(codes[j]) * int64(q[j])
			d += p
			m += max(p, -p)
		}
		want += float64(bscale[b]) * float64(d)
		mag += math.Abs(float64(bscale[b])) * float64(m)
	}
	return want * float64(inv), mag * float64(inv)
}

func closeTo(got float32, want, mag float64) bool {
	return math.Abs(float64(got)-want) <= 2e-6*mag+1e-6
}

func TestTernaryIntKernels(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	eachPath(t, func(t *testing.T) {
		// up to 20 128-blocks: the assembly takes 8 at a time, then 1s, then
		// a 64 tail
		for cols := 64; cols <= 2560; cols += 64 {
			tc := randTernary(rng, 9, cols, "row")
			m, err := NewTernary(9, cols, tc.codes, tc.bscale, 64, TernaryOptions{Layout: Layout2Bit})
			if err != nil {
				t.Fatal(err)
			}
			q := make([]int8, cols)
			for i := range q {
				q[i] = int8(rng.IntN(255) - 127)
			}
			switch cols {
			case 1024, 2048:
				// the int16 sums' worst case: every code +1, every q ±127
				for i := range tc.codes {
					tc.codes[i] = 1
				}
				m, _ = NewTernary(9, cols, tc.codes, tc.bscale, 64, TernaryOptions{Layout: Layout2Bit})
				for i := range q {
					q[i] = 127
					if cols == 2048 {
						q[i] = -127
					}
				}
			}
			for _, n := range []int{1, 3, 4, 5, 8, 9} {
				out := make([]int32, n+1)
				out[n] = 12345
				dots(out[:n], m.data, m.stride, q)
				for r := 0; r < n; r++ {
					var want int32
					for j := 0; j < cols; j++ {
						want += int32(tc.codes[r*cols+j]+1) * int32(q[j])
					}
					if out[r] != want {
						t.Fatalf("cols %d rows %d: row %d dot %d, want %d", cols, n, r, out[r], want)
					}
				}
				if out[n] != 12345 {
					t.Fatalf("cols %d: dots wrote past its rows", cols)
				}
			}
			bd := make([]int32, cols/64+1)
			bd[cols/64] = 12345
			blockDots(bd[:cols/64], m.data[:m.stride], q)
			for b := 0; b < cols/64; b++ {
				var want int32
				for j := b * 64; j < b*64+64; j++ {
					want += int32(tc.codes[j]+1) * int32(q[j])
				}
				if bd[b] != want {
					t.Fatalf("cols %d: block %d dot %d, want %d", cols, b, bd[b], want)
				}
			}
			if bd[cols/64] != 12345 {
				t.Fatalf("cols %d: blockDots wrote past its blocks", cols)
			}
		}
	})
}

func TestTernaryMatVec(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	type variant struct {
		layout Layout
		kind   string // "row" or "block" scales
		force  bool   // BlockScales option
		tables bool   // Acts with LUT tables
	}
	var variants []variant
	for _, l := range []Layout{LayoutAuto, Layout2Bit, LayoutLUT, LayoutTL} {
		variants = append(variants, variant{l, "row", false, true}, variant{l, "block", false, true}, variant{l, "row", true, true})
	}
	variants = append(variants, variant{LayoutLUT, "row", false, false}, variant{LayoutLUT, "block", false, false}, variant{LayoutTL, "row", false, false})
	eachPath(t, func(t *testing.T) {
		var colsList []int
		for cols := 64; cols <= 1024; cols += 64 {
			colsList = append(colsList, cols)
		}
		colsList = append(colsList, 1600, 2560) // past the 8-block unroll
		for _, v := range variants {
			for _, cols := range colsList {
				rowsList := []int{1, 3, 4, 6, 9, 13}
				if v.layout == LayoutTL && cols%256 == 0 {
					rowsList = append(rowsList, 32, 45, 70) // several tiles, partial ones
				}
				for _, rows := range rowsList {
					tc := randTernary(rng, rows, cols, v.kind)
					m, err := NewTernary(rows, cols, tc.codes, tc.bscale, 64, TernaryOptions{Layout: v.layout, BlockScales: v.force})
					if err != nil {
						t.Fatal(err)
					}
					// random per-block scales of a row of one or two blocks
					// may happen to leave it uniform; wider rows may not
					if got, want := m.BlockScales(), v.kind == "block" || v.force; got != want && (v.kind == "row" || cols >= 512) {
						t.Fatalf("%v %s: BlockScales() = %v", v.layout, v.kind, got)
					}
					const tokens = 3
					x := randActs(rng, cols, tokens)
					a := newActs(t, x, cols, v.tables)
					if v.layout == LayoutAuto && m.Layout() != map[bool]Layout{true: Layout2Bit, false: LayoutLUT}[AVX2()] {
						t.Fatalf("LayoutAuto chose %v with AVX2 %v", m.Layout(), AVX2())
					}
					if v.layout == LayoutTL && m.Layout() != map[bool]Layout{true: Layout2Bit, false: LayoutTL}[m.BlockScales()] {
						t.Fatalf("LayoutTL with block scales %v gave %v", m.BlockScales(), m.Layout())
					}
					name := fmt.Sprintf("%v/%s/force=%v/tables=%v/%dx%d", v.layout, v.kind, v.force, v.tables, rows, cols)
					checkTernary(t, name, m, tc, a, rng)
				}
			}
		}
	})
}

func checkTernary(t *testing.T, name string, m Matrix, tc ternaryCase, a *Acts, rng *rand.Rand) {
	t.Helper()
	rows, cols := tc.rows, tc.cols
	nb := cols / 64
	want := func(tok, r int) (float64, float64) {
		return refRow(tc.codes[r*cols:(r+1)*cols], tc.bscale[r*nb:(r+1)*nb], a.token(tok), a.InvScale[tok])
	}
	ranges := [][2]int{{0, rows}, {rows / 2, rows}, {0, 0}}
	if rows > 2 {
		r0 := rng.IntN(rows - 1)
		ranges = append(ranges, [2]int{1, rows - 1}, [2]int{r0, r0 + 1 + rng.IntN(rows-r0)})
	}
	for _, rg := range ranges {
		r0, r1 := rg[0], rg[1]
		in := func(i int) bool { return i >= r0 && i < r1 }
		dst := guarded(rows)
		m.MatVec(dst, a, r0, r1)
		checkGuards(t, dst, in)
		for r := r0; r < r1; r++ {
			if w, mag := want(0, r); !closeTo(dst[r], w, mag) {
				t.Fatalf("%s: MatVec [%d,%d) row %d = %v, want %v", name, r0, r1, r, dst[r], w)
			}
		}
		all := guarded(a.Tokens * rows)
		m.MatMat(all, a, r0, r1)
		checkGuards(t, all, func(i int) bool { return i < a.Tokens*rows && in(i%rows) })
		for tok := 0; tok < a.Tokens; tok++ {
			for r := r0; r < r1; r++ {
				if w, mag := want(tok, r); !closeTo(all[tok*rows+r], w, mag) {
					t.Fatalf("%s: MatMat token %d row %d = %v, want %v", name, tok, r, all[tok*rows+r], w)
				}
			}
		}
		// the first token through MatMat is the same computation as MatVec
		for r := r0; r < r1; r++ {
			if all[r] != dst[r] {
				t.Fatalf("%s: MatMat row %d = %v, MatVec %v", name, r, all[r], dst[r])
			}
		}
	}
}

func TestNewTernaryErrors(t *testing.T) {
	codes := make([]int8, 2*128)
	ok := func(rows, cols int, c []int8, s []float32, g int) error {
		_, err := NewTernary(rows, cols, c, s, g, TernaryOptions{})
		return err
	}
	if err := ok(2, 128, codes, []float32{1, 1}, 128); err != nil {
		t.Fatal(err)
	}
	bad := append([]int8(nil), codes...)
	bad[77] = 2
	for name, err := range map[string]error{
		"code 2":      ok(2, 128, bad, []float32{1, 1}, 128),
		"cols 100":    ok(2, 100, codes[:200], []float32{1, 1}, 100),
		"short codes": ok(2, 128, codes[:255], []float32{1, 1}, 128),
		"scale count": ok(2, 128, codes, []float32{1}, 128),
		"group 96":    ok(2, 128, codes, []float32{1, 1}, 96),
		"NaN scale":   ok(2, 128, codes, []float32{1, float32(math.NaN())}, 128),
		"zero rows":   ok(0, 128, nil, nil, 128),
		"huge":        ok(1<<20, 1<<20, codes, []float32{1}, 64),
		"bad layout": func() error {
			_, e := NewTernary(2, 128, codes, []float32{1, 1}, 128, TernaryOptions{Layout: 9})
			return e
		}(),
		"bad fromq len": func() error { _, e := FromQuant(quant.TQ2_0, 2, 256, make([]byte, 131), 1, TernaryOptions{}); return e }(),
		"fromq type":    func() error { _, e := FromQuant(quant.Q4_K, 1, 256, make([]byte, 144), 1, TernaryOptions{}); return e }(),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	// per-tensor scale (I2_S style) and one row scale shared by rows
	m, err := NewTernary(2, 128, codes, []float32{3}, 256, TernaryOptions{})
	if err != nil || m.BlockScales() {
		t.Fatalf("per-tensor scale: %v, block scales %v", err, m != nil && m.BlockScales())
	}
}

// TestFromQuantTernary walks each ternary file type through quant's own
// encoder and decoder: the packed product must match the dequantized
// weights' product with the int8 activations.
func TestFromQuantTernary(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, typ := range []quant.Type{quant.TQ2_0, quant.TQ1_0, quant.Q2_0, quant.I2_S, quant.I2_S_ARM} {
		for _, cols := range []int{256, 512, 768} {
			rows := 5
			// BitNet-like weights: one magnitude per tensor, some zero blocks
			w := make([]float32, rows*cols)
			for i := range w {
				if (i/64)%5 != 3 {
					w[i] = 0.37 * float32(rng.IntN(3)-1)
				}
			}
			rb, _ := typ.RowBytes(cols)
			data := make([]byte, rb*rows)
			scale := float32(1)
			if quant.IsI2S(typ) {
				// Codes only: the per-tensor scale is FromQuant's argument.
				scale = quant.TernaryScale(w)
				if err := quant.Quantize(typ, data, w); err != nil {
					t.Fatal(err)
				}
			} else if err := quant.Quantize(typ, data, w); err != nil {
				t.Fatal(err)
			}
			// weight = deq*scale: Dequantize leaves I2_S's per-tensor scale
			// to the caller, and scale is 1 for the other types
			deq := make([]float32, rows*cols)
			if err := quant.Dequantize(typ, deq, data); err != nil {
				t.Fatal(err)
			}
			for _, layout := range []Layout{Layout2Bit, LayoutLUT, LayoutTL} {
				mm, err := FromQuant(typ, rows, cols, data, scale, TernaryOptions{Layout: layout})
				if err != nil {
					t.Fatalf("%v: %v", typ, err)
				}
				if mm.(*Ternary).BlockScales() {
					t.Errorf("%v: BitNet-like weights kept per-block scales", typ)
				}
				x := randActs(rng, cols, 1)
				a := newActs(t, x, cols, layout != Layout2Bit)
				dst := guarded(rows)
				eachPath(t, func(t *testing.T) {
					mm.MatVec(dst, a, 0, rows)
					for r := 0; r < rows; r++ {
						var want, mag float64
						for j := 0; j < cols; j++ {
							p := float64(deq[r*cols+j]) * float64(scale) * float64(a.Q[j])
							want += p
							mag += math.Abs(p)
						}
						want *= float64(a.InvScale[0])
						mag *= float64(a.InvScale[0])
						if !closeTo(dst[r], want, mag) {
							t.Fatalf("%v %v cols %d row %d: %v, want %v", typ, layout, cols, r, dst[r], want)
						}
					}
				})
			}
		}
	}
}

func TestInt8Mat(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	eachPath(t, func(t *testing.T) {
		for _, group := range []int{32, 16} {
			for cols := 64; cols <= 1024; cols += 64 {
				for _, rows := range []int{1, 3, 4, 7, 9} {
					vals := make([]int8, rows*cols)
					for i := range vals {
						vals[i] = int8(rng.IntN(256) - 128) // -128 included
					}
					sc := make([]float32, rows*cols/group)
					for i := range sc {
						sc[i] = float32(rng.NormFloat64() * 0.01)
					}
					m, err := NewInt8Mat(rows, cols, vals, sc, group)
					if err != nil {
						t.Fatal(err)
					}
					x := randActs(rng, cols, 2)
					a := newActs(t, x, cols, false)
					checkFloatMat(t, fmt.Sprintf("int8 g%d %dx%d", group, rows, cols), m, a, func(tok, r int) (float64, float64) {
						var want, mag float64
						q := a.token(tok)
						for j := 0; j < cols; j++ {
							p := float64(sc[(r*cols+j)/group]) * float64(vals[r*cols+j]) * float64(q[j])
							want += p
							mag += math.Abs(p)
						}
						inv := float64(a.InvScale[tok])
						return want * inv, mag * inv
					}, rng)
				}
			}
		}
	})
}

// rowRanges are the row ranges the product tests take of rows rows: all,
// the second half, and (rows > 2) all but the ends and a random one.
func rowRanges(rng *rand.Rand, rows int) [][2]int {
	ranges := [][2]int{{0, rows}, {rows / 2, rows}}
	if rows > 2 {
		r0 := rng.IntN(rows - 1)
		ranges = append(ranges, [2]int{1, rows - 1}, [2]int{r0, r0 + 1 + rng.IntN(rows-r0)})
	}
	return ranges
}

// randQ8Half is a random Q8_0-style matrix: int8 values (-128 included)
// and float16 scales, one per 32; it returns the values and scales too.
func randQ8Half(t testing.TB, rng *rand.Rand, rows, cols int) (*Int8Mat, []int8, []uint16) {
	t.Helper()
	vals := make([]int8, rows*cols)
	for i := range vals {
		vals[i] = int8(rng.IntN(256) - 128)
	}
	hs := make([]uint16, rows*cols/32)
	for i := range hs {
		hs[i] = quant.F32ToF16(float32(rng.NormFloat64() * 0.01))
	}
	m, err := newInt8MatHalf("Q8_0", rows, cols, vals, hs)
	if err != nil {
		t.Fatal(err)
	}
	return m, vals, hs
}

// checkFloatMat checks MatVec and MatMat of m against want on full and
// partial row ranges, with guards, to float32 rounding.
func checkFloatMat(t *testing.T, name string, m Matrix, a *Acts, want func(tok, r int) (float64, float64), rng *rand.Rand) {
	t.Helper()
	rows := m.Rows()
	for _, rg := range rowRanges(rng, rows) {
		r0, r1 := rg[0], rg[1]
		in := func(i int) bool { return i >= r0 && i < r1 }
		dst := guarded(rows)
		m.MatVec(dst, a, r0, r1)
		checkGuards(t, dst, in)
		all := guarded(a.Tokens * rows)
		m.MatMat(all, a, r0, r1)
		checkGuards(t, all, func(i int) bool { return i < a.Tokens*rows && in(i%rows) })
		for r := r0; r < r1; r++ {
			if w, mag := want(0, r); !(math.Abs(float64(dst[r])-w) <= 1e-5*mag+1e-7) {
				t.Fatalf("%s: MatVec [%d,%d) row %d = %v, want %v", name, r0, r1, r, dst[r], w)
			}
			for tok := 0; tok < a.Tokens; tok++ {
				if w, mag := want(tok, r); !(math.Abs(float64(all[tok*rows+r])-w) <= 1e-5*mag+1e-7) {
					t.Fatalf("%s: MatMat token %d row %d = %v, want %v", name, tok, r, all[tok*rows+r], w)
				}
			}
		}
	}
}

// TestFromQuantInt8 checks the Q8_0, Q5_0, Q4_0 and Q6_K repacking against
// quant.Dequantize of random blocks.
func TestFromQuantInt8(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for _, typ := range []quant.Type{quant.Q8_0, quant.Q5_0, quant.Q4_0, quant.Q6_K} {
		rows, cols := 3, 512
		rb, _ := typ.RowBytes(cols)
		data := make([]byte, rb*rows)
		for i := range data {
			data[i] = byte(rng.IntN(256))
		}
		// make every fp16 scale a sane finite value
		bs, bb := typ.BlockSize(), typ.BlockBytes()
		dOff := 0
		if typ == quant.Q6_K {
			dOff = 208
		}
		for b := 0; b < rows*cols/bs; b++ {
			h := quant.F32ToF16(float32(rng.NormFloat64() * 0.01))
			data[b*bb+dOff], data[b*bb+dOff+1] = byte(h), byte(h>>8)
		}
		deq := make([]float32, rows*cols)
		if err := quant.Dequantize(typ, deq, data); err != nil {
			t.Fatal(err)
		}
		mm, err := FromQuant(typ, rows, cols, data, 1, TernaryOptions{})
		if err != nil {
			t.Fatal(err)
		}
		m := mm.(*Int8Mat)
		if half := m.hscales != nil; half != (typ != quant.Q6_K) {
			t.Fatalf("%v: float16 scales %v", typ, half)
		}
		if nib := m.nib != nil; nib != (typ == quant.Q4_0) {
			t.Fatalf("%v: 4-bit layout %v", typ, nib)
		}
		var buf [32]int8
		for i, want := range deq {
			var v int8
			if m.group == 32 {
				v = m.block(i/cols, i%cols/32, &buf)[i%32]
			} else {
				v = m.vals[i]
			}
			got := float32(v) * m.scaleAt(i/m.group)
			if math.Abs(float64(got-want)) > 1e-6*math.Abs(float64(want))+1e-12 {
				t.Fatalf("%v: element %d = %v, want %v", typ, i, got, want)
			}
		}
		if _, err := FromQuant(typ, rows, cols, data[:len(data)-1], 1, TernaryOptions{}); err == nil {
			t.Fatalf("%v: short data accepted", typ)
		}
		// a scale of Inf is an error, not a matrix
		bad := append([]byte(nil), data...)
		bad[dOff], bad[dOff+1] = 0x00, 0x7c
		if _, err := FromQuant(typ, rows, cols, bad, 1, TernaryOptions{}); err == nil {
			t.Fatalf("%v: Inf scale accepted", typ)
		}
	}
}

// TestQuantInt8MatVec runs Q8_0, Q5_0, Q4_0 and Q6_K products (float16 and
// float32 scales, with and without FromQuant's scale) against quant's
// dequantized rows.
func TestQuantInt8MatVec(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 20))
	for _, typ := range []quant.Type{quant.Q8_0, quant.Q5_0, quant.Q4_0, quant.Q6_K} {
		for _, cols := range []int{64, 256, 576, 1024, 2560} {
			if cols%typ.BlockSize() != 0 {
				continue
			}
			for _, rows := range []int{1, 5, 9} {
				for _, scale := range []float32{1, 0.75} {
					w := make([]float32, rows*cols)
					for i := range w {
						w[i] = float32(rng.NormFloat64())
					}
					rb, _ := typ.RowBytes(cols)
					data := make([]byte, rb*rows)
					if err := quant.Quantize(typ, data, w); err != nil {
						t.Fatal(err)
					}
					deq := make([]float32, rows*cols)
					if err := quant.Dequantize(typ, deq, data); err != nil {
						t.Fatal(err)
					}
					m, err := FromQuant(typ, rows, cols, data, scale, TernaryOptions{})
					if err != nil {
						t.Fatal(err)
					}
					x := randActs(rng, cols, 2)
					a := newActs(t, x, cols, false)
					eachPath(t, func(t *testing.T) {
						checkFloatMat(t, fmt.Sprintf("%v scale %v %dx%d", typ, scale, rows, cols), m, a, func(tok, r int) (float64, float64) {
							var want, mag float64
							q := a.token(tok)
							for j := 0; j < cols; j++ {
								p := float64(deq[r*cols+j]) * float64(scale) * float64(q[j])
								want += p
								mag += math.Abs(p)
							}
							inv := float64(a.InvScale[tok])
							return want * inv, mag * inv
						}, rng)
					})
				}
			}
		}
	}
}

func TestF16Mat(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	eachPath(t, func(t *testing.T) {
		for _, cols := range []int{64, 128, 192, 576, 640, 1024} {
			for _, rows := range []int{1, 3, 4, 5, 9} {
				w := make([]uint16, rows*cols)
				for i := range w {
					w[i] = quant.F32ToF16(float32(rng.NormFloat64()))
				}
				m, err := NewF16Mat(rows, cols, w)
				if err != nil {
					t.Fatal(err)
				}
				x := randActs(rng, cols, 2)
				a := newActs(t, x, cols, false)
				checkFloatMat(t, fmt.Sprintf("f16 %dx%d", rows, cols), m, a, func(tok, r int) (float64, float64) {
					var want, mag float64
					for j := 0; j < cols; j++ {
						p := float64(quant.F16ToF32(w[r*cols+j])) * float64(x[tok*cols+j])
						want += p
						mag += math.Abs(p)
					}
					return want, mag
				}, rng)
			}
		}
		// any width through MatVecF32
		for cols := 1; cols <= 70; cols++ {
			w := make([]uint16, 5*cols)
			for i := range w {
				w[i] = quant.F32ToF16(float32(rng.NormFloat64()))
			}
			m, _ := NewF16Mat(5, cols, w)
			x := randActs(rng, cols, 1)
			dst := guarded(5)
			m.MatVecF32(dst, x, 1, 5)
			checkGuards(t, dst, func(i int) bool { return i >= 1 && i < 5 })
			for r := 1; r < 5; r++ {
				var want, mag float64
				for j := 0; j < cols; j++ {
					p := float64(quant.F16ToF32(w[r*cols+j])) * float64(x[j])
					want += p
					mag += math.Abs(p)
				}
				if math.Abs(float64(dst[r])-want) > 1e-5*mag+1e-7 {
					t.Fatalf("cols %d row %d: %v, want %v", cols, r, dst[r], want)
				}
			}
		}
	})
}

func TestF16Conversion(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		got, want := quant.F16ToF32(uint16(h)), quant.F16ToF32(uint16(h))
		if math.Float32bits(got) != math.Float32bits(want) && !(got != got && want != want) {
			t.Fatalf("quant.F16ToF32(%#x) = %v, want %v", h, got, want)
		}
	}
}

// TestNoAllocs: the decode loop must not allocate (GC pauses are jitter).
func TestNoAllocs(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	const rows, cols = 20, 576
	tc := randTernary(rng, rows, cols, "row")
	bl := randTernary(rng, rows, cols, "block")
	var ms []Matrix
	for _, l := range []Layout{Layout2Bit, LayoutLUT, LayoutTL} {
		m, _ := NewTernary(rows, cols, tc.codes, tc.bscale, 64, TernaryOptions{Layout: l})
		mb, _ := NewTernary(rows, cols, bl.codes, bl.bscale, 64, TernaryOptions{Layout: l})
		ms = append(ms, m, mb)
	}
	i8, _ := NewInt8Mat(rows, cols, make([]int8, rows*cols), make([]float32, rows*cols/16), 16)
	i832, _ := NewInt8Mat(rows, cols, make([]int8, rows*cols), make([]float32, rows*cols/32), 32)
	i8h, _ := newInt8MatHalf("Q8_0", rows, cols, make([]int8, rows*cols), make([]uint16, rows*cols/32))
	f16, _ := NewF16Mat(rows, cols, make([]uint16, rows*cols))
	_, q4, _ := randQ4(t, rng, rows, cols)
	ms = append(ms, i8, i832, i8h, f16, q4)
	a, _ := NewActs(cols, 4)
	a.EnableLUT()
	a.EnableLaneBias()
	x := randActs(rng, cols, 4)
	dst := make([]float32, 4*rows)
	eachPath(t, func(t *testing.T) {
		for _, m := range ms {
			if n := testing.AllocsPerRun(20, func() {
				a.Set(x)
				m.MatVec(dst, a, 3, rows)
				m.MatMat(dst, a, 0, rows-1)
			}); n != 0 {
				t.Fatalf("%T: %v allocations per run", m, n)
			}
		}
		// the attention kernels, on both cache types
		sc, h := make([]float32, 35), make([]uint16, len(x))
		var gmx [2]float32
		gy := make([]float32, 128)
		if n := testing.AllocsPerRun(20, func() {
			ToF16(h, x)
			mx := AttnScores(sc, x[:64], x, 64)
			mx = max(mx, AttnScoresF16(sc, x[:64], h, 64))
			SoftmaxExp(sc, 0.125, mx)
			AttnMix(dst[:64], sc, x, 64)
			AttnMixF16(dst[:64], sc, h, 64)
			AttnScoresF16G(sc, 11, 12, gmx[:], x[:128], h, 64, h)
			AttnMixF16G(gy, 2, sc, 11, 12, h, 64)
			SiLUMul(dst[:40], x[:40])
		}); n != 0 {
			t.Fatalf("attention kernels: %v allocations per run", n)
		}
	})
}

// TestPath: Path names the fastest set the CPU has and the switches
// allow, following each switch turned off in turn down to "go".
func TestPath(t *testing.T) {
	p2, pv, p5 := SetAVX2(true), SetAVXVNNI(true), SetAVX512(true)
	defer func() { SetAVX2(p2); SetAVXVNNI(pv); SetAVX512(p5) }()
	// first returns the first name whose CPU support is set.
	first := func(c ...any) string {
		for i := 0; i < len(c); i += 2 {
			if c[i].(bool) {
				return c[i+1].(string)
			}
		}
		return "go"
	}
	steps := []struct {
		off  func(bool) bool
		want string
	}{
		{nil, first(cpuAVX512, "avx512-vnni", cpuAVXVNNI, "avx-vnni", cpuAVX2, "avx2")},
		{SetAVX512, first(cpuAVXVNNI, "avx-vnni", cpuAVX2, "avx2")},
		{SetAVXVNNI, first(cpuAVX2, "avx2")},
		{SetAVX2, "go"},
	}
	for i, st := range steps {
		if st.off != nil {
			st.off(false)
		}
		if got := Path(); got != st.want {
			t.Fatalf("step %d: Path() %q, want %q", i, got, st.want)
		}
	}
}
