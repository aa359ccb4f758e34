package cuda

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"unsafe"

	"github.com/edgellm/edgellm/bench"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/quant"
)

// ---------------------------------------------------------------- CI (no GPU)

// TestMMTileSource reads mm.cu's tile table (mm_run) and constants back
// and checks that mmTileFor and mm.go's constants say the same: the host
// sizes the launch from mm.go, the kernel picks its tile from mm.cu.
func TestMMTileSource(t *testing.T) {
	src, err := kernelFS.ReadFile("mm.cu")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int{"MM_DECODE_N": mmDecodeN, "MM_RNORM_BT": mmRNormThreads, "MM_FROWS": mmFloatRows, "MM_FTOKS": mmFloatToks} {
		m := regexp.MustCompile(`#define ` + name + ` (\d+)`).FindSubmatch(src)
		if m == nil {
			t.Fatalf("mm.cu lacks #define %s", name)
		}
		if got, _ := strconv.Atoi(string(m[1])); got != want {
			t.Errorf("mm.cu %s = %d, mm.go says %d", name, got, want)
		}
	}
	// "if (n > 32) mm_tile<KT, K, MmTile<KT, 32, 64, 32, 32, 4, 4>>" or "else mm_tile<...>"
	re := regexp.MustCompile(`(?:if \(n > (\w+)\)|else) mm_tile<(KT|KQ8), K, MmTile<(?:KT|KQ8), (\d+), (\d+), (\d+), (\d+), (\d+), (\d+)>>`)
	rows := re.FindAllSubmatch(src, -1)
	if len(rows) != 10 {
		t.Fatalf("found %d tile choices in mm.cu, want 5 a kind", len(rows))
	}
	for _, r := range rows {
		k := kindTernary
		if string(r[2]) == "KQ8" {
			k = kindQ8
		}
		var tile mmTile
		for i, p := range []*int{&tile.bm, &tile.bn, &tile.wm, &tile.wn, &tile.ks, &tile.ch} {
			*p, _ = strconv.Atoi(string(r[3+i]))
		}
		lo := 0 // the tile serves n > lo (up to the previous choice's lo)
		switch s := string(r[1]); s {
		case "":
		case "MM_DECODE_N":
			lo = mmDecodeN
		default:
			lo, _ = strconv.Atoi(s)
		}
		if got := mmTileFor(k, lo+1); got != tile {
			t.Errorf("%s n=%d: mm.cu's tile %+v, mmTileFor %+v", k, lo+1, tile, got)
		}
	}
}

