package cuda

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"

	"github.com/edgellm/edgellm/bench"
	"github.com/edgellm/edgellm/quant"
)

// TestRowAttnShape pins mattn.cu's launch shapes for the presets' shapes
// on a 132-multiprocessor card and checks, for every chunk size, that
// k_pattn's blocks cover the chunk's query rows once (no block of rows
// wholly past them) and k_battn's slices and scratch stay in their bounds.
func TestRowAttnShape(t *testing.T) {
	bitnet := testDims()[0]                                  // 20 heads on 5 KV heads, 128 wide
	smollm := presetDims("smollm-135m", kindTernary, kindQ8) // 9 heads on 3, 64 wide
	for _, c := range []struct {
		d           kernelDims
		name        string
		n, nsplit   int
		grid        [3]uint32
		block, smem int
	}{
		{bitnet, "k_rqkv", 64, 0, [3]uint32{8, 64, 1}, 128, 0},
		{smollm, "k_rqkv", 1, 0, [3]uint32{4, 1, 1}, 128, 0},
		{bitnet, "k_pattn", 512, 0, [3]uint32{32, 5, 1}, 128, 0},
		{smollm, "k_pattn", 512, 0, [3]uint32{24, 3, 1}, 128, 0},
		{smollm, "k_pattn", 17, 0, [3]uint32{1, 3, 1}, 128, 0},
		{bitnet, "k_battn", 16, 14, [3]uint32{70, 16, 1}, 128, 0},
		{smollm, "k_battn", 64, 8, [3]uint32{18, 64, 1}, 128, 0},
		{smollm, "k_nothing", 4, 1, [3]uint32{}, 0, 0},
	} {
		grid, block, smem := c.d.rowAttnShape(c.name, c.n, c.nsplit)
		if grid != c.grid || block != c.block || smem != c.smem {
			t.Errorf("%d heads: %s(n %d, nsplit %d) = %v, %d, %d; want %v, %d, %d", c.d.Heads, c.name, c.n, c.nsplit,
				grid, block, smem, c.grid, c.block, c.smem)
		}
	}
	for _, d := range testDims() {
		group := d.Heads / d.KVHeads
		for n := 1; n <= pattnMaxRows; n++ {
			grid, _, _ := d.rowAttnShape("k_pattn", n, 0)
			if rows := int(grid[0]) * pattnRows; rows < n*group || rows-pattnRows >= n*group || int(grid[1]) != d.KVHeads {
				t.Fatalf("%d/%d heads, n %d: k_pattn grid %v for %d query rows a KV head", d.Heads, d.KVHeads, n, grid, n*group)
			}
		}
	}
	// k_battn: 132 x battnWarpsPerSM warps where the context allows, at
	// most attnSplits' (the merge takes 64 slices).
	for _, c := range []struct{ heads, n, ctx, want int }{
		{20, 16, 2048, 14}, {20, 64, 2048, 4}, {20, 1, 2048, 64}, {9, 64, 2048, 8}, {20, 1, 100, 7}, {9, 512, 4096, 1},
	} {
		if got := battnSplits(c.heads, c.n, c.ctx, 132); got != c.want {
			t.Errorf("battnSplits(%d heads, %d rows, ctx %d) = %d, want %d", c.heads, c.n, c.ctx, got, c.want)
		}
	}
	for n := 1; n <= battnMaxRows; n++ {
		for _, ctx := range []int{1, 17, 2048, 1 << 20} {
			s := battnSplits(20, n, ctx, 132)
			if s < 1 || s > 64 || s > attnSplits(ctx) {
				t.Fatalf("battnSplits(n %d, ctx %d) = %d", n, ctx, s)
			}
		}
	}
	// tickets of 64 rows, then one row's 20 heads x 3 slices of 130 floats
	if got := battnPartFloats(20, 128, 1, 3); got != 64*20+20*3*130 {
		t.Errorf("battnPartFloats = %d", got)
	}
}

// The many-row kernels' harness (TestRowAttn, BenchmarkRowAttn): each
// kernelCases model's layer-0 weights, with the rows' own buffers: a Row
// table, battnMaxRows slots, each its own cache of two layers (the kernels
// run layer rowLayer, so a wrong layer offset reads or writes the other,
// poisoned), all sharing the session's RoPE tables.
const rowLayer = 1

type rowBufs struct {
	rows, slots       uint64
	k, v              uint64 // battnMaxRows slots' caches, slotBytes each
	slotBytes         int
	raw, q, out, part uint64
	slotK, slotV      func(slot int) uint64 // the slot's layer-rowLayer cache
	partBytes         int
}

