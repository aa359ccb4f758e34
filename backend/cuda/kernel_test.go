package cuda

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"

	"github.com/edgellm/edgellm/bench"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/quant"
	"github.com/edgellm/edgellm/sample"
	"github.com/edgellm/edgellm/synth"
)

// The kernel harness, in the manner of llm.c's dev/cuda: each kernel of the
// decode step alone, launched as the session's plan launches it, on fresh
// random inputs written into its device buffers, its outputs poisoned (NaN)
// first, checked against the model package's reference functions
// (TestKernel), then timed with events (BenchmarkKernel). Both need a GPU
// and skip without one. On the GPU machine:
//
//	CGO_ENABLED=0 go test -c -o .devbin/cuda.test ./backend/cuda
//	.devbin/cuda.test -test.run '^TestKernel' -test.bench '^BenchmarkKernel' -test.v
//
// The references round a product's input to int8 as the kernels do
// (staged), and the inputs are drawn so that no value lies near a rounding
// boundary of that grid (safeInput), where the host's and the device's
// arithmetic could round it apart: so every kind is held to the float
// tolerances.

// kernelCtx is the context of the harness's sessions: attention is checked
// up to its last position.
const kernelCtx = 2048

// Tolerances of errVsRMS: float paths differ from the references by the
// order of sums and fast math's few ulp (rsqrtf, __fdividef, __expf); a
// float16 KV cache rounds a written key or value by up to 2^-11 of itself
// (values reach ~4 RMS).
const (
	tolFloat = 2e-4
	tolHalf  = 3e-3
)

// kernelCase is a model the harness loads: a shape (a synth preset, or an
// odd one for the padding paths) with its layers' type and architecture,
// and the options it is loaded with.
type kernelCase struct {
	name   string
	preset synth.Preset
	opts   Options
	// feat, when set, turns on the newer architectures' features on the
	// loaded weights (with random weights for those that have them).
	feat func(w *model.Weights, rng *rand.Rand)
}

func kernelCases() []kernelCase {
	// preset is synth's preset name with one layer, arch and typ replacing
	// its own where given.
	preset := func(name, arch string, typ quant.Type) synth.Preset {
		p := synth.Presets[name]
		p.Layers, p.Type, p.Arch = 1, cmp.Or(typ, p.Type), cmp.Or(arch, p.Arch)
		return p
	}
	odd := func(name, arch string, dim, heads, kvHeads, ffn, vocab int, typ, embed quant.Type) synth.Preset {
		return synth.Preset{Name: name, Arch: arch, Dim: dim, FFN: ffn, Layers: 1, Heads: heads, KVHeads: kvHeads,
			Vocab: vocab, Context: kernelCtx, RopeBase: 10000, SubNorms: arch != "llama", Type: typ, EmbedType: embed}
	}
	return []kernelCase{
		// ternary layers, q8_0 head: QKV and attention fused, Pre on
		{"smollm-135m", preset("smollm-135m", "", 0), Options{}, nil},
		// ternary, long rows: the separate kernels; BitNet b1.58's ReLU² and sub-norms, NeoX RoPE
		{"bitnet-2b", preset("bitnet-2b", "bitnet-b1.58", 0), Options{}, nil},
		// q8_0 layers at SmolLM's shape (rows of 36 chunks: not fused)
		{"smollm-135m-q8_0", preset("smollm-135m", "", quant.Q8_0), Options{}, nil},
		// f16 layers, f32 head, widths that need padding, 44-wide heads
		{"odd-f16", odd("odd-f16", "llama", 264, 6, 2, 712, 1003, quant.F16, quant.F32), Options{}, nil},
		// q8_0 layers fused, 72-wide heads (three dims a lane), sub-norms, SiLU, NeoX RoPE
		{"odd-q8_0", odd("odd-q8_0", "bitnet", 288, 4, 2, 736, 1003, quant.Q8_0, quant.Q8_0), Options{}, nil},
		// ternary with a float16 KV cache, five query heads on one KV head
		{"odd-ternary-kvhalf", odd("odd-ternary-kvhalf", "llama", 320, 5, 1, 832, 1000, quant.Q2_0, quant.Q8_0), Options{KVHalf: true}, nil},
		// every newer feature on q8_0 layers: q/k/v biases and q/k norms
		// (k_qkv_post), a sliding-window layer (k_attn_w), post-norms
		// (k_postnorm), GELU, attention and embedding scales, a soft-cap
		{"features-q8_0", odd("features-q8_0", "llama", 256, 4, 2, 512, 1000, quant.Q8_0, quant.Q8_0), Options{}, allFeatures},
	}
}

// allFeatures turns on every feature the newer architectures add, layer 0
// sliding, on a one-layer model.
func allFeatures(w *model.Weights, rng *rand.Rand) {
	c := &w.Config
	c.RopeStyle, c.Act = model.RopeNeoX, model.GELUTanh
	c.QKVBias, c.QKNorm, c.PostNorms = true, true, true
	c.AttnScale, c.EmbedScale, c.LogitSoftcap = 0.1, 2, 5
	c.Window, c.LocalRopeBase, c.Local = 100, 500, []bool{true}
	qd, kvd := c.QDim(), c.KVDim()
	for l := range w.Layers {
		L := &w.Layers[l]
		L.Bq, L.Bk, L.Bv = randVec(rng, qd, 0.5), randVec(rng, kvd, 0.5), randVec(rng, kvd, 0.5)
		L.QNorm, L.KNorm = randNorm(rng, c.HeadDim), randNorm(rng, c.HeadDim)
		L.AttnPostNorm, L.FFNPostNorm = randNorm(rng, c.Dim), randNorm(rng, c.Dim)
	}
}

// kernelSpec is one kernel's check: the layer-0 launch of kernel in the
// decode step's plan (with prefill, in prefill's, whose products run their
// batch entry points; k_attn is in one or the other), and check, which
// writes fresh inputs for position pos, poisons the outputs, runs l and
// compares.
type kernelSpec struct {
	name      string
	kernel    string
	prefill   bool
	positions []int // checked at each (TestKernel)
	bench     []int // timed at each (BenchmarkKernel)
	check     func(h *kernelHarness, tb testing.TB, rng *rand.Rand, pos int, l *launch)
}