// TestMMTiles checks every tile mmTileFor gives against the rules mm.cu's
// code relies on (MmTile's static asserts, gate/up pairing, ldmatrix's
// n-tile pairs), and each launch shape of the presets' and the test
// shapes' entry points for every n: the grid covers the rows and the n
// rows, blocks fit the kernels' bounds, and shared memory stays under the
// default 48 KB where mmSmemAttrs says it does.
func TestMMTiles(t *testing.T) {
	for _, k := range []kind{kindTernary, kindQ8} {
		for n := 1; n <= 512; n++ {
			tl := mmTileFor(k, n)
			nt := tl.wn / 8
			if tl.bm%tl.wm != 0 || tl.bn%tl.wn != 0 || tl.ch%tl.ks != 0 || tl.wm != 32 || (nt != 1 && nt%2 != 0) {
				t.Fatalf("%s n=%d: tile %+v breaks mm.cu's rules", k, n, tl)
			}
			if k == kindQ8 && tl.ks != 1 {
				t.Fatalf("q8_0 n=%d: split K (%d) would change the float sums' order with n", n, tl.ks)
			}
			if n <= mmDecodeN && (tl.bn < n || tl.bn >= 2*max(n, 8)) {
				t.Fatalf("%s n=%d: batch tile %d rows wide", k, n, tl.bn)
			}
			if tl.warps()*32 > 256 || tl.smem(k) > mmSmemDefault {
				t.Fatalf("%s n=%d: tile %+v: %d threads, %d bytes of shared memory", k, n, tl, tl.warps()*32, tl.smem(k))
			}
		}
	}
	// smem by hand for the prompt tiles: two stages of the weights' and the
	// rows' tiles (ternary 64 rows x 2 chunks x 16 bytes, 128 rows x 144
	// bytes; q8_0 64 x 80 + scales, 128 x 80 + scales)
	if s := mmTileFor(kindTernary, 512).smem(kindTernary); s != 2*(64*32+128*144) {
		t.Errorf("ternary prompt tile: %d bytes of shared memory", s)
	}
	if s := mmTileFor(kindQ8, 512).smem(kindQ8); s != 2*(64*80+64*4+128*80+128*8) {
		t.Errorf("q8_0 prompt tile: %d bytes of shared memory", s)
	}
	for _, d := range testDims() {
		prods := d.mmProducts()
		if len(prods) != len(mmKernels) {
			t.Fatalf("mmProducts has %d entry points, rows.go mmKernels %d", len(prods), len(mmKernels))
		}
		attrs := d.mmSmemAttrs()
		for _, name := range mmKernels {
			p := prods[name]
			for n := 1; n <= 512; n++ {
				grid, block, smem := d.mmShape(name, n)
				if block <= 0 || block > 256 || block%32 != 0 || smem < 0 {
					t.Fatalf("%+v %s n=%d: block %d, smem %d", d, name, n, block, smem)
				}
				if smem > mmSmemDefault && attrs[name] < smem {
					t.Fatalf("%s n=%d: %d bytes of shared memory, mmSmemAttrs says %d", name, n, smem, attrs[name])
				}
				rowsCovered, toks := int(grid[0]), int(grid[1])
				switch {
				case p.rnorm:
					toks, rowsCovered = int(grid[0]), 1
					if smem != stageBytes(p.k, p.cols) {
						t.Fatalf("%s: smem %d, stage needs %d", name, smem, stageBytes(p.k, p.cols))
					}
				case p.k == kindF32 || p.k == kindF16:
					rowsCovered *= mmFloatRows
					toks *= mmFloatToks
				default:
					tl := mmTileFor(p.k, n)
					toks *= tl.bn
					rowsCovered *= tl.bm
					if p.gateUp {
						rowsCovered /= 2
					}
					if block != tl.warps()*32 || smem != tl.smem(p.k) {
						t.Fatalf("%s n=%d: block %d smem %d for tile %+v", name, n, block, smem, tl)
					}
				}
				if toks < n || (!p.rnorm && rowsCovered < p.rows) || grid[2] != 1 {
					t.Fatalf("%s n=%d: grid %v covers %d rows of %d and %d of the n rows", name, n, grid, rowsCovered, p.rows, toks)
				}
			}
		}
		if g, b, s := d.mmShape("k_mm_nope", 4); b != 0 || s != 0 || g != [3]uint32{} {
			t.Fatalf("unknown entry point: shape %v %d %d", g, b, s)
		}
		if _, b, _ := d.mmShape("k_mm_qkv", 0); b != 0 {
			t.Fatal("n = 0: a launch shape")
		}
	}
	// wide f32 rows stage 4 bytes a value: past 48 KB the host must raise it
	wide := kernelDims{Dim: 256, FFN: 16384, Heads: 4, KVHeads: 4, HeadDim: 64, Vocab: 100, WK: kindF32, HK: kindF32}
	if a := wide.mmSmemAttrs(); a["k_rnorm_ffn"] != 16384*4 || len(a) != 1 {
		t.Fatalf("mmSmemAttrs of 16384-wide f32 rows: %v", a)
	}
}

