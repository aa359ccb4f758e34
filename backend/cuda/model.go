package cuda

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/backend/cuda/internal/knobs"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/quant"
)

// Options tune Load. The kernel harness's experiment switches are not
// here but in backend/cuda/internal/knobs.
type Options struct {
	// Device is the CUDA device ordinal.
	Device int
	// Dense disables the ternary path (layer matrices go to f32/f16/q8_0),
	// for comparisons.
	Dense bool
	// NoPDL turns off programmatic dependent launch (compute capability
	// 9.0+, CUDA 12+; never used elsewhere), which lets each kernel start
	// and warm L2 with its weights while its predecessor drains: a way
	// around a driver that mishandles it, and the comparison's baseline.
	NoPDL bool
	// KVHalf keeps the KV cache in float16, half the device memory a
	// position (long contexts), where the layers are lossy (ternary,
	// q8_0); f32 and f16 layers keep float32 (their logits match the
	// reference to 1e-6). Off by default: it decodes no faster, and
	// float32 keeps the logits nearer the reference.
	KVHalf bool
	// Rows says where prefill and batched decode (backend.BatchDecoder,
	// BatchSampler) run through the many-row step (rows.cu: int8
	// tensor-core products, tiled causal attention with f16 operands).
	// Where it is off, prefill runs the decode step's kernels a token per
	// block row and the model does not batch (Batching is false).
	Rows RowsMode
}

// RowsMode is Options.Rows.
type RowsMode int

const (
	// RowsAuto turns the many-row step on for ternary layers, where every
	// selftest check passes on an H100 (docs/gpu-notes.md v17), and leaves it off for
	// float and q8_0 layers: its f16 attention moves their logits by more
	// than their bounds on some test models.
	RowsAuto RowsMode = iota
	RowsOn
	RowsOff
)

// on tells whether the many-row step runs for layers of kind wk.
func (r RowsMode) on(wk kind) bool { return r == RowsOn || r == RowsAuto && wk == kindTernary }

// devMat is a matrix in device memory.
type devMat struct {
	kind       kind
	rows, cols int
	w, d, rs   uint64
	bytes      int
}

type devLayer struct {
	attnNorm, attnSub, ffnNorm, ffnSub uint64
	attnPost, ffnPost                  uint64 // post-norms (model.Config.PostNorms)
	qkvBias, qNorm, kNorm              uint64 // stacked q|k|v biases; q and k head norms
	qkv, wo, gateUp, down              devMat
}

// features are the model.Features the GPU backend implements: all of
// them, the newer ones outside the fused kernels' patterns
// (kernelDims.fusedAttention).
var features = model.AllFeatures

// layerVec is one of a layer's vectors that the kernels read (norm
// weights, biases), the devLayer field it goes to, and its width.
type layerVec struct {
	v    []float32
	n    int
	name string
	dst  func(*devLayer) *uint64
}

// layerVecs lists layer L's vectors as the description c has them.
func layerVecs(c *model.Config, L *model.Layer) []layerVec {
	qd, kvd := c.QDim(), c.KVDim()
	vs := []layerVec{
		{L.AttnNorm, c.Dim, "attn_norm", func(d *devLayer) *uint64 { return &d.attnNorm }},
		{L.FFNNorm, c.Dim, "ffn_norm", func(d *devLayer) *uint64 { return &d.ffnNorm }},
	}
	if c.SubNorms {
		vs = append(vs, layerVec{L.AttnSubNorm, qd, "attn_sub_norm", func(d *devLayer) *uint64 { return &d.attnSub }},
			layerVec{L.FFNSubNorm, c.FFNDim, "ffn_sub_norm", func(d *devLayer) *uint64 { return &d.ffnSub }})
	}
	if c.PostNorms {
		vs = append(vs, layerVec{L.AttnPostNorm, c.Dim, "post_attention_norm", func(d *devLayer) *uint64 { return &d.attnPost }},
			layerVec{L.FFNPostNorm, c.Dim, "post_ffw_norm", func(d *devLayer) *uint64 { return &d.ffnPost }})
	}
	if c.QKNorm {
		vs = append(vs, layerVec{L.QNorm, c.HeadDim, "attn_q_norm", func(d *devLayer) *uint64 { return &d.qNorm }},
			layerVec{L.KNorm, c.HeadDim, "attn_k_norm", func(d *devLayer) *uint64 { return &d.kNorm }})
	}
	if c.QKVBias {
		// one vector, as the QKV rows are stacked
		bias := append(append(append([]float32(nil), L.Bq...), L.Bk...), L.Bv...)
		if len(L.Bq) != qd || len(L.Bk) != kvd {
			bias = nil // a wrong part: the stacked check below names it
		}
		vs = append(vs, layerVec{bias, qd + 2*kvd, "attn_q|k|v.bias", func(d *devLayer) *uint64 { return &d.qkvBias }})
	}
	return vs
}

