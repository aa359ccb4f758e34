package cuda

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/edgellm/edgellm/backend"
)

// planRows is a many-row workspace for planModel's m without a GPU: each
// buffer a distinct fake address, named in names.
func planRows(m *Model, names map[uint64]string) *rowsBuffers {
	b := &rowsBuffers{nsplit: m.rowsSplits()}
	for i, a := range m.rowsBufferList(b) {
		*a.p = uint64(0x7d0000000000 + 0x10000000*(i+1))
		names[*a.p] = "rows." + rowsNames[i]
	}
	return b
}

// TestRowsLayout: the Go mirrors of rows.cu's Row and Slot have the C
// structs' sizes and field offsets, and the batch graphs' pinned areas do
// not overlap.
func TestRowsLayout(t *testing.T) {
	var s slotDesc
	got := []uintptr{unsafe.Sizeof(rowDesc{}), unsafe.Sizeof(s), unsafe.Offsetof(s.V), unsafe.Offsetof(s.Rope),
		unsafe.Offsetof(s.RopeLocal), unsafe.Offsetof(s.Layer), unsafe.Offsetof(s.Ctx), unsafe.Offsetof(s.Sample)}
	want := []uintptr{16, 56, 8, 16, 24, 32, 40, 48}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("layout %v, want %v (Row: 4 ints; Slot: 4 pointers, 2 long longs, a pointer)", got, want)
		}
	}
	if pinSlots < rowsBatchMax*16 || pinNext < pinSlots+rowsBatchMax*56 || pinBytes < pinNext+4*rowsBatchMax {
		t.Fatalf("pinned areas overlap: rows 0, slots %d, next %d, %d bytes", pinSlots, pinNext, pinBytes)
	}
}

func TestRowsBucket(t *testing.T) {
	for n := 1; n <= rowsBatchMax; n++ {
		size, i := rowsBucket(n)
		if i < 0 || size != rowsBuckets[i] || size < n || (i > 0 && rowsBuckets[i-1] >= n) {
			t.Fatalf("bucket of %d: %d (index %d)", n, size, i)
		}
	}
	for _, n := range []int{rowsBatchMax + 1, 1000} {
		if _, i := rowsBucket(n); i != -1 {
			t.Fatalf("bucket of %d: index %d, want none", n, i)
		}
	}
	if got := fmt.Sprint(rowsBuckets); got != "[1 2 4 8 16 32 64]" {
		t.Fatalf("buckets %s", got)
	}
}

// TestRowsBuffers: the workspace holds rowsPromptMax rows of every
// activation, rowsBatchMax rows of logits, the input formats the model's
// kinds need and no others, and post only with post-norms.
func TestRowsBuffers(t *testing.T) {
	for name, d := range planCases() {
		m, _, _ := planModel(d, planLayers)
		c := &m.cfg
		b := &rowsBuffers{nsplit: m.rowsSplits()}
		size := map[*uint64]int{}
		total := 0
		for _, a := range m.rowsBufferList(b) {
			size[a.p] = a.n
			total += a.n
		}
		qd, kvd := c.QDim(), c.KVDim()
		kp := max(padK(c.Dim), padK(qd), padK(c.FFNDim))
		int8In := d.WK == kindTernary || d.WK == kindQ8 || d.HK == kindTernary || d.HK == kindQ8
		floatIn := d.WK == kindF16 || d.WK == kindF32 || d.HK == kindF16 || d.HK == kindF32
		for _, w := range []struct {
			p    *uint64
			want int
		}{
			{&b.rows, 16 * 512}, {&b.slots, 56 * 64},
			{&b.x, 4 * c.Dim * 512}, {&b.raw, 4 * (qd + 2*kvd) * 512}, {&b.q, 4 * qd * 512}, {&b.att, 4 * qd * 512},
			{&b.hb, 4 * c.FFNDim * 512}, {&b.post, 4 * c.Dim * 512 * b2i(d.PostNorms)},
			{&b.xq, kp * 512 * b2i(int8In)}, {&b.xs, 4 * kp / 32 * 512 * b2i(int8In)}, {&b.xf, 4 * kp * 512 * b2i(floatIn)},
			{&b.logits, 4 * c.Vocab * 64}, {&b.next, 4 * 64}, {&b.part, 4 * m.rowsPartFloats(64, b.nsplit)},
		} {
			if size[w.p] != w.want {
				t.Errorf("%s: a buffer of %d bytes, want %d", name, size[w.p], w.want)
			}
		}
		if len(size) != len(rowsNames) {
			t.Errorf("%s: %d buffers", name, len(size))
		}
		t.Logf("%s: workspace %.1f MiB", name, float64(total)/(1<<20))
	}
}