func kernelSpecs() []kernelSpec {
	one, attn := []int{7}, []int{0, 1, 15, 16, 17, 100, 257, 1000, 1023, 1500, kernelCtx - 1}
	long := []int{128, 1024, kernelCtx - 1}
	return []kernelSpec{
		{"k_embed", "k_embed", false, one, one, checkEmbed},
		{"k_qkv", "k_qkv", false, []int{0, 1, 17, 1000, kernelCtx - 1}, []int{128}, checkQKV},
		{"k_qkv_b", "k_qkv", true, []int{0, 17, kernelCtx - 1}, []int{128}, checkQKV},
		{"k_qkv_post", "k_qkv_post", false, []int{0, 1, 17, 1000, kernelCtx - 1}, []int{128}, checkQKVPost},
		{"k_attn", "k_attn", false, attn, long, checkAttn},
		{"k_attn_w", "k_attn_w", false, attn, long, checkAttn},
		{"k_qkv_attn", "k_qkv_attn", false, attn, long, checkQKVAttn},
		{"k_wo", "k_wo", false, one, one, checkWo},
		{"k_wo_b", "k_wo", true, one, one, checkWo},
		{"k_postnorm", "k_postnorm", false, one, one, checkPostNorm},
		{"k_gateup", "k_gateup", false, one, one, checkGateUp},
		{"k_gateup_b", "k_gateup", true, one, one, checkGateUp},
		{"k_down", "k_down", false, one, one, checkDown},
		{"k_down_b", "k_down", true, one, one, checkDown},
		{"k_lmhead", "k_lmhead", false, one, one, checkLMHead},
		{"k_sample", "k_sample", false, one, one, checkSample},
	}
}

// launch is k's launch in h's plans (k_sample's is the session's sampling
// launch), nil where h's steps do not run it.
func (k kernelSpec) launch(h *kernelHarness) *launch {
	switch {
	case k.kernel == "k_sample":
		return &launch{name: "k_sample", fn: h.m.fn["k_sample"], grid: [3]uint32{1, 1, 1}, block: sampleThreads, ptrs: h.s.samplePtrs[:]}
	case k.kernel == "k_attn":
		// the decode step's where QKV and attention are separate, else prefill's
		if l := h.launch(k.kernel, false); l != nil {
			return l
		}
		return h.launch(k.kernel, true)
	}
	return h.launch(k.kernel, k.prefill)
}

// TestKernel checks every kernel of the decode step alone against the
// references, for each kernelCases model.
func TestKernel(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("no GPU: %v", err)
	}
	for ci, c := range kernelCases() {
		t.Run(c.name, func(t *testing.T) {
			h := kernelHarnessFor(t, c)
			for si, k := range kernelSpecs() {
				t.Run(k.name, func(t *testing.T) {
					done := h.enter(t)
					defer done()
					l := k.launch(h)
					if l == nil {
						t.Skipf("%s does not run %s", c.name, k.name)
					}
					for _, pos := range k.positions {
						seed := uint64(1000*ci + 100*si + pos)
						k.check(h, t, rand.New(rand.NewPCG(seed, 77)), pos, l)
						if t.Failed() {
							t.Fatalf("at position %d (seed %d)", pos, seed)
						}
					}
				})
			}
		})
	}
}

// BenchmarkKernel times every kernel of the decode step alone, launched
// without programmatic dependent launch: us-hot is the median of launches
// right after one another (weights in L2 where they fit), us-cold the
// median after L2 was flushed (weights from HBM, as the decode step
// mostly reads them).
func BenchmarkKernel(b *testing.B) {
	if err := Available(); err != nil {
		b.Skipf("no GPU: %v", err)
	}
	for _, c := range kernelCases() {
		for _, k := range kernelSpecs() {
			for _, pos := range k.bench {
				name := c.name + "/" + k.name
				if len(k.bench) > 1 {
					name += fmt.Sprintf("@%d", pos)
				}
				b.Run(name, func(b *testing.B) {
					h := kernelHarnessFor(b, c)
					done := h.enter(b)
					defer done()
					l := k.launch(h)
					if l == nil {
						b.Skipf("%s does not run %s", c.name, k.name)
					}
					k.check(h, b, rand.New(rand.NewPCG(uint64(pos), 78)), pos, l) // the inputs, checked
					var hot, cold []float64
					for b.Loop() {
						cold = append(cold, h.time(b, l, true))
						hot = append(hot, h.time(b, l, false))
					}
					b.ReportMetric(bench.Median(hot), "us-hot")
					b.ReportMetric(bench.Median(cold), "us-cold")
				})
			}
		}
	}
}

// kernelHarness is a loaded model with one session, kept for the whole
// test binary (TestKernel and BenchmarkKernel share it).
type kernelHarness struct {
	c      kernelCase
	w      *model.Weights
	m      *Model
	s      *Session
	freqs  []float32
	flush  uint64 // flushBytes, written to evict L2
	e0, e1 uintptr
}

// flushBytes is the size of kernelHarness.flush: 256 MiB, several times
// the L2 of any card (50 MB on the H100).
const flushBytes = 256 << 20

var kernelHarnesses = map[string]*kernelHarness{}