// Model is a network resident on one GPU. It implements backend.Model.
type Model struct {
	mu     sync.Mutex
	dev    *device
	cfg    model.Config
	dims   kernelDims
	mod    uintptr
	fn     map[string]uintptr
	layers []devLayer
	embed  devMat
	head   devMat
	escale float32
	outNrm uint64
	allocs []uint64

	pdl         bool           // launch with programmatic stream serialization
	resident    map[string]int // product kernel -> blocks resident at once over the device
	knobs       knobs.Knobs    // the harness's switches when the model was loaded
	manyRows    bool           // Options.Rows: prefill and batches through the many-row step
	weightBytes int
	embedBytes  int  // of a separate (untied) embedding table
	cached      bool // kernels came from the disk cache
	sessions    int
	closed      bool
	traffic     counters

	// rowsMu makes the forward passes of the many-row step (prompt chunks
	// and decode batches) take turns on rows, its workspace, which is
	// allocated at the first (rowsstep.go).
	rowsMu sync.Mutex
	rows   *rowsState
}

var _ backend.Model = (*Model)(nil)

// layerMatrices are a layer's seven matrices in the order the device
// stacks them: q, k, v (one qkv product), o, gate, up (one), down.
func layerMatrices(L *model.Layer) []*model.Tensor {
	return []*model.Tensor{&L.Wq, &L.Wk, &L.Wv, &L.Wo, &L.Wgate, &L.Wup, &L.Wdown}
}

// Load repacks w for the GPU, uploads it once and compiles the kernels for
// the card found (or takes them from the disk cache).
func Load(w *model.Weights, opts Options) (backend.Model, error) {
	return load(w, opts)
}