var rowBufSets = map[string]*rowBufs{}

func (h *kernelHarness) rowBufs(tb testing.TB) *rowBufs {
	tb.Helper()
	if rb := rowBufSets[h.c.name]; rb != nil {
		return rb
	}
	c, dev := h.cfg(), h.m.dev
	qd, kvd := c.QDim(), c.KVDim()
	layerBytes := kernelCtx * kvd * h.kvElem()
	rb := &rowBufs{slotBytes: 2 * layerBytes, partBytes: h.m.battnPartBytes(kernelCtx)}
	for _, a := range []struct {
		p *uint64
		n int
	}{
		{&rb.rows, 16 * pattnMaxRows}, {&rb.slots, int(unsafe.Sizeof(slotDesc{})) * battnMaxRows},
		{&rb.k, rb.slotBytes * battnMaxRows}, {&rb.v, rb.slotBytes * battnMaxRows},
		{&rb.raw, 4 * pattnMaxRows * (qd + 2*kvd)}, {&rb.q, 4 * pattnMaxRows * qd}, {&rb.out, 4 * pattnMaxRows * qd},
		{&rb.part, rb.partBytes},
	} {
		p, err := dev.alloc(a.n, "row harness")
		if err != nil {
			tb.Fatal(err)
		}
		*a.p = p
	}
	h.do(tb, dev.d.cuMemsetD8Async(rb.part, 0, uint64(rb.partBytes), h.s.stream), "cuMemsetD8Async(part)")
	h.do(tb, dev.d.cuStreamSynchronize(h.s.stream), "cuStreamSynchronize(part)")
	rb.slotK = func(s int) uint64 { return rb.k + uint64(s*rb.slotBytes+rowLayer*layerBytes) }
	rb.slotV = func(s int) uint64 { return rb.v + uint64(s*rb.slotBytes+rowLayer*layerBytes) }
	slots := make([]slotDesc, battnMaxRows)
	for i := range slots {
		slots[i] = slotDesc{K: rb.k + uint64(i*rb.slotBytes), V: rb.v + uint64(i*rb.slotBytes),
			Rope: h.s.buf.rope, RopeLocal: h.s.buf.ropeLocal, Layer: int64(kernelCtx * kvd), Ctx: kernelCtx}
	}
	h.putBytes(tb, rb.slots, unsafe.Slice((*byte)(unsafe.Pointer(&slots[0])), len(slots)*int(unsafe.Sizeof(slots[0]))))
	rowBufSets[h.c.name] = rb
	return rb
}

func (h *kernelHarness) putRows(tb testing.TB, rb *rowBufs, rows []rowDesc) {
	tb.Helper()
	h.putBytes(tb, rb.rows, unsafe.Slice((*byte)(unsafe.Pointer(&rows[0])), 16*len(rows)))
}

// rowLaunch is kernel name's launch for n rows as the host makes it
// (Model.rowAttnShape for sessions of kernelCtx positions).
func (h *kernelHarness) rowLaunch(name string, n int, args ...uint64) *launch {
	grid, block, smem := h.m.rowAttnShape(name, n, kernelCtx)
	l := &launch{name: name, fn: h.m.fn[name], grid: grid, block: uint32(block), smem: uint32(smem), args: args}
	h.s.pinArgs(l)
	return l
}

// poisonCaches fills every slot's cache (both layers) with NaN, and waits:
// the uploads after it go by the legacy stream, which the session's
// stream does not order against.
func (h *kernelHarness) poisonCaches(tb testing.TB, rb *rowBufs) {
	tb.Helper()
	h.poison(tb, rb.k, rb.slotBytes*battnMaxRows)
	h.poison(tb, rb.v, rb.slotBytes*battnMaxRows)
	h.do(tb, h.m.dev.d.cuStreamSynchronize(h.s.stream), "cuStreamSynchronize(poison)")
}

// f16Round is x with every value rounded to float16 (an f16 operand of
// k_pattn's tensor cores).
func f16Round(x []float32) []float32 {
	r := make([]float32, len(x))
	for i, f := range x {
		r[i] = quant.F16ToF32(quant.F32ToF16(f))
	}
	return r
}

// tolMMA is k_pattn's tolerance: its operands are float16 (q, k, v, and p
// for P·V), and the reference takes q, k and v rounded as the kernel
// rounds them, so what is left is p's rounding (2^-11 of each weight at
// most) and the order of sums.
const tolMMA = 3e-3