// kernelHarnessFor loads c (once a test binary), or skips tb without a GPU.
// The model's norm weights are replaced by random ones (synth writes ones),
// so that a norm applied with the wrong weights shows.
func kernelHarnessFor(tb testing.TB, c kernelCase) *kernelHarness {
	tb.Helper()
	if err := Available(); err != nil {
		tb.Skipf("no GPU: %v", err)
	}
	if h := kernelHarnesses[c.name]; h != nil {
		return h
	}
	w, err := synth.Weights(c.preset, synth.Options{Seed: 11})
	if err != nil {
		tb.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(12, 13))
	norm := func(n int) []float32 { return randNorm(rng, n) }
	if c.feat != nil {
		c.feat(w, rng)
	}
	for l := range w.Layers {
		L := &w.Layers[l]
		L.AttnNorm, L.FFNNorm = norm(w.Dim), norm(w.Dim)
		if w.SubNorms {
			L.AttnSubNorm, L.FFNSubNorm = norm(w.Heads*w.HeadDim), norm(w.FFNDim)
		}
	}
	w.OutNorm = norm(w.Dim)
	m, err := load(w, c.opts)
	if err != nil {
		tb.Fatalf("%s: %v", c.name, err)
	}
	s, err := m.newSession(kernelCtx)
	if err != nil {
		tb.Fatalf("%s: %v", c.name, err)
	}
	h := &kernelHarness{c: c, w: w, m: m, s: s, freqs: model.RopeSets(&w.Config)[w.RopeSet(0)]}
	done := h.enter(tb)
	defer done()
	d := m.dev.d
	if h.flush, err = m.dev.alloc(flushBytes, "L2 flush"); err != nil {
		tb.Fatal(err)
	}
	for _, e := range []*uintptr{&h.e0, &h.e1} {
		h.do(tb, d.cuEventCreate(e, eventDefault), "cuEventCreate")
	}
	lk, hk := m.Kinds()
	tb.Logf("%s: layers %s, head %s, fused attention %v, Pre %v, on %s", c.name, lk, hk, h.fused(), m.dims.preLoad(), m.Info().Name)
	kernelHarnesses[c.name] = h
	return h
}

// enter holds the OS thread with the device's context current, until done.
func (h *kernelHarness) enter(tb testing.TB) (done func()) {
	tb.Helper()
	done, err := h.s.enter()
	if err != nil {
		tb.Fatal(err)
	}
	return done
}

func (h *kernelHarness) do(tb testing.TB, r cuResult, what string) {
	tb.Helper()
	if err := h.m.dev.d.check(r, what); err != nil {
		tb.Fatal(err)
	}
}

func (h *kernelHarness) cfg() *model.Config { return &h.w.Config }

func (h *kernelHarness) fused() bool {
	on, _, _ := h.m.dims.fusedAttention()
	return on
}

// launch is the layer-0 launch of kernel name in the decode step's plan or
// prefill's (whose products run their batch entry points), nil if none.
func (h *kernelHarness) launch(name string, prefill bool) *launch {
	plan := h.s.plan
	if prefill {
		plan = h.s.prefill
	}
	for i := range plan {
		if plan[i].name == name {
			return &plan[i]
		}
	}
	return nil
}

// putBytes copies b to dst and waits until it is there: the copy goes by
// the legacy stream, which the session's does not wait for.
func (h *kernelHarness) putBytes(tb testing.TB, dst uint64, b []byte) {
	tb.Helper()
	if len(b) == 0 {
		return
	}
	d := h.m.dev.d
	h.do(tb, d.cuMemcpyHtoD(dst, unsafe.Pointer(&b[0]), uint64(len(b))), "cuMemcpyHtoD")
	h.do(tb, d.cuStreamSynchronize(0), "cuStreamSynchronize(uploads)")
}

func (h *kernelHarness) put(tb testing.TB, dst uint64, v []float32) {
	tb.Helper()
	h.putBytes(tb, dst, f32Bytes(v))
}

// putTP writes the step's token and position (tp).
func (h *kernelHarness) putTP(tb testing.TB, tok int32, pos int) {
	tb.Helper()
	tp := []int32{tok, int32(pos)}
	h.putBytes(tb, h.s.buf.tp, unsafe.Slice((*byte)(unsafe.Pointer(&tp[0])), 8))
}

func (h *kernelHarness) getBytes(tb testing.TB, src uint64, n int) []byte {
	tb.Helper()
	b := make([]byte, n)
	h.do(tb, h.m.dev.d.cuMemcpyDtoH(unsafe.Pointer(&b[0]), src, uint64(n)), "cuMemcpyDtoH")
	return b
}

func (h *kernelHarness) get(tb testing.TB, src uint64, n int) []float32 {
	tb.Helper()
	b := h.getBytes(tb, src, 4*n)
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), n)
}

func (h *kernelHarness) getInt32(tb testing.TB, src uint64) int32 {
	tb.Helper()
	b := h.getBytes(tb, src, 4)
	return *(*int32)(unsafe.Pointer(&b[0]))
}

// poison fills n bytes at dst with 0xff: NaN as float32 and float16, -1 as
// int32, so an output the kernel does not write fails its check.
func (h *kernelHarness) poison(tb testing.TB, dst uint64, n int) {
	tb.Helper()
	h.do(tb, h.m.dev.d.cuMemsetD8Async(dst, 0xff, uint64(n), h.s.stream), "cuMemsetD8Async(poison)")
}

// run launches l alone (its grid: y 1, one token, for the plans'
// launches) and waits for it.
func (h *kernelHarness) run(tb testing.TB, l *launch) {
	tb.Helper()
	if err := h.s.launchOn(l, l.grid[1], "harness "+l.name); err != nil {
		tb.Fatal(err)
	}
	h.do(tb, h.m.dev.d.cuStreamSynchronize(h.s.stream), "cuStreamSynchronize("+l.name+")")
}

// time runs l once between two events and returns the microseconds between
// them; with flush, L2 is evicted first (outside the events).
func (h *kernelHarness) time(tb testing.TB, l *launch, flush bool) float64 {
	tb.Helper()
	d, st := h.m.dev.d, h.s.stream
	if flush {
		h.do(tb, d.cuMemsetD8Async(h.flush, 0, flushBytes, st), "cuMemsetD8Async(L2 flush)")
	}
	h.do(tb, d.cuEventRecord(h.e0, st), "cuEventRecord")
	if err := h.s.launchOn(l, l.grid[1], "harness "+l.name); err != nil {
		tb.Fatal(err)
	}
	h.do(tb, d.cuEventRecord(h.e1, st), "cuEventRecord")
	h.do(tb, d.cuEventSynchronize(h.e1), "cuEventSynchronize")
	var ms float32
	h.do(tb, d.cuEventElapsedTime(&ms, h.e0, h.e1), "cuEventElapsedTime")
	return float64(ms) * 1e3
}