func load(w *model.Weights, opts Options) (*Model, error) {
	if w == nil {
		return nil, fmt.Errorf("cuda: Load: nil weights")
	}
	c := w.Config
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("cuda: %w", err)
	}
	if err := model.CheckFeatures(&c, "cuda", features...); err != nil {
		return nil, err
	}
	if len(w.Layers) != c.Layers {
		return nil, fmt.Errorf("cuda: %d layers of weights, config says %d", len(w.Layers), c.Layers)
	}
	if c.HeadDim > 256 || c.HeadDim%4 != 0 {
		return nil, fmt.Errorf("cuda: head size %d: the kernels need a multiple of 4 up to 256", c.HeadDim)
	}
	qd, kvd := c.Heads*c.HeadDim, c.KVDim()

	// Check every tensor before packing anything.
	type shaped struct {
		t          *model.Tensor
		rows, cols int
	}
	var all []shaped
	for l := range w.Layers {
		L := &w.Layers[l]
		all = append(all, shaped{&L.Wq, qd, c.Dim}, shaped{&L.Wk, kvd, c.Dim}, shaped{&L.Wv, kvd, c.Dim},
			shaped{&L.Wo, c.Dim, qd}, shaped{&L.Wgate, c.FFNDim, c.Dim}, shaped{&L.Wup, c.FFNDim, c.Dim},
			shaped{&L.Wdown, c.Dim, c.FFNDim})
		for _, v := range layerVecs(&c, L) {
			if len(v.v) != v.n {
				return nil, fmt.Errorf("cuda: layer %d %s has %d values, want %d", l, v.name, len(v.v), v.n)
			}
		}
	}
	all = append(all, shaped{&w.Embed, c.Vocab, c.Dim}, shaped{&w.Output, c.Vocab, c.Dim})
	for _, s := range all {
		if err := checkTensor(s.t, s.rows, s.cols); err != nil {
			return nil, err
		}
	}
	if len(w.OutNorm) != c.Dim {
		return nil, fmt.Errorf("cuda: output_norm has %d values, want %d", len(w.OutNorm), c.Dim)
	}

	// The layer matrices are ternary on the device when every one of them is
	// uniformly ternary, else one dense kind for all (so the kernels are
	// compiled once). The dense kind is known from the types alone; whether
	// the ternary types really are {-a, 0, +a} per row shows only while
	// packing, so a layer that is not sends the upload back to the start in
	// the dense kind (files of one quantizer are all or nothing).
	dense, allTernary := kindQ8, true
	for l := range w.Layers {
		for _, t := range layerMatrices(&w.Layers[l]) {
			if !quant.IsTernary(t.Type) {
				allTernary = false
				dense = widest(dense, denseKindFor(t.Type))
			}
		}
	}
	wk := dense
	if allTernary && !opts.Dense {
		wk = kindTernary
	}

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	dev, err := openDevice(opts.Device)
	if err != nil {
		return nil, err
	}
	m := &Model{dev: dev, cfg: c, fn: map[string]uintptr{}, knobs: knobs.Get()}
	m.pdl = !opts.NoPDL && dev.info.ComputeMajor >= 9 && dev.d.cuLaunchKernelEx != nil
	ok := false
	defer func() {
		if !ok {
			m.free()
		}
	}()

	up := func(b []byte, what string) (uint64, error) {
		p, err := dev.upload(b, what)
		if err == nil {
			m.allocs = append(m.allocs, p)
			m.weightBytes += len(b)
		}
		return p, err
	}
	upMat := func(h *hostMat, what string) (devMat, error) {
		dm := devMat{kind: h.kind, rows: h.rows, cols: h.cols}
		var err error
		if dm.w, err = up(h.w, what); err != nil {
			return dm, err
		}
		if h.kind == kindQ8 {
			if dm.d, err = up(h.d, what+" scales"); err != nil {
				return dm, err
			}
		}
		if dm.rs, err = up(f32Bytes(h.rs), what+" row scales"); err != nil {
			return dm, err
		}
		dm.bytes = len(h.w) + len(h.d)
		return dm, nil
	}
	upVec := func(v []float32, what string) (uint64, error) { return up(f32Bytes(v), what) }

	// Each layer is packed, uploaded and dropped before the next, and its
	// file pages released (the uploads are staged copies, so neither host
	// copy is needed after them): the host holds about one layer at a time
	// beside the file's mapping, not the whole repacked model.
	upLayers := func(wk kind) (uniform bool, err error) {
		m.layers = make([]devLayer, c.Layers)
		for l := range w.Layers {
			L := &w.Layers[l]
			var lm [7]*hostMat
			for i, t := range layerMatrices(L) {
				if wk == kindTernary {
					var good bool
					if lm[i], good, err = packTernary(t); err != nil || !good {
						return false, err
					}
				} else if lm[i], err = packDense(t, wk); err != nil {
					return false, err
				}
			}
			dl := &m.layers[l]
			name := fmt.Sprintf("blk.%d", l)
			if dl.qkv, err = upMat(stackRows(lm[0], lm[1], lm[2]), name+".attn_qkv"); err != nil {
				return false, err
			}
			if dl.wo, err = upMat(lm[3], name+".attn_output"); err != nil {
				return false, err
			}
			if dl.gateUp, err = upMat(stackRows(lm[4], lm[5]), name+".ffn_gate_up"); err != nil {
				return false, err
			}
			if dl.down, err = upMat(lm[6], name+".ffn_down"); err != nil {
				return false, err
			}
			for _, v := range layerVecs(&c, L) {
				if *v.dst(dl), err = upVec(v.v, name+"."+v.name); err != nil {
					return false, err
				}
			}
			for _, t := range layerMatrices(L) {
				w.ReleaseTensor(t)
			}
		}
		return true, nil
	}
	uniform, err := upLayers(wk)
	if err != nil {
		return nil, err
	}
	if !uniform {
		for _, p := range m.allocs {
			dev.d.cuMemFree(p)
		}
		m.allocs, m.weightBytes = nil, 0
		wk = dense
		if _, err := upLayers(wk); err != nil {
			return nil, err
		}
	}

	// LM head and embedding. Tied weights share one device copy.
	hk := denseKindFor(w.Output.Type)
	hm, err := packDense(&w.Output, hk)
	if err != nil {
		return nil, err
	}
	if m.head, err = upMat(hm, "output"); err != nil {
		return nil, err
	}
	w.ReleaseTensor(&w.Output)
	tied := w.Tied || (&w.Embed.Data[0] == &w.Output.Data[0] && w.Embed.Type == w.Output.Type)
	ek := hk
	if tied {
		m.embed = m.head
	} else {
		ek = denseKindFor(w.Embed.Type)
		em, err := packDense(&w.Embed, ek)
		if err != nil {
			return nil, err
		}
		before := m.weightBytes
		if m.embed, err = upMat(em, "token_embd"); err != nil {
			return nil, err
		}
		w.ReleaseTensor(&w.Embed)
		// A step reads one row of a separate embedding table, not all of it.
		m.embedBytes = m.weightBytes - before
	}
	m.escale = tensorScale(&w.Embed) * c.EmbedMul()
	if m.outNrm, err = upVec(w.OutNorm, "output_norm"); err != nil {
		return nil, err
	}

	m.dims = kernelDims{Dim: c.Dim, FFN: c.FFNDim, Heads: c.Heads, KVHeads: c.KVHeads, HeadDim: c.HeadDim,
		Vocab: c.Vocab, Eps: c.NormEps, NeoX: c.RopeStyle == model.RopeNeoX, ReLU2: c.Act == model.ReLU2,
		GELU: c.Act == model.GELUTanh, SubNorms: c.SubNorms, QKVBias: c.QKVBias, QKNorm: c.QKNorm, PostNorms: c.PostNorms,
		AttnScale: c.AttnScale, LogitCap: c.LogitSoftcap,
		WK: wk, HK: hk, EK: ek, SMs: dev.sms, KVHalf: opts.KVHalf && kvHalfFor(wk), Defines: m.knobs.Defines}
	m.manyRows = opts.Rows.on(wk) // the layers' kind as packed (rows that don't fit fall back to dense)
	if c.Local != nil {
		m.dims.Window = c.Window
	}
	for _, sb := range []int{stageBytes(wk, c.Dim), stageBytes(wk, qd), stageBytes(wk, c.FFNDim), stageBytes(hk, c.Dim)} {
		if sb+1024 > dev.maxSmem {
			return nil, fmt.Errorf("cuda: a product needs %d bytes of shared memory, %s allows %d", sb, dev.info.Name, dev.maxSmem)
		}
	}
	if err := m.loadKernels(); err != nil {
		return nil, err
	}
	// Uploads are synchronous copies from pageable memory: they return
	// once staged, with the DMA possibly still in flight on the legacy
	// stream, which the sessions' streams do not wait for.
	if err := dev.d.check(dev.d.cuStreamSynchronize(0), "cuStreamSynchronize(weight uploads)"); err != nil {
		return nil, err
	}
	ok = true
	// The host copies made while packing are garbage now: hand their pages
	// back, so a model living on the GPU does not keep its repacked size
	// resident on the host too (on boards that share one memory, that is
	// the GPU's memory).
	debug.FreeOSMemory()
	return m, nil
}