// expectRows compares each of the live rows of got and want ([n][QD]) on
// its own scale, and the others with zeros (padding rows).
func (h *kernelHarness) expectRows(tb testing.TB, what string, got, want []float32, live []bool, tol float64) {
	tb.Helper()
	qd := h.cfg().QDim()
	for r, ok := range live {
		g := got[r*qd : (r+1)*qd]
		if !ok {
			if slices.ContainsFunc(g, func(f float32) bool { return f != 0 }) {
				tb.Errorf("%s: %s: padding row %d not zeros", h.c.name, what, r)
			}
			continue
		}
		h.expect(tb, fmt.Sprintf("%s, row %d", what, r), g, want[r*qd:(r+1)*qd], tol)
	}
}

// TestRowAttn checks mattn.cu's kernels against the references, for each
// kernelCases model: k_rqkv on rows at mixed positions in distinct slots
// with padding rows; k_pattn on prompt chunks of 1, 17, 64 and 512 rows
// after 0 and 100 cached positions, with and without a window (the last
// rows of a 17-row launch padding); k_battn on batches of 1, 3, 16 and 64
// rows at positions 1..2000, one slot each, with and without a window,
// one scratch buffer for all (each launch leaves its tickets at zero).
func TestRowAttn(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("no GPU: %v", err)
	}
	for ci, c := range kernelCases() {
		t.Run(c.name, func(t *testing.T) {
			h := kernelHarnessFor(t, c)
			done := h.enter(t)
			defer done()
			rb := h.rowBufs(t)
			seed := func(k int) *rand.Rand { return rand.New(rand.NewPCG(uint64(1000*ci+k), 79)) }
			// A subtest runs on a goroutine of its own, so on an OS thread
			// where the context may not be current: each binds it again.
			run := func(name string, f func(t *testing.T)) {
				t.Run(name, func(t *testing.T) {
					done := h.enter(t)
					defer done()
					f(t)
				})
			}
			run("k_rqkv", func(t *testing.T) { checkRQKV(h, t, rb, seed(0), 17) })
			for _, n := range []int{1, 17, 64, 512} {
				for _, prefix := range []int{0, 100} {
					for _, window := range []int{0, 50} {
						run(fmt.Sprintf("k_pattn/n=%d,prefix=%d,window=%d", n, prefix, window), func(t *testing.T) {
							live := n
							if n == 17 {
								live = 13
							}
							checkPattn(h, t, rb, seed(n+prefix+window), n, live, prefix, window)
						})
					}
				}
			}
			for _, n := range []int{1, 3, 16, 64} {
				window := 0
				if n == 3 || n == 64 {
					window = 300
				}
				run(fmt.Sprintf("k_battn/n=%d,window=%d", n, window), func(t *testing.T) {
					checkBattn(h, t, rb, seed(10000+n), n, window, 2000)
				})
			}
		})
	}
}

// checkRQKV: n rows at random positions, row r in slot r, every sixth a
// padding row: q and the slot's cache rows at the position as
// checkQKVPost's reference, and nothing else written (the padding rows'
// q, the cache rows beside each position).
func checkRQKV(h *kernelHarness, tb testing.TB, rb *rowBufs, rng *rand.Rand, n int) {
	c, L := h.cfg(), &h.m.layers[0]
	qd, kvd := c.QDim(), c.KVDim()
	rows := make([]rowDesc, n)
	for r := range rows {
		rows[r] = rowDesc{Pos: int32(rng.IntN(kernelCtx)), Slot: int32(r)}
		if r%6 == 5 {
			rows[r].Slot = -1
		}
	}
	raw := randVec(rng, n*(qd+2*kvd), 1)
	h.putRows(tb, rb, rows)
	h.put(tb, rb.raw, raw)
	h.poison(tb, rb.q, 4*n*qd)
	h.poisonCaches(tb, rb)
	h.run(tb, h.rowLaunch("k_rqkv", n, uint64(n), rowLayer, rb.rows, rb.slots, rb.raw, L.qkvBias, L.qNorm, L.kNorm, rb.q,
		uint64(c.RopeSet(0))))
	got := h.get(tb, rb.q, n*qd)
	poisoned := func(b []byte) bool { return !slices.ContainsFunc(b, func(x byte) bool { return x != 0xff }) }
	for r, rw := range rows {
		g := got[r*qd : (r+1)*qd]
		if rw.Slot < 0 {
			if !poisoned(unsafe.Slice((*byte)(unsafe.Pointer(&g[0])), 4*qd)) {
				tb.Errorf("%s: padding row %d wrote its q", h.c.name, r)
			}
			continue
		}
		pos := int(rw.Pos)
		q, k, v := h.postRef(raw[r*(qd+2*kvd):(r+1)*(qd+2*kvd)], pos)
		what := fmt.Sprintf("row %d at %d", r, pos)
		h.expect(tb, what+": q", g, q, tolFloat)
		h.expect(tb, what+": cached k", h.cacheRow(tb, rb.slotK(r), pos), k, h.cacheTol())
		h.expect(tb, what+": cached v", h.cacheRow(tb, rb.slotV(r), pos), v, h.cacheTol())
		other := pos + 1
		if other == kernelCtx {
			other = pos - 1
		}
		e := h.kvElem()
		for _, base := range []uint64{rb.slotK(r), rb.slotV(r)} {
			if !poisoned(h.getBytes(tb, base+uint64(other*kvd*e), kvd*e)) {
				tb.Errorf("%s: %s also wrote position %d", h.c.name, what, other)
			}
		}
	}
}