// The KV cache of layer 0, row pos (KVD values) at cache + pos*KVD.

func (h *kernelHarness) kvElem() int { return h.m.dims.kvElemBytes() }

// putCache writes keys and values as rows 0.. of layer 0's cache and
// returns them as the cache holds them (rounded to float16 where it is).
func (h *kernelHarness) putCache(tb testing.TB, keys, vals []float32) (k, v []float32) {
	tb.Helper()
	return h.putKV(tb, h.s.buf.kc, keys), h.putKV(tb, h.s.buf.vc, vals)
}

// putKV writes x as cached values at dst and returns them as the cache
// holds them (rounded to float16 where it is).
func (h *kernelHarness) putKV(tb testing.TB, dst uint64, x []float32) []float32 {
	tb.Helper()
	if h.kvElem() == 4 {
		h.putBytes(tb, dst, f32Bytes(x))
		return x
	}
	b := make([]byte, 2*len(x))
	r := make([]float32, len(x))
	for i, f := range x {
		hf := quant.F32ToF16(f)
		b[2*i], b[2*i+1] = byte(hf), byte(hf>>8)
		r[i] = quant.F16ToF32(hf)
	}
	h.putBytes(tb, dst, b)
	return r
}

// cacheRow reads row pos of layer 0's key (or value) cache.
func (h *kernelHarness) cacheRow(tb testing.TB, cache uint64, pos int) []float32 {
	tb.Helper()
	kvd, e := h.cfg().KVDim(), h.kvElem()
	b := h.getBytes(tb, cache+uint64(pos*kvd*e), kvd*e)
	out := make([]float32, kvd)
	for i := range out {
		if e == 4 {
			out[i] = math.Float32frombits(uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24)
		} else {
			out[i] = quant.F16ToF32(uint16(b[2*i]) | uint16(b[2*i+1])<<8)
		}
	}
	return out
}

func (h *kernelHarness) poisonCacheRow(tb testing.TB, pos int) {
	tb.Helper()
	kvd, e := h.cfg().KVDim(), h.kvElem()
	h.poison(tb, h.s.buf.kc+uint64(pos*kvd*e), kvd*e)
	h.poison(tb, h.s.buf.vc+uint64(pos*kvd*e), kvd*e)
}

// cacheTol is the tolerance of keys and values the kernels write into the
// cache.
func (h *kernelHarness) cacheTol() float64 {
	if h.kvElem() == 2 {
		return tolHalf
	}
	return tolFloat
}

// expect fails tb when got is not within tol of want (errVsRMS).
func (h *kernelHarness) expect(tb testing.TB, what string, got, want []float32, tol float64) {
	tb.Helper()
	e, i := errVsRMS(got, want)
	if !(e <= tol) {
		tb.Errorf("%s: %s: error %.3g of the reference's RMS at [%d] (got %g, want %g; tol %.3g)", h.c.name, what, e, i, got[i], want[i], tol)
	}
}

// errVsRMS is the largest |got[i] - want[i]| over the root mean square of
// want, and where it is; NaN in got counts as infinite.
func errVsRMS(got, want []float32) (float64, int) {
	if len(got) != len(want) {
		return math.Inf(1), 0
	}
	var ss float64
	for _, w := range want {
		ss += float64(w) * float64(w)
	}
	rms := math.Sqrt(ss / float64(max(len(want), 1)))
	if rms == 0 {
		rms = 1
	}
	worst, at := 0.0, 0
	for i := range want {
		e := math.Abs(float64(got[i])-float64(want[i])) / rms
		if math.IsNaN(e) {
			e = math.Inf(1)
		}
		if e > worst {
			worst, at = e, i
		}
	}
	return worst, at
}

// randNorm is n norm weights in [0.5, 1.5): never zero, never all alike.
func randNorm(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = 0.5 + rng.Float32()
	}
	return v
}

func randVec(rng *rand.Rand, n int, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64() * scale)
	}
	return v
}

// ---------------------------------------------------------------- references

// staged is what a product of kind k multiplies by its weights (stage.cu):
// in, RMS-normed with nw where nw is not nil, rounded as the kernels round
// it: to int8 per token for ternary (scale 127 over the absolute maximum),
// per block of 32 for q8_0; f32 and f16 products take it as it is.
func staged(k kind, in, nw []float32, eps float32) []float32 {
	v, _ := stagedGrid(k, in, nw, eps)
	return v
}

// stagedGrid is staged's result and, for each value, its distance on the
// int8 grid to the nearest rounding boundary (half-way between two
// integers); 0.5 where the kind does not round. The norm's factor scales
// the values and their maximum alike, so it does not move them on the grid.
func stagedGrid(k kind, in, nw []float32, eps float32) (v []float32, dist []float64) {
	v = slices.Clone(in)
	if nw != nil {
		model.RMSNorm(v, in, nw, eps)
	}
	dist = make([]float64, len(v))
	for i := range dist {
		dist[i] = 0.5
	}
	round := func(x []float32, dist []float64) {
		am := float32(0)
		for _, f := range x {
			am = max(am, float32(math.Abs(float64(f))))
		}
		if k == kindTernary {
			am = max(am, 1e-5)
		}
		if am == 0 {
			return
		}
		d := am * (1.0 / 127) // as roundInt8, which rounds x below
		for i, f := range x {
			g := float64(f) / float64(d)
			dist[i] = math.Abs(math.Abs(g-math.Trunc(g)) - 0.5)
		}
		roundInt8(x, k == kindTernary)
	}
	switch k {
	case kindTernary:
		round(v, dist)
	case kindQ8:
		for b := 0; b < len(v); b += 32 {
			e := min(b+32, len(v))
			round(v[b:e], dist[b:e])
		}
	}
	return v, dist
}

// safeMargin is the least distance to a rounding boundary safeInput leaves:
// the host's and the device's arithmetic (rsqrtf, __fdividef, other orders
// of sums) put a value on the int8 grid ~1e-4 apart at most.
const safeMargin = 1e-3