// TestRowsPlan checks the many-row plan of every planCases shape without
// a GPU: per layer the norm and product pairs, k_rqkv with the layer's
// index and RoPE set, k_pattn (prompt) or k_battn (batch, with the
// workspace's splits) with the layer's window, the residual products into
// x or through k_rpostnorm, every launch of n rows reading the workspace's
// buffers; then the tail.
func TestRowsPlan(t *testing.T) {
	for name, d := range planCases() {
		m, names, _ := planModel(d, planLayers)
		c := &m.cfg
		b := planRows(m, names)
		for _, tc := range []struct {
			n      int
			prompt bool
			tail   rowsTail
		}{{17, true, tailNone}, {512, true, tailNone}, {4, false, tailLogits}, {1, false, tailArgmax}, {64, false, tailSample}} {
			plan := m.rowsPlan(b, tc.n, tc.prompt, tc.tail)
			perLayer := 10 + 2*b2i(c.PostNorms)
			tailN := map[rowsTail]int{tailNone: 0, tailLogits: 2, tailArgmax: 3, tailSample: 3}[tc.tail]
			if want := 1 + planLayers*perLayer + tailN; len(plan) != want {
				t.Fatalf("%s %+v: %d launches, want %d: %s", name, tc, len(plan), want, planNames(plan))
			}
			for _, l := range plan {
				if l.fn != m.fn[l.name] || l.fn == 0 {
					t.Fatalf("%s: %s launches function %d", name, l.name, l.fn)
				}
				if l.args[0] != uint64(tc.n) {
					t.Fatalf("%s: %s of %d rows, want %d", name, l.name, l.args[0], tc.n)
				}
			}
			if e := plan[0]; e.name != "k_rembed" || e.args[1] != b.rows || e.args[5] != b.x || e.grid[1] != uint32(tc.n) {
				t.Fatalf("%s: first launch %s", name, formatPlan(plan[:1], names, nil))
			}
			for l := range planLayers {
				L := &m.layers[l]
				lp := plan[1+l*perLayer : 1+(l+1)*perLayer]
				attn := "k_battn"
				if tc.prompt {
					attn = "k_pattn"
				}
				want := "k_rnorm_dim k_mm_qkv k_rqkv " + attn + " k_rnorm_qd k_mm_wo k_rnorm_dim k_mm_gateup k_rnorm_ffn k_mm_down"
				if c.PostNorms {
					want = strings.Replace(want, "k_mm_wo", "k_mm_wo k_rpostnorm", 1) + " k_rpostnorm"
				}
				if got := planNames(lp); got != want {
					t.Fatalf("%s layer %d: %s, want %s", name, l, got, want)
				}
				window := uint64(0)
				if c.IsLocal(l) {
					window = uint64(c.Window)
				}
				residual := b.x
				if c.PostNorms {
					residual = b.post
				}
				checks := []struct {
					i    int
					args []uint64
				}{
					{0, []uint64{b.x, L.attnNorm, b.xq, b.xs, b.xf}},
					{1, []uint64{b.xq, b.xs, b.xf, L.qkv.w, L.qkv.d, L.qkv.rs, b.raw}},
					{2, []uint64{uint64(l), b.rows, b.slots, b.raw, L.qkvBias, L.qNorm, L.kNorm, b.q, uint64(c.RopeSet(l))}},
					{4, []uint64{b.att, L.attnSub, b.xq, b.xs, b.xf}},
					{5, []uint64{b.xq, b.xs, b.xf, L.wo.w, L.wo.d, L.wo.rs, residual}},
				}
				if tc.prompt {
					checks = append(checks, struct {
						i    int
						args []uint64
					}{3, []uint64{uint64(l), b.rows, b.slots, b.q, b.att, window}})
				} else {
					checks = append(checks, struct {
						i    int
						args []uint64
					}{3, []uint64{uint64(l), b.rows, b.slots, b.q, b.att, b.part, uint64(b.nsplit), window}})
				}
				for _, ch := range checks {
					got := lp[ch.i].args[1:]
					if fmt.Sprint(got) != fmt.Sprint(ch.args) {
						t.Fatalf("%s layer %d %s: args %s", name, l, lp[ch.i].name, formatPlan(lp[ch.i:ch.i+1], names, nil))
					}
				}
				if c.PostNorms {
					if pn := lp[6]; fmt.Sprint(pn.args[1:]) != fmt.Sprint([]uint64{b.post, L.attnPost, b.x}) || pn.grid[0] != uint32(tc.n) {
						t.Fatalf("%s layer %d: %s", name, l, formatPlan(lp[6:7], names, nil))
					}
				}
				down := lp[len(lp)-1-b2i(c.PostNorms)]
				if down.args[4] != L.down.w || down.args[7] != residual {
					t.Fatalf("%s layer %d: %s", name, l, formatPlan([]launch{down}, names, nil))
				}
			}
			tail := plan[len(plan)-tailN:]
			switch tc.tail {
			case tailNone:
				continue
			case tailArgmax:
				if k := tail[2]; k.name != "k_rargmax" || fmt.Sprint(k.args[1:]) != fmt.Sprint([]uint64{b.logits, b.next}) || k.grid[0] != uint32(tc.n) {
					t.Fatalf("%s: %s", name, formatPlan(tail, names, nil))
				}
			case tailSample:
				if k := tail[2]; k.name != "k_rsample" || fmt.Sprint(k.args[1:]) != fmt.Sprint([]uint64{b.logits, b.rows, b.slots, b.next}) ||
					k.block != sampleThreads || k.grid[0] != uint32(tc.n) {
					t.Fatalf("%s: %s", name, formatPlan(tail, names, nil))
				}
			}
			if tail[0].name != "k_rnorm_head" || tail[0].args[1] != b.x || tail[0].args[2] != m.outNrm ||
				tail[1].name != "k_mm_head" || tail[1].args[4] != m.head.w || tail[1].args[7] != b.logits {
				t.Fatalf("%s: head %s", name, formatPlan(tail, names, nil))
			}
		}
	}
}