// loadKernels compiles (or reads from the cache) and loads the module.
func (m *Model) loadKernels() error {
	dev := m.dev
	cubin, cached, err := compileCached(dev.n, m.dims, dev.arch, dev.info.DriverVersion)
	if err != nil {
		return err
	}
	m.cached = cached
	if err := dev.d.check(dev.d.cuModuleLoadData(&m.mod, unsafePtr(cubin)), "cuModuleLoadData(kernels for "+dev.arch+")"); err != nil {
		return err
	}
	for _, name := range kernelNames {
		var f uintptr
		if err := dev.d.check(dev.d.cuModuleGetFunction(&f, m.mod, name), "cuModuleGetFunction("+name+")"); err != nil {
			return err
		}
		m.fn[name] = f
	}
	c := &m.cfg
	smem := map[string]int{
		"k_qkv":      stageBytes(m.dims.WK, c.Dim),
		"k_qkv_attn": stageBytes(m.dims.WK, c.Dim),
		"k_wo":       stageBytes(m.dims.WK, c.Heads*c.HeadDim),
		"k_gateup":   stageBytes(m.dims.WK, c.Dim),
		"k_down":     stageBytes(m.dims.WK, c.FFNDim),
		"k_lmhead":   stageBytes(m.dims.HK, c.Dim),
	}
	for _, name := range batchKernels {
		smem[name+batchSuffix] = smem[name]
	}
	for name, n := range smem {
		if err := dev.d.check(dev.d.cuFuncSetAttribute(m.fn[name], funcAttrMaxDynamicShared, int32(n)),
			fmt.Sprintf("cuFuncSetAttribute(%s, dynamic shared memory %d)", name, n)); err != nil {
			return err
		}
	}
	// The many-row kernels' dynamic shared memory beyond the default 48 KB,
	// the most any n asks for (their authors' shapes).
	for _, name := range rowsShaped {
		most := 0
		for n := 1; n <= rowsPromptMax; n++ {
			_, _, sm := m.rowShape(name, n)
			most = max(most, sm)
		}
		if most <= 48<<10 {
			continue
		}
		if most+1024 > dev.maxSmem {
			return fmt.Errorf("cuda: %s needs %d bytes of shared memory, %s allows %d", name, most, dev.info.Name, dev.maxSmem)
		}
		if err := dev.d.check(dev.d.cuFuncSetAttribute(m.fn[name], funcAttrMaxDynamicShared, int32(most)),
			fmt.Sprintf("cuFuncSetAttribute(%s, dynamic shared memory %d)", name, most)); err != nil {
			return err
		}
	}
	// How many blocks of each product are resident at once: its grid's cap.
	qkv, wo, gateUp, down, head := m.dims.products()
	m.resident = map[string]int{}
	for name, bt := range map[string]int{"k_qkv": qkv.bt, "k_wo": wo.bt, "k_gateup": gateUp.bt, "k_down": down.bt, "k_lmhead": head.bt} {
		var per int32
		if err := dev.d.check(dev.d.cuOccupancyMaxActiveBlocksPerMultiprocessor(&per, m.fn[name], int32(bt), uint64(smem[name])),
			"cuOccupancyMaxActiveBlocksPerMultiprocessor("+name+")"); err != nil {
			return err
		}
		m.resident[name] = max(int(per), 1) * dev.sms
	}
	return nil
}