// safeInput is n random values for a product of kind k normed with nw,
// those that staged leaves within safeMargin of a rounding boundary drawn
// again until none is, so that the device rounds each to the reference's
// integer.
func safeInput(tb testing.TB, rng *rand.Rand, k kind, n int, nw []float32, eps float32) []float32 {
	tb.Helper()
	x := randVec(rng, n, 1)
	for range 1000 {
		_, dist := stagedGrid(k, x, nw, eps)
		near := false
		for i, d := range dist {
			if d < safeMargin {
				x[i], near = float32(rng.NormFloat64()), true
			}
		}
		if !near {
			return x
		}
	}
	tb.Fatalf("no input of %d values clear of the int8 grid's rounding boundaries", n)
	return nil
}

func matVec(t *model.Tensor, x []float32) []float32 {
	out := make([]float32, t.Rows)
	model.MatVec(out, t, x)
	return out
}

// attend is causal attention of every query head of q over the keys and
// values of positions lo..n-1 (KVD values a position, rows from 0), as the
// reference forward pass computes it (model.Softmax of the scores scaled by
// the model's ScoreScale).
func attend(c *model.Config, q, keys, vals []float32, lo, n int) []float32 {
	kvd, hd := c.KVDim(), c.HeadDim
	out := make([]float32, c.Heads*hd)
	att := make([]float32, n-lo)
	scale := c.ScoreScale()
	for h := range c.Heads {
		kvo := h / (c.Heads / c.KVHeads) * hd
		qh := q[h*hd : (h+1)*hd]
		for j := range att {
			t := lo + j
			var dot float32
			for i, qi := range qh {
				dot += qi * keys[t*kvd+kvo+i]
			}
			att[j] = dot * scale
		}
		model.Softmax(att)
		for j, a := range att {
			t := lo + j
			for i := range hd {
				out[h*hd+i] += a * vals[t*kvd+kvo+i]
			}
		}
	}
	return out
}

// mergePartials merges each head's slots partials (output, maximum,
// sum; attention.cu MergeLoad's layout) by log-sum-exp, in float64.
func mergePartials(part []float32, heads, slots, hd int) []float32 {
	out := make([]float32, heads*hd)
	for h := range heads {
		p := part[h*slots*(hd+2):]
		mx := math.Inf(-1)
		for s := range slots {
			mx = max(mx, float64(p[s*(hd+2)+hd]))
		}
		for d := range hd {
			var num, den float64
			for s := range slots {
				w := math.Exp(float64(p[s*(hd+2)+hd]) - mx)
				num += w * float64(p[s*(hd+2)+d])
				den += w * float64(p[s*(hd+2)+hd+1])
			}
			out[h*hd+d] = float32(num / den)
		}
	}
	return out
}

// randPartials is slots partials a head of heads: maxima in [-4, 4], sums
// in [0.5, 4], outputs of the sum's size.
func randPartials(rng *rand.Rand, heads, slots, hd int) []float32 {
	p := make([]float32, heads*slots*(hd+2))
	for i := 0; i < len(p); i += hd + 2 {
		l := 0.5 + 3.5*rng.Float64()
		for d := range hd {
			p[i+d] = float32(rng.NormFloat64() * l)
		}
		p[i+hd], p[i+hd+1] = float32(8*rng.Float64()-4), float32(l)
	}
	return p
}

// qkvRef is layer 0's q, k and v of input x at position pos, RoPE applied.
func (h *kernelHarness) qkvRef(x []float32, pos int) (q, k, v []float32) {
	c, L := h.cfg(), &h.w.Layers[0]
	xs := staged(h.m.dims.WK, x, L.AttnNorm, c.NormEps)
	q, k, v = matVec(&L.Wq, xs), matVec(&L.Wk, xs), matVec(&L.Wv, xs)
	model.RoPE(q, c.HeadDim, pos, h.freqs, c.RopeStyle)
	model.RoPE(k, c.HeadDim, pos, h.freqs, c.RopeStyle)
	return q, k, v
}

// subNorm is the norm weight w where the model has sub-norms, else nil.
func (h *kernelHarness) subNorm(w []float32) []float32 {
	if h.cfg().SubNorms {
		return w
	}
	return nil
}

// ---------------------------------------------------------------- checks

// checkEmbed: x is the token's embedding row (model.EmbedRow), for the
// first, the last and a random token.
func checkEmbed(h *kernelHarness, tb testing.TB, rng *rand.Rand, pos int, l *launch) {
	c := h.cfg()
	for _, tok := range []int32{0, int32(c.Vocab - 1), int32(rng.IntN(c.Vocab))} {
		h.putTP(tb, tok, pos)
		h.poison(tb, h.s.buf.x, 4*c.Dim)
		h.run(tb, l)
		want := make([]float32, c.Dim)
		model.EmbedRow(want, &h.w.Embed, int(tok))
		model.Scale(want, c.EmbedMul())
		h.expect(tb, fmt.Sprintf("embedding of token %d", tok), h.get(tb, h.s.buf.x, c.Dim), want, 1e-6)
	}
}

// checkQKV: q, and the cache's key and value rows at pos, from RMSNorm(x)
// (the decode step's k_qkv, or with prefill the batch entry point); where
// k_qkv_post finishes them (common.cuh QKV_RAW), the raw products.
func checkQKV(h *kernelHarness, tb testing.TB, rng *rand.Rand, pos int, l *launch) {
	c, b := h.cfg(), &h.s.buf
	qd := c.Heads * c.HeadDim
	if h.m.dims.rawQKV() {
		x := safeInput(tb, rng, h.m.dims.WK, c.Dim, h.w.Layers[0].AttnNorm, c.NormEps)
		h.put(tb, b.x, x)
		h.putTP(tb, 0, pos)
		n := qd + 2*c.KVDim()
		h.poison(tb, b.raw, 4*n)
		h.run(tb, l)
		L := &h.w.Layers[0]
		xs := staged(h.m.dims.WK, x, L.AttnNorm, c.NormEps)
		want := append(append(matVec(&L.Wq, xs), matVec(&L.Wk, xs)...), matVec(&L.Wv, xs)...)
		h.expect(tb, "raw q|k|v", h.get(tb, b.raw, n), want, tolFloat)
		return
	}
	q, _, _ := h.runQKV(tb, rng, pos, l, b.q, 4*qd)
	h.expect(tb, "q", h.get(tb, b.q, qd), q, tolFloat)
}