// TestRowsHead: a prompt's LM head group reads its rows of x.
func TestRowsHead(t *testing.T) {
	m, names, _ := planModel(testDims()[0], 2)
	b := planRows(m, names)
	h := m.rowsHead(b, 130, 7)
	if len(h) != 2 || h[0].args[0] != 7 || h[0].args[1] != b.x+uint64(4*m.cfg.Dim*130) || h[1].args[0] != 7 {
		t.Fatalf("head of rows 130..136: %s", formatPlan(h, names, nil))
	}
}

// TestRowsPlanSkip: the harness's skipped kernels leave the rows plan too.
func TestRowsPlanSkip(t *testing.T) {
	m, names, _ := planModel(testDims()[0], 2)
	b := planRows(m, names)
	full := planNames(m.rowsPlan(b, 8, false, tailSample))
	m.knobs.Skip = "k_mm_gateup,k_rsample"
	got := planNames(m.rowsPlan(b, 8, false, tailSample))
	if want := strings.NewReplacer(" k_mm_gateup", "", " k_rsample", "").Replace(full); got != want {
		t.Fatalf("skipping: %q, want %q", got, want)
	}
}

// TestRowsPlanPinned pins the rows plans of planCases' shapes (as
// TestStepsPlan the decode step's): a prompt chunk of 100 rows and a
// sampling batch of 16. -update-plans rewrites them, e.g. when the kernel
// authors' launch shapes (rowshapes.go) change.
func TestRowsPlanPinned(t *testing.T) {
	for name, d := range planCases() {
		m, names, fnNames := planModel(d, planLayers)
		b := planRows(m, names)
		got := "prompt 100\n" + formatPlan(m.rowsPlan(b, 100, true, tailNone), names, fnNames) +
			"batch 16\n" + formatPlan(m.rowsPlan(b, 16, false, tailSample), names, fnNames)
		checkGolden(t, filepath.Join("testdata", "rows", name+".txt"), got)
	}
}