func (m *Model) free() {
	if m.rows != nil {
		m.rows.free(m.dev.d)
		m.rows = nil
	}
	for _, p := range m.allocs {
		m.dev.d.cuMemFree(p)
	}
	m.allocs = nil
	if m.mod != 0 {
		m.dev.d.cuModuleUnload(m.mod)
		m.mod = 0
	}
	m.dev.release()
}

// Name implements backend.Model.
func (m *Model) Name() string { return "cuda" }

// Config implements backend.Model.
func (m *Model) Config() *model.Config { return &m.cfg }

// Info describes the device the model lives on.
func (m *Model) Info() DeviceInfo { return m.dev.info }

// WeightBytes is the bytes of weights resident on the device.
func (m *Model) WeightBytes() int { return m.weightBytes }

// PDL reports whether kernels are launched with programmatic dependent launch.
func (m *Model) PDL() bool { return m.pdl }

// Kinds reports the device formats chosen for the layer matrices and the LM
// head ("ternary", "f32", "f16", "q8_0").
func (m *Model) Kinds() (layers, head string) { return m.dims.WK.String(), m.dims.HK.String() }

// Close implements backend.Model: it frees the device memory.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	if m.sessions > 0 {
		return fmt.Errorf("cuda: Close with %d sessions open", m.sessions)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := m.dev.bind(); err != nil {
		return err
	}
	m.free()
	m.closed = true
	return nil
}

// KVBytes is the device memory of a session's KV cache at ctx positions:
// ctx x layers x KV width x 2 (keys and values) x the cache's element
// bytes (4, or 2 with Options.KVHalf). A session also holds a few
// vectors of activations and its RoPE table beside it; NewSession refuses
// a session the device's free memory cannot hold.
func (m *Model) KVBytes(ctx int) int64 { return m.cfg.KVBytes(ctx, m.dims.kvElemBytes()) }