// checkPattn: a prompt chunk of n rows (the first live of them at
// positions prefix.., the others padding) in slot 0, whose cache holds
// random keys and values at positions 0..prefix+live-1 and NaN after:
// each row's output against attention over its window of them.
func checkPattn(h *kernelHarness, tb testing.TB, rb *rowBufs, rng *rand.Rand, n, live, prefix, window int) {
	c := h.cfg()
	qd, kvd := c.QDim(), c.KVDim()
	total := prefix + live
	h.poisonCaches(tb, rb)
	keys := f16Round(h.putKV(tb, rb.slotK(0), randVec(rng, total*kvd, 1)))
	vals := f16Round(h.putKV(tb, rb.slotV(0), randVec(rng, total*kvd, 1)))
	q := randVec(rng, n*qd, 2)
	rows := make([]rowDesc, n)
	isLive := make([]bool, n)
	for r := range rows {
		rows[r] = rowDesc{Pos: int32(prefix + r), Slot: -1}
		if r < live {
			rows[r].Slot, isLive[r] = 0, true
		}
	}
	h.putRows(tb, rb, rows)
	h.put(tb, rb.q, q)
	h.poison(tb, rb.out, 4*n*qd)
	h.run(tb, h.rowLaunch("k_pattn", n, uint64(n), rowLayer, rb.rows, rb.slots, rb.q, rb.out, uint64(window)))
	want := make([]float32, n*qd)
	for r := range live {
		pos := prefix + r
		lo := 0
		if window > 0 {
			lo = max(0, pos-window+1)
		}
		copy(want[r*qd:], attend(c, f16Round(q[r*qd:(r+1)*qd]), keys, vals, lo, pos+1))
	}
	h.expectRows(tb, "k_pattn output", h.get(tb, rb.out, n*qd), want, isLive, tolMMA)
}

// checkBattn: a batch of n rows, row r in slot r at a random position in
// 1..maxPos (row n/2 padding where n > 1), each slot's cache holding
// random keys and values up to its row's position and NaN after: each
// row's output against attention over its own window.
func checkBattn(h *kernelHarness, tb testing.TB, rb *rowBufs, rng *rand.Rand, n, window, maxPos int) {
	c := h.cfg()
	qd, kvd := c.QDim(), c.KVDim()
	h.poisonCaches(tb, rb)
	rows := make([]rowDesc, n)
	isLive := make([]bool, n)
	q := randVec(rng, n*qd, 2)
	want := make([]float32, n*qd)
	for r := range rows {
		pos := 1 + rng.IntN(maxPos)
		rows[r] = rowDesc{Pos: int32(pos), Slot: int32(r)}
		if n > 1 && r == n/2 {
			rows[r].Slot = -1
			continue
		}
		isLive[r] = true
		keys := h.putKV(tb, rb.slotK(r), randVec(rng, (pos+1)*kvd, 1))
		vals := h.putKV(tb, rb.slotV(r), randVec(rng, (pos+1)*kvd, 1))
		lo := 0
		if window > 0 {
			lo = max(0, pos-window+1)
		}
		copy(want[r*qd:], attend(c, q[r*qd:(r+1)*qd], keys, vals, lo, pos+1))
	}
	h.putRows(tb, rb, rows)
	h.put(tb, rb.q, q)
	h.poison(tb, rb.out, 4*n*qd)
	nsplit := h.m.battnSplits(n, kernelCtx)
	h.run(tb, h.rowLaunch("k_battn", n, uint64(n), rowLayer, rb.rows, rb.slots, rb.q, rb.out, rb.part, uint64(nsplit), uint64(window)))
	h.expectRows(tb, fmt.Sprintf("k_battn output (%d slices)", nsplit), h.get(tb, rb.out, n*qd), want, isLive, tolFloat)
}