// TestKVBytes: a session's KV cache is ctx x layers x KV width x 2 x the
// element's bytes, float16 with KVHalf on lossy layers (the KVH define
// overriding it); the device check names bytes needed and free.
func TestKVBytes(t *testing.T) {
	m, _, _ := planModel(presetDims("bitnet-2b", kindTernary, kindQ8), 30)
	if got, want := m.KVBytes(4096), int64(4096*30*640*2*4); got != want {
		t.Fatalf("bitnet-2b, 4096 positions, float32: %d bytes, want %d", got, want)
	}
	m.dims.KVHalf = true
	if got, want := m.KVBytes(4096), int64(4096*30*640*2*2); got != want {
		t.Fatalf("float16: %d bytes, want %d", got, want)
	}
	m.dims.Defines = "KVH=0"
	if got, want := m.KVBytes(100), int64(100*30*640*2*4); got != want {
		t.Fatalf("KVH=0: %d bytes, want %d", got, want)
	}
	if err := fitsFree(1000, 1000, 5000, "x", "card"); err != nil {
		t.Fatal(err)
	}
	err := fitsFree(3<<30, 1<<30, 80<<30, "a session of 131072 positions", "H100")
	if err == nil || !strings.Contains(err.Error(), fmt.Sprint(uint64(3<<30))) || !strings.Contains(err.Error(), fmt.Sprint(1<<30)) ||
		!strings.Contains(err.Error(), "a session of 131072 positions") {
		t.Fatalf("refusal: %v", err)
	}
}

// foreignSession is a backend.Session of another backend.
type foreignSession struct{ backend.Session }

// TestDecodeBatchChecks: bad batches are refused with an error naming the
// session and the problem before anything runs, and no session moves.
func TestDecodeBatchChecks(t *testing.T) {
	m, _, _ := planModel(testDims()[1], 1)
	other, _, _ := planModel(testDims()[1], 1)
	sess := func(pos, ctx int) *Session { return &Session{m: m, pos: pos, ctx: ctx} }
	a, b, full, closed := sess(3, 10), sess(0, 10), sess(10, 10), sess(1, 10)
	closed.closed = true
	foreign := &Session{m: other, ctx: 10}
	v := m.cfg.Vocab
	logits := func(n int) [][]float32 {
		l := make([][]float32, n)
		for i := range l {
			l[i] = make([]float32, v)
		}
		return l
	}
	for _, c := range []struct {
		ss     []backend.Session
		toks   []int32
		logits [][]float32
		want   string
	}{
		{[]backend.Session{a, b}, []int32{1}, logits(2), "2 sessions and 1 tokens"},
		{[]backend.Session{a, b}, []int32{1, 2}, logits(1), "2 sessions and 1 logits"},
		{[]backend.Session{a, foreignSession{}}, []int32{1, 2}, logits(2), "session 1 is not a cuda session"},
		{[]backend.Session{a, (*Session)(nil)}, []int32{1, 2}, logits(2), "session 1 is not a cuda session"},
		{[]backend.Session{foreign}, []int32{1}, logits(1), "session 0 belongs to another model"},
		{[]backend.Session{a, closed}, []int32{1, 2}, logits(2), "session 1 is closed"},
		{[]backend.Session{b, full}, []int32{1, 2}, logits(2), "session 1: position 10 is past the 10-position context"},
		{[]backend.Session{a, b}, []int32{1, int32(v)}, logits(2), fmt.Sprintf("session 1: token %d outside", v)},
		{[]backend.Session{a, b}, []int32{-1, 2}, logits(2), "session 0: token -1 outside"},
		{[]backend.Session{a, b, a}, []int32{1, 2, 3}, logits(3), "session 2 is also session 0"},
		{[]backend.Session{a, b}, []int32{1, 2}, [][]float32{make([]float32, v), make([]float32, v-1)}, "session 1: logits buffer of"},
	} {
		err := m.DecodeBatch(c.ss, c.toks, c.logits)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("DecodeBatch: %v, want an error with %q", err, c.want)
		}
		if !strings.Contains(c.want, "logits") {
			err = m.DecodeBatchSample(c.ss, c.toks, make([]int32, len(c.ss)))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("DecodeBatchSample: %v, want an error with %q", err, c.want)
			}
		}
		if a.pos != 3 || b.pos != 0 || full.pos != 10 || closed.pos != 1 {
			t.Fatalf("after %q sessions moved: %d %d %d %d", c.want, a.pos, b.pos, full.pos, closed.pos)
		}
	}
	if err := m.DecodeBatchSample([]backend.Session{a}, []int32{1}, nil); err == nil || !strings.Contains(err.Error(), "1 sessions and 0 next") {
		t.Fatalf("short next: %v", err)
	}
	// An empty batch is nothing to do.
	if err := m.DecodeBatch(nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	// A good batch on a model loaded without Options.Rows: refused, no
	// session moved, and the model says it does not batch.
	if m.Batching() {
		t.Fatal("Batching true without Options.Rows")
	}
	if err := m.DecodeBatch([]backend.Session{a, b}, []int32{1, 2}, logits(2)); !errors.Is(err, errNoRows) || a.pos != 3 || b.pos != 0 {
		t.Fatalf("without Options.Rows: %v, positions %d %d", err, a.pos, b.pos)
	}
}