// checkQKVPost: from raw q|k|v products, q and the cache rows at pos: the
// biases added, each head of q and k RMS-normed, RoPE with layer 0's
// frequencies, as the reference forward does.
func checkQKVPost(h *kernelHarness, tb testing.TB, rng *rand.Rand, pos int, l *launch) {
	c, b := h.cfg(), &h.s.buf
	qd, kvd := c.QDim(), c.KVDim()
	raw := randVec(rng, qd+2*kvd, 1)
	h.put(tb, b.raw, raw)
	h.putTP(tb, 0, pos)
	h.poison(tb, b.q, 4*qd)
	h.poisonCacheRow(tb, pos)
	h.run(tb, l)
	q, k, v := h.postRef(raw, pos)
	h.expect(tb, "q", h.get(tb, b.q, qd), q, tolFloat)
	h.expect(tb, "cached k", h.cacheRow(tb, b.kc, pos), k, h.cacheTol())
	h.expect(tb, "cached v", h.cacheRow(tb, b.vc, pos), v, h.cacheTol())
}

// postRef is layer 0's q, k and v at pos from the raw q|k|v products raw
// (QD + 2*KVD values), as the reference forward finishes them.
func (h *kernelHarness) postRef(raw []float32, pos int) (q, k, v []float32) {
	c, L := h.cfg(), &h.w.Layers[0]
	qd, kvd := c.QDim(), c.KVDim()
	q, k, v = slices.Clone(raw[:qd]), slices.Clone(raw[qd:qd+kvd]), slices.Clone(raw[qd+kvd:qd+2*kvd])
	if c.QKVBias {
		model.Add(q, L.Bq)
		model.Add(k, L.Bk)
		model.Add(v, L.Bv)
	}
	if c.QKNorm {
		model.HeadNorm(q, L.QNorm, c.HeadDim, c.NormEps)
		model.HeadNorm(k, L.KNorm, c.HeadDim, c.NormEps)
	}
	model.RoPE(q, c.HeadDim, pos, h.freqs, c.RopeStyle)
	model.RoPE(k, c.HeadDim, pos, h.freqs, c.RopeStyle)
	return q, k, v
}

// checkPostNorm: x += RMSNorm(y) with the attention block's post-norm (the
// plan's first k_postnorm follows k_wo).
func checkPostNorm(h *kernelHarness, tb testing.TB, rng *rand.Rand, pos int, l *launch) {
	c, b := h.cfg(), &h.s.buf
	y, x := randVec(rng, c.Dim, 3), randVec(rng, c.Dim, 1)
	h.put(tb, b.post, y)
	h.put(tb, b.x, x)
	h.run(tb, l)
	want := make([]float32, c.Dim)
	model.RMSNorm(want, y, h.w.Layers[0].AttnPostNorm, c.NormEps)
	model.Add(want, x)
	h.expect(tb, "x + post-norm(y)", h.get(tb, b.x, c.Dim), want, tolFloat)
}

// runQKV runs l, a kernel that computes layer 0's q, k and v at pos and
// writes k and v into the cache, on a fresh input x, with out (outBytes)
// and the cache rows at pos poisoned first; it checks the cache rows and
// returns the reference's q, k and v.
func (h *kernelHarness) runQKV(tb testing.TB, rng *rand.Rand, pos int, l *launch, out uint64, outBytes int) (q, k, v []float32) {
	tb.Helper()
	c, b := h.cfg(), &h.s.buf
	x := safeInput(tb, rng, h.m.dims.WK, c.Dim, h.w.Layers[0].AttnNorm, c.NormEps)
	h.put(tb, b.x, x)
	h.putTP(tb, 0, pos)
	h.poison(tb, out, outBytes)
	h.poisonCacheRow(tb, pos)
	h.run(tb, l)
	q, k, v = h.qkvRef(x, pos)
	h.expect(tb, "cached k", h.cacheRow(tb, b.kc, pos), k, h.cacheTol())
	h.expect(tb, "cached v", h.cacheRow(tb, b.vc, pos), v, h.cacheTol())
	return q, k, v
}

// checkAttn: k_attn's output over cached rows 0..pos, or k_attn_w's over
// the window's.
func checkAttn(h *kernelHarness, tb testing.TB, rng *rand.Rand, pos int, l *launch) {
	c, b := h.cfg(), &h.s.buf
	qd, kvd := c.Heads*c.HeadDim, c.KVDim()
	q := randVec(rng, qd, 2)
	keys, vals := h.putCache(tb, randVec(rng, (pos+1)*kvd, 1), randVec(rng, (pos+1)*kvd, 1))
	h.put(tb, b.q, q)
	h.putTP(tb, 0, pos)
	h.poison(tb, b.att, 4*qd)
	h.run(tb, l)
	lo := 0
	if l.name == "k_attn_w" {
		lo = max(0, pos-c.Window+1)
	}
	h.expect(tb, "attention output", h.get(tb, b.att, qd), attend(c, q, keys, vals, lo, pos+1), tolFloat)
}

// checkQKVAttn: k_qkv_attn's cache rows at pos and its partials, merged,
// against attention over cached rows 0..pos-1 and this position's own.
func checkQKVAttn(h *kernelHarness, tb testing.TB, rng *rand.Rand, pos int, l *launch) {
	c, b := h.cfg(), &h.s.buf
	kvd := c.KVDim()
	_, splits, _ := h.m.dims.fusedAttention()
	np := c.Heads * fusedPartials(splits, c.HeadDim)
	keys, vals := h.putCache(tb, randVec(rng, pos*kvd, 1), randVec(rng, pos*kvd, 1))
	q, k, v := h.runQKV(tb, rng, pos, l, b.part, 4*np)
	// this position's key and value take part unrounded (the kernel's own)
	want := attend(c, q, append(keys, k...), append(vals, v...), 0, pos+1)
	h.expect(tb, "attention output (partials merged)", mergePartials(h.get(tb, b.part, np), c.Heads, splits+1, c.HeadDim), want, tolFloat)
}