// TestMMTernaryFragment checks the layout fact mm.cu's ternary tiles rest
// on, against pack.go's packing: in a 64-weight chunk, k-step h (32
// weights) gives lane t (of 4 in a group) the m16n8k32 A fragment's
// weights 32h+4t.. and 32h+16+4t.. as shift t of words 2h and 2h+1, the
// codes (w+1) one a byte.
func TestMMTernaryFragment(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	codes := make([]int8, 200) // 4 chunks, the last part padding
	for i := range codes {
		codes[i] = int8(rng.IntN(3) - 1)
	}
	dst := make([]byte, padK(len(codes))/4)
	putTernary(dst, codes)
	weight := func(k int) int {
		if k < len(codes) {
			return int(codes[k])
		}
		return 0 // padding: code 1
	}
	for c := 0; c < len(dst)/16; c++ {
		word := func(j int) uint32 { return binary.LittleEndian.Uint32(dst[c*16+4*j:]) }
		for h := range 2 {
			for lane := range 4 {
				for half, w := range []uint32{word(2 * h), word(2*h + 1)} {
					frag := (w >> (2 * lane)) & 0x03030303
					for b := range 4 {
						k := c*64 + 32*h + 16*half + 4*lane + b
						if got := int(frag>>(8*b)&0xff) - 1; got != weight(k) {
							t.Fatalf("chunk %d k-step %d lane %d: byte %d of the fragment is %d, weight %d is %d", c, h, lane, b, got, k, weight(k))
						}
					}
				}
			}
		}
	}
}

// ---------------------------------------------------------------- device harness

// The harness of mm.cu: each k_rnorm_* and k_mm_* of every kernelCases
// model at mmTestN rows, on random rows, against references in float64
// (TestKernelMM), and the products timed (BenchmarkKernelMM). On the GPU
// machine, with kernel_test.go's binary:
//
//	.devbin/cuda.test -test.run '^TestKernelMM' -test.bench '^BenchmarkKernelMM' -test.benchtime 20x -test.v

// mmTestN are the row counts checked: one row, odd ones that leave tiles
// part-filled, a full decode batch and a prompt chunk.
var mmTestN = []int{1, 3, 17, 64, 512}

// tolExact is the tolerance of ternary products: the integer sums are
// exact, only the float epilogue (two or three roundings) differs.
const tolExact = 1e-5

// mmBuf are a harness's buffers for up to mmMaxN rows.
type mmBuf struct {
	in, xq, xs, xf, out, nw uint64
}

const mmMaxN = 512

var mmBufs = map[*kernelHarness]*mmBuf{}

// mmBuffers allocates (once a harness) the rows' buffers, wide enough for
// every product of the model, and raises the shared memory of the entry
// points that need it (mmSmemAttrs).
func (h *kernelHarness) mmBuffers(tb testing.TB) *mmBuf {
	tb.Helper()
	if b := mmBufs[h]; b != nil {
		return b
	}
	c := h.cfg()
	w := max(c.Dim, c.QDim(), c.FFNDim)
	kp := padK(w)
	outW := max(c.QDim()+2*c.KVDim(), c.Dim, c.FFNDim, c.Vocab)
	b := &mmBuf{}
	for _, a := range []struct {
		p *uint64
		n int
	}{{&b.in, mmMaxN * w * 4}, {&b.xq, mmMaxN * kp}, {&b.xs, mmMaxN * kp / 32 * 4}, {&b.xf, mmMaxN * kp * 4}, {&b.out, mmMaxN * outW * 4}, {&b.nw, w * 4}} {
		var err error
		if *a.p, err = h.m.dev.alloc(a.n, "mm harness"); err != nil {
			tb.Fatal(err)
		}
	}
	for name, n := range h.m.dims.mmSmemAttrs() {
		h.do(tb, h.m.dev.d.cuFuncSetAttribute(h.m.fn[name], funcAttrMaxDynamicShared, int32(n)), "cuFuncSetAttribute("+name+")")
	}
	mmBufs[h] = b
	return b
}