// TestRowsSplits: a batch row's attention slices its positions as the
// lone decode step of a session of any context holding it would
// (attention.cu att_slices: min(ceil(positions/16), nsplit)), whatever
// the batch.
func TestRowsSplits(t *testing.T) {
	m, _, _ := planModel(testDims()[0], 1)
	slices := func(pos, nsplit int) int { return min((pos+1+15)/16, nsplit) }
	for _, ctx := range []int{1, 15, 16, 17, 100, 1000, 1024, 1025, 4096, 1 << 20} {
		for _, pos := range []int{0, 1, 15, 16, 17, ctx / 2, ctx - 1} {
			if pos < 0 || pos >= ctx {
				continue
			}
			if got, want := slices(pos, m.rowsSplits()), slices(pos, attnSplits(ctx)); got != want {
				t.Fatalf("position %d of %d: %d slices in a batch, %d alone", pos, ctx, got, want)
			}
		}
	}
}

// TestHeadGroups: a prompt's LM head launches over its chunks cover every
// row once, in groups the logits buffer holds, each to its own row of the
// caller's buffer (PrefillLogits); or the last row only (Prefill); or none.
func TestHeadGroups(t *testing.T) {
	for _, total := range []int{1, 63, 64, 65, 511, 512, 513, 1100} {
		seen := make([]int, total)
		last := 0
		for off := 0; off < total; off += rowsPromptMax {
			n := min(rowsPromptMax, total-off)
			for _, g := range headGroups(off, n, total, true, true) {
				if g.n < 1 || g.n > rowsBatchMax || g.from < 0 || g.from+g.n > n || g.dst != off+g.from {
					t.Fatalf("prompt of %d, chunk at %d: group %+v", total, off, g)
				}
				for r := range g.n {
					seen[g.dst+r]++
				}
			}
			gs := headGroups(off, n, total, true, false)
			if off+n < total && len(gs) != 0 {
				t.Fatalf("prompt of %d: the head of chunk %d before the last: %+v", total, off, gs)
			}
			if off+n == total {
				if len(gs) != 1 || gs[0] != (headGroup{n - 1, 1, 0}) {
					t.Fatalf("prompt of %d: last chunk's head %+v", total, gs)
				}
				last++
			}
			if gs := headGroups(off, n, total, false, false); len(gs) != 0 {
				t.Fatalf("no logits wanted, head %+v", gs)
			}
		}
		for r, c := range seen {
			if c != 1 {
				t.Fatalf("prompt of %d: row %d has logits %d times", total, r, c)
			}
		}
		if last != 1 {
			t.Fatalf("prompt of %d: %d last chunks", total, last)
		}
	}
}