// BenchmarkRowAttn times mattn.cu's attention on the presets' shapes with
// either cache, one layer, right after one another (us-hot, the median
// launch; what fits stays in L2): k_pattn on a 512-row
// prompt from position 0 (TFLOP/s: 4 * heads * head dim * the causal
// pairs, the useful work of QK^T and PV), and k_battn on 16 and 64 rows at
// positions ~256 and ~1024 (GB/s: the rows' cached keys and values read).
func BenchmarkRowAttn(b *testing.B) {
	if err := Available(); err != nil {
		b.Skipf("no GPU: %v", err)
	}
	var cases []kernelCase
	for _, c := range kernelCases()[:2] { // smollm-135m, bitnet-2b: float32 and float16 caches
		half := c
		half.name, half.opts.KVHalf = c.name+"-kvhalf", true
		cases = append(cases, c, half)
	}
	for _, c := range cases {
		type run struct {
			name string
			n    int
			pos  int
		}
		for _, r := range []run{{"k_pattn", 512, 0}, {"k_battn", 16, 256}, {"k_battn", 16, 1024}, {"k_battn", 64, 256}, {"k_battn", 64, 1024}} {
			b.Run(fmt.Sprintf("%s/%s/n=%d,pos=%d", c.name, r.name, r.n, r.pos), func(b *testing.B) {
				h := kernelHarnessFor(b, c)
				done := h.enter(b)
				defer done()
				rb := h.rowBufs(b)
				cfg := h.cfg()
				qd, kvd := cfg.QDim(), cfg.KVDim()
				rng := rand.New(rand.NewPCG(uint64(r.n+r.pos), 80))
				var l *launch
				var pairs float64
				if r.name == "k_pattn" {
					checkPattn(h, b, rb, rng, r.n, r.n, r.pos, 0) // the inputs, checked
					l = h.rowLaunch("k_pattn", r.n, uint64(r.n), rowLayer, rb.rows, rb.slots, rb.q, rb.out, 0)
					pairs = float64(r.n) * float64(r.n+1) / 2
				} else {
					rows := make([]rowDesc, r.n)
					for i := range rows {
						rows[i] = rowDesc{Pos: int32(r.pos - 8 + rng.IntN(16)), Slot: int32(i)}
						pairs += float64(rows[i].Pos + 1)
						h.putKV(b, rb.slotK(i), randVec(rng, int(rows[i].Pos+1)*kvd, 1))
						h.putKV(b, rb.slotV(i), randVec(rng, int(rows[i].Pos+1)*kvd, 1))
					}
					h.putRows(b, rb, rows)
					h.put(b, rb.q, randVec(rng, r.n*qd, 2))
					l = h.rowLaunch("k_battn", r.n, uint64(r.n), rowLayer, rb.rows, rb.slots, rb.q, rb.out, rb.part,
						uint64(h.m.battnSplits(r.n, kernelCtx)), 0)
				}
				var hot []float64
				for b.Loop() {
					hot = append(hot, h.time(b, l, false))
				}
				us := bench.Median(hot)
				b.ReportMetric(us, "us-hot")
				if r.name == "k_pattn" {
					b.ReportMetric(4*float64(cfg.Heads*cfg.HeadDim)*pairs/us/1e6, "TFLOP/s")
				} else {
					b.ReportMetric(2*pairs*float64(kvd*h.kvElem())/us/1e3, "GB/s")
				}
			})
		}
	}
}

// TestCompileWideHeads compiles the kernels for 256-wide heads (Gemma 3's):
// k_pattn's staged tiles then take 32 positions, to stay within the 48 KB
// of static shared memory, which a module that does not fit fails to load.
func TestCompileWideHeads(t *testing.T) {
	n := testNVRTC(t, true)
	d := featureDims()["gemma3-q8_0"]
	d.Dim, d.HeadDim = 512, 256
	if _, err := n.compile(kernelSource, kernelProgram, d.options("sm_90")); err != nil {
		t.Fatal(err)
	}
}