// checkResidual runs a residual product (x += W in) whose input the caller
// has written, x fresh, and compares x's change with want; where the block
// has a post-norm (k_postnorm adds it), the product itself, which the
// launch writes instead.
func (h *kernelHarness) checkResidual(tb testing.TB, rng *rand.Rand, l *launch, what string, want []float32) {
	tb.Helper()
	c, b := h.cfg(), &h.s.buf
	if c.PostNorms {
		h.poison(tb, b.post, 4*c.Dim)
		h.run(tb, l)
		h.expect(tb, what+" (before the post-norm)", h.get(tb, b.post, c.Dim), want, tolFloat)
		return
	}
	x := randVec(rng, c.Dim, 1)
	h.put(tb, b.x, x)
	h.run(tb, l)
	got := h.get(tb, b.x, c.Dim)
	for i := range got {
		got[i] -= x[i]
	}
	h.expect(tb, what, got, want, tolFloat)
}

// checkWo: x += Wo attn_sub_norm(att); where the launch reads k_qkv_attn's
// partials (the fused decode step), they are merged as it loads them.
func checkWo(h *kernelHarness, tb testing.TB, rng *rand.Rand, pos int, l *launch) {
	c, b, L := h.cfg(), &h.s.buf, &h.w.Layers[0]
	qd, nw := c.Heads*c.HeadDim, h.subNorm(L.AttnSubNorm)
	var att []float32
	if l.args[0] == b.part {
		_, splits, _ := h.m.dims.fusedAttention()
		for range 100 { // partials whose merge is clear of the int8 grid's rounding boundaries
			part := randPartials(rng, c.Heads, splits+1, c.HeadDim)
			att = mergePartials(part, c.Heads, splits+1, c.HeadDim)
			if _, dist := stagedGrid(h.m.dims.WK, att, nw, c.NormEps); slices.Min(dist) >= safeMargin {
				h.put(tb, b.part, part)
				break
			}
			att = nil
		}
		if att == nil {
			tb.Fatal("no partials clear of the int8 grid's rounding boundaries")
		}
	} else {
		att = safeInput(tb, rng, h.m.dims.WK, qd, nw, c.NormEps)
		h.put(tb, b.att, att)
	}
	h.checkResidual(tb, rng, l, "x += Wo att", matVec(&L.Wo, staged(h.m.dims.WK, att, nw, c.NormEps)))
}

// checkGateUp: hb = act(Wgate u) * (Wup u), u = RMSNorm(x).
func checkGateUp(h *kernelHarness, tb testing.TB, rng *rand.Rand, pos int, l *launch) {
	c, b, L := h.cfg(), &h.s.buf, &h.w.Layers[0]
	x := safeInput(tb, rng, h.m.dims.WK, c.Dim, L.FFNNorm, c.NormEps)
	h.put(tb, b.x, x)
	h.poison(tb, b.hb, 4*c.FFNDim)
	h.run(tb, l)
	xs := staged(h.m.dims.WK, x, L.FFNNorm, c.NormEps)
	g, u := matVec(&L.Wgate, xs), matVec(&L.Wup, xs)
	for i := range g {
		g[i] = model.Activate(c.Act, g[i]) * u[i]
	}
	h.expect(tb, "FFN hidden", h.get(tb, b.hb, c.FFNDim), g, tolFloat)
}

// checkDown: x += Wdown ffn_sub_norm(hb).
func checkDown(h *kernelHarness, tb testing.TB, rng *rand.Rand, pos int, l *launch) {
	c, L := h.cfg(), &h.w.Layers[0]
	nw := h.subNorm(L.FFNSubNorm)
	hb := safeInput(tb, rng, h.m.dims.WK, c.FFNDim, nw, c.NormEps)
	h.put(tb, h.s.buf.hb, hb)
	h.checkResidual(tb, rng, l, "x += Wdown hb", matVec(&L.Wdown, staged(h.m.dims.WK, hb, nw, c.NormEps)))
}

// checkLMHead: the logits of RMSNorm(x), and their argmax (lowest id on
// ties) in tp[0] and the host's token slot, twice: the second launch
// shows that the first left its ticket counter at zero.
func checkLMHead(h *kernelHarness, tb testing.TB, rng *rand.Rand, pos int, l *launch) {
	c, b := h.cfg(), &h.s.buf
	x := safeInput(tb, rng, h.m.dims.HK, c.Dim, h.w.OutNorm, c.NormEps)
	h.put(tb, b.x, x)
	want := matVec(&h.w.Output, staged(h.m.dims.HK, x, h.w.OutNorm, c.NormEps))
	if c.LogitSoftcap > 0 {
		for i, v := range want {
			want[i] = model.Softcap(v, c.LogitSoftcap)
		}
	}
	for run := range 2 {
		h.putTP(tb, -1, pos)
		h.poison(tb, b.logits, 4*c.Vocab)
		h.poison(tb, b.tokOut, 4)
		h.run(tb, l)
		got := h.get(tb, b.logits, c.Vocab)
		h.expect(tb, fmt.Sprintf("logits (launch %d)", run+1), got, want, tolFloat)
		tok, next := h.getInt32(tb, b.tokOut), h.getInt32(tb, b.tp)
		if am := sample.Argmax(got); tok != am || next != am {
			tb.Errorf("%s: launch %d: argmax %d for the host, %d for the next step; the logits' is %d", h.c.name, run+1, tok, next, am)
		}
	}
}