// mmLaunch launches mm.cu's entry point name over n rows with the shape
// mmShape gives (args after n), on the session's stream.
func (h *kernelHarness) mmLaunch(tb testing.TB, name string, n int, args ...uint64) {
	tb.Helper()
	grid, block, smem := h.m.mmShape(name, n)
	if block == 0 {
		tb.Fatalf("no launch shape for %s at n=%d", name, n)
	}
	a := append([]uint64{uint64(n)}, args...)
	ptrs := make([]unsafe.Pointer, len(a))
	for i := range a {
		ptrs[i] = unsafe.Pointer(&a[i])
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	pin.Pin(&a[0])
	pin.Pin(&ptrs[0])
	d := h.m.dev.d
	h.do(tb, d.cuLaunchKernel(h.m.fn[name], grid[0], grid[1], grid[2], uint32(block), 1, 1, uint32(smem), h.s.stream,
		unsafe.Pointer(&ptrs[0]), 0), "cuLaunchKernel("+name+")")
}

func (h *kernelHarness) mmRun(tb testing.TB, name string, n int, args ...uint64) {
	tb.Helper()
	h.mmLaunch(tb, name, n, args...)
	h.do(tb, h.m.dev.d.cuStreamSynchronize(h.s.stream), "cuStreamSynchronize("+name+")")
}

// mmRNorm is one k_rnorm_* check: its kind, width and norm (nil: none).
type mmRNorm struct {
	name string
	k    kind
	cols int
	nw   []float32
}

func (h *kernelHarness) mmRNorms() []mmRNorm {
	c, L, d := h.cfg(), &h.w.Layers[0], h.m.dims
	return []mmRNorm{
		{"k_rnorm_dim", d.WK, c.Dim, L.AttnNorm},
		{"k_rnorm_dim", d.WK, c.Dim, nil},
		{"k_rnorm_qd", d.WK, c.QDim(), h.subNorm(L.AttnSubNorm)},
		{"k_rnorm_ffn", d.WK, c.FFNDim, h.subNorm(L.FFNSubNorm)},
		{"k_rnorm_head", d.HK, c.Dim, h.w.OutNorm},
	}
}

// checkRNorm: n random rows (clear of the int8 grid's rounding boundaries,
// safeInput) through k_rnorm_*, against staged (the decode step's rounding
// in the reference): the int8 values times their scales, the f16/f32 rows
// as they are, the padding zero.
func (h *kernelHarness) checkRNorm(tb testing.TB, rng *rand.Rand, r mmRNorm, n int) {
	tb.Helper()
	b, c := h.mmBuffers(tb), h.cfg()
	kp := padK(r.cols)
	in := make([]float32, 0, n*r.cols)
	for range n {
		in = append(in, safeInput(tb, rng, r.k, r.cols, r.nw, c.NormEps)...)
	}
	h.put(tb, b.in, in)
	nw := uint64(0)
	if r.nw != nil {
		h.put(tb, b.nw, r.nw)
		nw = b.nw
	}
	h.poison(tb, b.xq, n*kp)
	h.poison(tb, b.xs, n*kp/32*4)
	h.poison(tb, b.xf, n*kp*4)
	h.mmRun(tb, r.name, n, b.in, nw, b.xq, b.xs, b.xf)
	var got []float32
	switch r.k {
	case kindTernary, kindQ8:
		xq := h.getBytes(tb, b.xq, n*kp)
		ns := n
		if r.k == kindQ8 {
			ns = n * kp / 32
		}
		xs := h.get(tb, b.xs, ns)
		for row := range n {
			for i := range kp {
				q := float32(int8(xq[row*kp+i]))
				if i >= r.cols && q != 0 {
					tb.Fatalf("%s %s row %d: padding value %d at %d", h.c.name, r.name, row, int(q), i)
				}
				s := xs[row]
				if r.k == kindQ8 {
					s = xs[row*kp/32+i/32]
				}
				if i < r.cols {
					got = append(got, q*s)
				}
			}
		}
	default:
		xf := h.get(tb, b.xf, n*kp)
		for row := range n {
			for i := r.cols; i < kp; i++ {
				if xf[row*kp+i] != 0 {
					tb.Fatalf("%s %s row %d: padding value %g at %d", h.c.name, r.name, row, xf[row*kp+i], i)
				}
			}
			got = append(got, xf[row*kp:row*kp+r.cols]...)
		}
	}
	for row := range n {
		want := staged(r.k, in[row*r.cols:(row+1)*r.cols], r.nw, c.NormEps)
		h.expect(tb, fmt.Sprintf("%s (norm %v) n=%d row %d", r.name, r.nw != nil, n, row), got[row*r.cols:(row+1)*r.cols], want, tolFloat)
	}
}

// mmMat is a device matrix read back for the references: kind, width,
// row bytes, the weights, q8_0 scales and row scales.
type mmMat struct {
	k       kind
	rows    int
	cols    int
	w       []byte
	d       []uint16
	rs      []float32
	weights int64 // bytes a pass over it reads (weights and q8_0 scales)
}

func (h *kernelHarness) readMat(tb testing.TB, m devMat) *mmMat {
	tb.Helper()
	hm := &hostMat{kind: m.kind, rows: m.rows, cols: m.cols}
	out := &mmMat{k: m.kind, rows: m.rows, cols: m.cols, weights: int64(m.bytes)}
	out.w = h.getBytes(tb, m.w, m.rows*hm.rowBytes())
	if m.kind == kindQ8 {
		db := h.getBytes(tb, m.d, m.rows*padK(m.cols)/32*2)
		out.d = make([]uint16, len(db)/2)
		for i := range out.d {
			out.d[i] = binary.LittleEndian.Uint16(db[2*i:])
		}
	}
	out.rs = slices.Clone(h.get(tb, m.rs, m.rows))
	return out
}

// mmInput is n random rows in a product's input format (rows.cu): int8
// values in [-127, 127] with random scales, or floats; padding zero.
type mmInput struct {
	k     kind
	cols  int
	xq    []int8
	xs    []float32
	xf    []float32
	bytes [3][]byte
}

func newMMInput(rng *rand.Rand, k kind, cols, n int) *mmInput {
	kp := padK(cols)
	in := &mmInput{k: k, cols: cols}
	switch k {
	case kindTernary, kindQ8:
		in.xq = make([]int8, n*kp)
		for r := range n {
			for i := range cols {
				in.xq[r*kp+i] = int8(rng.IntN(255) - 127)
			}
		}
		if k == kindTernary {
			in.xs = make([]float32, n)
			for r := range in.xs {
				in.xs[r] = (0.5 + rng.Float32()) / 127
			}
		} else {
			in.xs = make([]float32, n*kp/32)
			for r := range n {
				for b := 0; b < (cols+31)/32; b++ {
					in.xs[r*kp/32+b] = (0.5 + rng.Float32()) / 127
				}
			}
		}
		in.bytes[0] = unsafe.Slice((*byte)(unsafe.Pointer(&in.xq[0])), len(in.xq))
		in.bytes[1] = f32Bytes(in.xs)
	default:
		in.xf = make([]float32, n*kp)
		for r := range n {
			for i := range cols {
				in.xf[r*kp+i] = float32(rng.NormFloat64())
			}
		}
		in.bytes[2] = f32Bytes(in.xf)
	}
	return in
}

// dot is row i of m times input row r, in float64 (the integer part of
// the int8 kinds exact), times the row's scale: what the kernels'
// products are before their epilogue.
func (m *mmMat) dot(in *mmInput, i, r int) float64 {
	kp := padK(m.cols)
	switch m.k {
	case kindTernary:
		row := m.w[i*kp/4:]
		var s int64
		for k := range m.cols {
			c, w := k/64, k%64
			code := row[c*16+(w/16)*4+w%4] >> (2 * ((w % 16) / 4)) & 3
			s += int64(int(code)-1) * int64(in.xq[r*kp+k])
		}
		return float64(s) * float64(in.xs[r]) * float64(m.rs[i])
	case kindQ8:
		row := m.w[i*kp:]
		var s float64
		for b := 0; b < kp/32; b++ {
			var t int64
			for k := 32 * b; k < 32*b+32; k++ {
				t += int64(int8(row[k])) * int64(in.xq[r*kp+k])
			}
			s += float64(t) * float64(quant.F16ToF32(m.d[i*kp/32+b])) * float64(in.xs[r*kp/32+b])
		}
		return s * float64(m.rs[i])
	case kindF16:
		var s float64
		for k := range m.cols {
			s += float64(quant.F16ToF32(binary.LittleEndian.Uint16(m.w[(i*kp+k)*2:]))) * float64(in.xf[r*kp+k])
		}
		return s * float64(m.rs[i])
	default:
		var s float64
		for k := range m.cols {
			s += float64(math.Float32frombits(binary.LittleEndian.Uint32(m.w[(i*kp+k)*4:]))) * float64(in.xf[r*kp+k])
		}
		return s * float64(m.rs[i])
	}
}

// mmProductCase is one k_mm_* entry point with its device matrix.
type mmProductCase struct {
	name string
	mat  devMat
}

func (h *kernelHarness) mmProductCases() []mmProductCase {
	L := &h.m.layers[0]
	return []mmProductCase{{"k_mm_qkv", L.qkv}, {"k_mm_wo", L.wo}, {"k_mm_gateup", L.gateUp}, {"k_mm_down", L.down}, {"k_mm_head", h.m.head}}
}

// sampleRows are the output rows a check compares: all where the
// reference is cheap, else the first and last 16 (the edge tiles) and
// random ones, at most about budget multiply-adds over n rows.
func sampleRows(rng *rand.Rand, rows, cols, n int) []int {
	const budget = 1 << 27
	if rows*cols*n <= budget {
		return seq(rows)
	}
	want := max(budget/(cols*n), 64)
	set := map[int]bool{}
	for i := range min(16, rows) {
		set[i], set[rows-1-i] = true, true
	}
	for len(set) < min(want, rows) {
		set[rng.IntN(rows)] = true
	}
	out := make([]int, 0, len(set))
	for i := range set {
		out = append(out, i)
	}
	slices.Sort(out)
	return out
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// checkMM: n random input rows through product p, against dot's
// references with the product's epilogue: q|k|v as they are, the
// residual added to x (written, POST_NORM), act(gate)*up, the logits
// soft-capped.
func (h *kernelHarness) checkMM(tb testing.TB, rng *rand.Rand, p mmProductCase, mat *mmMat, n int) {
	tb.Helper()
	b, c := h.mmBuffers(tb), h.cfg()
	in := newMMInput(rng, mat.k, mat.cols, n)
	h.putBytes(tb, b.xq, in.bytes[0])
	h.putBytes(tb, b.xs, in.bytes[1])
	h.putBytes(tb, b.xf, in.bytes[2])
	outRows := mat.rows
	if p.name == "k_mm_gateup" {
		outRows = c.FFNDim
	}
	rows := sampleRows(rng, outRows, mat.cols, n)
	var want []float64
	for r := range n {
		for _, i := range rows {
			switch p.name {
			case "k_mm_gateup":
				g, u := mat.dot(in, i, r), mat.dot(in, c.FFNDim+i, r)
				want = append(want, float64(model.Activate(c.Act, float32(g)))*u)
			case "k_mm_head":
				v := mat.dot(in, i, r)
				if c.LogitSoftcap > 0 {
					v = float64(c.LogitSoftcap) * math.Tanh(v/float64(c.LogitSoftcap))
				}
				want = append(want, v)
			default:
				want = append(want, mat.dot(in, i, r))
			}
		}
	}
	residual := (p.name == "k_mm_wo" || p.name == "k_mm_down") && !c.PostNorms
	var x0 []float32
	if residual {
		// the residual at the products' own size, so that the sum's
		// rounding stays as small against it as the product's own
		var ss float64
		for _, v := range want {
			ss += v * v
		}
		x0 = randVec(rng, n*outRows, math.Sqrt(ss/float64(len(want))))
		h.put(tb, b.out, x0)
	} else {
		h.poison(tb, b.out, n*outRows*4)
	}
	h.mmRun(tb, p.name, n, b.xq, b.xs, b.xf, p.mat.w, p.mat.d, p.mat.rs, b.out)
	out := h.get(tb, b.out, n*outRows)
	got, want32 := make([]float32, 0, len(want)), make([]float32, 0, len(want))
	for r := range n {
		for _, i := range rows {
			w := want[len(got)]
			if residual {
				w += float64(x0[r*outRows+i])
			}
			got, want32 = append(got, out[r*outRows+i]), append(want32, float32(w))
		}
	}
	tol := tolFloat
	if mat.k == kindTernary && (p.name != "k_mm_gateup" || c.Act == model.ReLU2) {
		tol = tolExact
	}
	h.expect(tb, fmt.Sprintf("%s n=%d (%d rows of %d checked)", p.name, n, len(rows), outRows), got, want32, tol)
}

// TestKernelMM checks mm.cu's entry points on every kernelCases model at
// each mmTestN.
func TestKernelMM(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("no GPU: %v", err)
	}
	for ci, c := range kernelCases() {
		t.Run(c.name, func(t *testing.T) {
			h := kernelHarnessFor(t, c)
			done := h.enter(t)
			defer done()
			for ri, r := range h.mmRNorms() {
				for _, n := range mmTestN {
					h.checkRNorm(t, rand.New(rand.NewPCG(uint64(1000*ci+10*ri+n), 91)), r, n)
				}
			}
			for pi, p := range h.mmProductCases() {
				mat := h.readMat(t, p.mat)
				for _, n := range mmTestN {
					h.checkMM(t, rand.New(rand.NewPCG(uint64(1000*ci+10*pi+n), 92)), p, mat, n)
				}
				if t.Failed() {
					t.Fatalf("%s failed", p.name)
				}
			}
		})
	}
}

// BenchmarkKernelMM times each k_mm_* of the two presets' shapes at 1,
// 16, 64 and 512 rows: us-hot (launches back to back, weights in L2 where
// they fit), us-cold (L2 flushed first), int8 TOPS (2 x rows x width x n
// over the hot time) and GB/s of weights (over the cold time).
func BenchmarkKernelMM(b *testing.B) {
	if err := Available(); err != nil {
		b.Skipf("no GPU: %v", err)
	}
	for _, c := range kernelCases() {
		if c.name != "smollm-135m" && c.name != "bitnet-2b" {
			continue
		}
		for _, n := range []int{1, 16, 64, 512} {
			for _, p := range []string{"k_mm_qkv", "k_mm_wo", "k_mm_gateup", "k_mm_down", "k_mm_head"} {
				b.Run(fmt.Sprintf("%s/%s/n=%d", c.name, p, n), func(b *testing.B) {
					h := kernelHarnessFor(b, c)
					done := h.enter(b)
					defer done()
					var pc mmProductCase
					for _, q := range h.mmProductCases() {
						if q.name == p {
							pc = q
						}
					}
					buf := h.mmBuffers(b)
					in := newMMInput(rand.New(rand.NewPCG(uint64(n), 93)), pc.mat.kind, pc.mat.cols, n)
					h.putBytes(b, buf.xq, in.bytes[0])
					h.putBytes(b, buf.xs, in.bytes[1])
					h.putBytes(b, buf.xf, in.bytes[2])
					args := []uint64{buf.xq, buf.xs, buf.xf, pc.mat.w, pc.mat.d, pc.mat.rs, buf.out}
					var hot, cold []float64
					for b.Loop() {
						cold = append(cold, h.mmTime(b, p, n, args, true))
						hot = append(hot, h.mmTime(b, p, n, args, false))
					}
					uh, uc := bench.Median(hot), bench.Median(cold)
					b.ReportMetric(uh, "us-hot")
					b.ReportMetric(uc, "us-cold")
					b.ReportMetric(2*float64(pc.mat.rows)*float64(pc.mat.cols)*float64(n)/uh/1e6, "TOPS")
					b.ReportMetric(float64(pc.mat.bytes)/uc/1e3, "GB/s")
				})
			}
		}
	}
}

// mmTime is the microseconds of one launch between two events; with
// flush, L2 is evicted first (outside the events).
func (h *kernelHarness) mmTime(tb testing.TB, name string, n int, args []uint64, flush bool) float64 {
	tb.Helper()
	d, st := h.m.dev.d, h.s.stream
	if flush {
		h.do(tb, d.cuMemsetD8Async(h.flush, 0, flushBytes, st), "cuMemsetD8Async(L2 flush)")
	}
	h.do(tb, d.cuEventRecord(h.e0, st), "cuEventRecord")
	h.mmLaunch(tb, name, n, args...)
	h.do(tb, d.cuEventRecord(h.e1, st), "cuEventRecord")
	h.do(tb, d.cuEventSynchronize(h.e1), "cuEventSynchronize")
	var ms float32
	h.do(tb, d.cuEventElapsedTime(&ms, h.e0, h.e1), "cuEventElapsedTime")
	return float64(ms) * 1e3
}