// checkSample: k_sample's draws from random logits (one seed each, the
// logits written again before each draw: the repetition penalty changes
// them in place) against package sample's distribution, as the selftest
// checks the whole step's: no draw outside it, total variation within
// sampleMaxTV. Its launch is the session's (SetSampling's parameters).
func checkSample(h *kernelHarness, tb testing.TB, rng *rand.Rand, pos int, l *launch) {
	c, b := h.cfg(), &h.s.buf
	logits := randVec(rng, c.Vocab, 3)
	hist := []int32{int32(rng.IntN(c.Vocab)), int32(rng.IntN(c.Vocab)), int32(rng.IntN(c.Vocab))}
	token := int32(rng.IntN(c.Vocab))
	host, err := sample.New(c.Vocab, sampleParams)
	if err != nil {
		tb.Fatal(err)
	}
	for _, t := range append(slices.Clone(hist), token) {
		host.Accept(t)
	}
	ids, probs, err := host.Distribution(slices.Clone(logits))
	if err != nil {
		tb.Fatal(err)
	}
	draws := make([]int32, 0, sampleDraws)
	for i := range sampleDraws {
		p := sampleParams
		p.Seed = uint64(i)
		if ok, err := h.s.SetSampling(p, hist); !ok || err != nil {
			tb.Fatalf("SetSampling(%+v): %v, %v", p, ok, err)
		}
		h.put(tb, b.logits, logits)
		if err := h.s.uploadSampling(token, h.s.stream); err != nil {
			tb.Fatal(err)
		}
		h.putTP(tb, -1, pos)
		h.poison(tb, b.tokOut, 4)
		h.run(tb, l)
		tok, next := h.getInt32(tb, b.tokOut), h.getInt32(tb, b.tp)
		if tok != next {
			tb.Fatalf("%s: draw %d: token %d for the host, %d for the next step", h.c.name, i, tok, next)
		}
		draws = append(draws, tok)
	}
	tv, outside := drawStats(draws, ids, probs)
	if outside > 0 || tv > sampleMaxTV {
		tb.Errorf("%s: %d draws over %d candidates: total variation %.3f (max %.2f), %d outside", h.c.name, len(draws), len(ids), tv, sampleMaxTV, outside)
	}
}

// TestKernelReferences checks the harness's own references on the CPU:
// staged's int8 grid, safeInput's margin, attention split into slices and
// merged by mergePartials against attend in one piece, errVsRMS and
// drawStats.
func TestKernelReferences(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	nw := make([]float32, 200)
	for i := range nw {
		nw[i] = 0.5 + rng.Float32()
	}
	for _, k := range []kind{kindTernary, kindQ8} {
		x := safeInput(t, rng, k, 192, nw[:192], 1e-5)
		v, dist := stagedGrid(k, x, nw[:192], 1e-5)
		if slices.Min(dist) < safeMargin {
			t.Fatalf("%s: safeInput left a value %.2g from a rounding boundary", k, slices.Min(dist))
		}
		block := 192
		if k == kindQ8 {
			block = 32
		}
		for b := 0; b < len(v); b += block {
			vb := v[b : b+block]
			am := float64(slices.Max(vb))
			if m := -float64(slices.Min(vb)); m > am {
				am = m
			}
			for _, f := range vb {
				q := float64(f) / am * 127
				if math.Abs(q-math.Round(q)) > 1e-3 || math.Abs(q) > 127.001 {
					t.Fatalf("%s: staged value %g is not on the int8 grid of %g/127 (%g)", k, f, am, q)
				}
			}
		}
	}
	if v := staged(kindF16, []float32{1, -2}, nil, 1e-5); v[0] != 1 || v[1] != -2 {
		t.Fatalf("f16 staging changed its input: %v", v)
	}

	// Attention of 7 positions, 4 query heads on 2 KV heads, as slices of
	// 3, 3 and 1 positions whose partials merge into the whole.
	c := &model.Config{Heads: 4, KVHeads: 2, HeadDim: 8}
	const n, slots = 7, 3
	kvd, hd := c.KVDim(), c.HeadDim
	q, keys, vals := randVec(rng, c.Heads*hd, 2), randVec(rng, n*kvd, 1), randVec(rng, n*kvd, 1)
	part := make([]float32, c.Heads*slots*(hd+2))
	for h := range c.Heads {
		kvo := h / 2 * hd
		for s := range slots {
			p := part[(h*slots+s)*(hd+2):]
			t0, t1 := 3*s, min(3*s+3, n)
			scores := make([]float64, t1-t0)
			m := math.Inf(-1)
			for t := t0; t < t1; t++ {
				for i := range hd {
					scores[t-t0] += float64(q[h*hd+i]) * float64(keys[t*kvd+kvo+i])
				}
				scores[t-t0] /= math.Sqrt(float64(hd))
				m = max(m, scores[t-t0])
			}
			var l float64
			for t := t0; t < t1; t++ {
				e := math.Exp(scores[t-t0] - m)
				l += e
				for i := range hd {
					p[i] += float32(e) * vals[t*kvd+kvo+i]
				}
			}
			p[hd], p[hd+1] = float32(m), float32(l)
		}
	}
	if e, i := errVsRMS(mergePartials(part, c.Heads, slots, hd), attend(c, q, keys, vals, 0, n)); e > 1e-5 {
		t.Fatalf("merged slices differ from attention in one piece by %.3g at %d", e, i)
	}

	if e, _ := errVsRMS([]float32{1, float32(math.NaN())}, []float32{1, 1}); !math.IsInf(e, 1) {
		t.Fatalf("errVsRMS with NaN = %g, want +Inf", e)
	}
	if e, i := errVsRMS([]float32{1, 2.5}, []float32{1, 2}); math.Abs(e-0.5/math.Sqrt(2.5)) > 1e-9 || i != 1 {
		t.Fatalf("errVsRMS = %g at %d", e, i)
	}
	tv, out := drawStats([]int32{1, 1, 2, 9}, []int32{1, 2}, []float32{0.5, 0.5})
	if math.Abs(tv-0.25) > 1e-12 || out != 1 {
		t.Fatalf("drawStats: TV %g, %d outside; want 0.25, 1", tv, out)
	}
}
