package cuda

import (
	"fmt"
	"math"
	"runtime"
	"strings"
	"unsafe"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/model"
)

// Op categories of launches, for the profiler.
const (
	opEmbedding = iota
	opQKV
	opAttention
	opOutput
	opFFNUpGate
	opFFNDown
	opLMHead
)

// launch is one kernel launch of the decode step, its arguments fixed at
// session creation (the kernels read token and position from device memory).
type launch struct {
	name  string
	fn    uintptr
	op    int
	grid  [3]uint32
	block uint32
	smem  uint32
	args  []uint64         // argument values, 8-byte slots (ints and floats in the low bytes)
	ptrs  []unsafe.Pointer // &args[i], what cuLaunchKernel reads
	cfg   *launchConfig    // for cuLaunchKernelEx when programmatic launch is on
}

// buffers are a session's device memory, which the launches read and
// write. Activations have a row per token of a prefill batch; decode uses
// row 0.
type buffers struct {
	tp           uint64 // [0] token, [1] position (int32): the host's upload or the LM head's argmax
	toks         uint64 // a prefill batch's token ids
	x            uint64 // the residual stream
	q, att, hb   uint64 // queries, attention output, FFN hidden vector
	logits       uint64
	part         uint64 // attention partials: k_attn's slices of each token, or k_qkv_attn's (fusedPartials a head)
	counters     uint64 // k_attn's tickets, a head per token
	bestv, besti uint64 // the LM head's blocks' best (value, id)
	lmCounter    uint64 // the LM head's ticket
	tokOut       uint64 // the argmax (or sampled) token for the host
	sampleP      uint64 // k_sample's parameter block
	trace        uint64 // k_qkv_attn's phase clocks (FA_TRACE, faTraceMarks readings)
	kc, vc       uint64 // the key and value caches, layer after layer
	rope         uint64 // RoPE rotations (cos, sin) of every position and pair (model.RopeTable)
	ropeLocal    uint64 // the sliding-window layers' own rotations (model.RopeSets), or 0
	raw          uint64 // k_qkv's products for k_qkv_post (kernelDims.rawQKV), or 0
	post         uint64 // a block's product before its post-norm (k_postnorm), or 0
}

// ropeFor is the RoPE table layer l rotates with.
func (b *buffers) ropeFor(c *model.Config, l int) uint64 {
	if c.RopeSet(l) == 1 {
		return b.ropeLocal
	}
	return b.rope
}

// Session is one sequence on the GPU: KV cache, activations and the decode
// step's CUDA graph. It implements backend.Session, backend.ArgmaxDecoder
// and backend.Profiler. A Session is not safe for concurrent use.
type Session struct {
	m      *Model
	ctx    int
	pos    int
	nsplit int
	// prefillRows is the tokens the activation buffers hold: 1, or
	// prefillBatch where the legacy prefill runs (knobs.Knobs.LegacyPrefill);
	// the rows step's prefill uses the Model's workspace.
	prefillRows int
	stream      uintptr
	allocs      []uint64
	pinned      unsafe.Pointer // pinned host memory: [0] token, [1] position, [2] argmax out (int32)
	buf         buffers

	plan    []launch // the decode step
	prefill []launch // a prefill batch's step, up to the LM head
	pinner  runtime.Pinner
	// Prefill's LM head: the decode step's, reading the last token's row.
	prefillHead launch

	// Device sampling (SetSampling): k_sample's arguments, the step graph
	// that ends with it, and the parameters and history waiting to be
	// uploaded with the first sampled step.
	sampleArgs              [4]uint64
	samplePtrs              [4]unsafe.Pointer
	sampleGraph, sampleExec uintptr
	sampleHost              []byte
	sampleHist              []int32
	samplePending           bool

	graph, exec uintptr // the decode step captured

	profile bool
	events  []uintptr
	times   backend.OpTimes

	stats  Stats
	closed bool
}

var (
	_ backend.Session         = (*Session)(nil)
	_ backend.ArgmaxDecoder   = (*Session)(nil)
	_ backend.Profiler        = (*Session)(nil)
	_ backend.LogitsPrefiller = (*Session)(nil)
)

// Stats counts what a session did, for the bench.
type Stats struct {
	Tokens   int // positions run
	H2DBytes int // bytes copied host to device by decode steps
	D2HBytes int // bytes copied device to host by decode steps
}

// NewSession implements backend.Model.
func (m *Model) NewSession(ctx int) (backend.Session, error) {
	return m.newSession(ctx)
}

func (m *Model) newSession(ctx int) (*Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errClosed
	}
	if ctx <= 0 || ctx > 1<<20 {
		return nil, fmt.Errorf("cuda: context %d out of range", ctx)
	}
	kvBytes := uint64(m.KVBytes(ctx))
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := m.dev.bind(); err != nil {
		return nil, err
	}
	s := &Session{m: m, ctx: ctx, prefillRows: 1}
	if m.knobs.LegacyPrefill {
		s.prefillRows = prefillBatch
	}
	ok := false
	defer func() {
		if !ok {
			s.free()
		}
	}()
	d := m.dev.d
	if err := d.check(d.cuStreamCreate(&s.stream, streamNonBlocking), "cuStreamCreate"); err != nil {
		return nil, err
	}
	if err := d.check(d.cuMemHostAlloc(&s.pinned, 64, hostAllocPortable), "cuMemHostAlloc(64 bytes)"); err != nil {
		return nil, err
	}
	s.nsplit = attnSplits(ctx)
	if err := s.allocBuffers(kvBytes); err != nil {
		return nil, err
	}
	s.plan = s.steps(false)
	s.prefill = s.steps(true)
	for _, plan := range [][]launch{s.plan, s.prefill} {
		for i := range plan {
			s.pinArgs(&plan[i])
		}
	}
	for i := range s.plan {
		l := &s.plan[i]
		// Programmatic dependent launch (Hopper+): every kernel after the
		// first may start while its predecessor drains.
		if m.pdl && i > 0 {
			a := &launchAttr{id: launchAttrProgrammaticSerialization}
			a.val[0] = 1
			l.cfg = &launchConfig{gridX: l.grid[0], gridY: l.grid[1], gridZ: l.grid[2], blockX: l.block, blockY: 1, blockZ: 1,
				smem: l.smem, stream: s.stream, attrs: a, numAttrs: 1}
			s.pinner.Pin(a)
			s.pinner.Pin(l.cfg)
		}
		if l.op == opLMHead {
			// Prefill's LM head: its own argument copy, pointed at the last
			// token's row of x before each launch.
			h := *l
			h.cfg = nil
			h.args = append([]uint64(nil), l.args...)
			s.pinArgs(&h)
			s.prefillHead = h
		}
	}
	b := &s.buf
	s.sampleArgs = [4]uint64{b.logits, b.sampleP, b.tp, b.tokOut}
	for i := range s.sampleArgs {
		s.samplePtrs[i] = unsafe.Pointer(&s.sampleArgs[i])
	}
	s.pinner.Pin(&s.sampleArgs[0])
	s.pinner.Pin(&s.samplePtrs[0])
	if err := d.check(d.cuStreamSynchronize(s.stream), "cuStreamSynchronize(session setup)"); err != nil {
		return nil, err
	}
	// The RoPE table went up by a synchronous copy, whose DMA may still be
	// in flight on the legacy stream when the call returns.
	if err := d.check(d.cuStreamSynchronize(0), "cuStreamSynchronize(uploads)"); err != nil {
		return nil, err
	}
	if err := s.capture(); err != nil {
		return nil, err
	}
	m.sessions++
	ok = true
	return s, nil
}

// attnSplits is k_attn's slices a head for a context of ctx positions:
// enough (head, slice) items to spread long contexts over the GPU
// (attention.cu ATT_CHUNK = 16 positions a slice while they last; its
// merge handles up to 64 slices).
func attnSplits(ctx int) int { return min(max((ctx+15)/16, 1), attnMaxSplits) }

// attnMaxSplits is the most slices attention.cu's merge takes.
const attnMaxSplits = 64

// allocBuffers allocates the session's device memory (s.buf), zeroed, and
// uploads its RoPE table; the KV cache takes kvBytes. It first checks that
// the device's free memory holds all of it, so a session too big is
// refused with the bytes needed and free rather than failing in the
// middle with an out-of-memory error.
func (s *Session) allocBuffers(kvBytes uint64) error {
	m, c, d := s.m, &s.m.cfg, s.m.dev.d
	qd := c.Heads * c.HeadDim
	_, _, _, _, pHead := m.dims.products()
	_, splits, _ := m.dims.fusedAttention()
	lmGrid := m.gemvGrid("k_lmhead", m.dims.HK, c.Dim, pHead)
	b := &s.buf
	rows := s.prefillRows
	bufs := []struct {
		p    *uint64
		n    int
		what string
	}{
		{&b.tp, 8, "token and position"}, {&b.toks, 4 * rows, "prefill tokens"},
		{&b.x, 4 * c.Dim * rows, "residual"}, {&b.q, 4 * qd * rows, "queries"},
		{&b.att, 4 * qd * rows, "attention output"}, {&b.hb, 4 * c.FFNDim * rows, "FFN hidden"},
		{&b.logits, 4 * c.Vocab, "logits"},
		{&b.part, 4 * c.Heads * max(s.nsplit*rows*(c.HeadDim+2), fusedPartials(splits, c.HeadDim)), "attention partials"},
		{&b.counters, 4 * c.Heads * rows, "attention counters"},
		{&b.sampleP, sampleParamBytes, "sampling parameters"},
		{&b.bestv, 4 * lmGrid, "argmax values"}, {&b.besti, 4 * lmGrid, "argmax ids"}, {&b.lmCounter, 4, "argmax counter"},
		{&b.tokOut, 4, "argmax token"}, {&b.trace, 8 * faTraceMarks, "phase clocks"},
		{&b.kc, int(kvBytes / 2), "key cache"}, {&b.vc, int(kvBytes / 2), "value cache"},
		{&b.raw, 4 * (qd + 2*c.KVDim()) * rows * b2i(m.dims.rawQKV()), "raw QKV products"},
		{&b.post, 4 * c.Dim * rows * b2i(c.PostNorms), "block outputs before their post-norm"},
	}
	need := uint64(8 * c.HeadDim / 2 * s.ctx * len(model.RopeSets(c))) // the RoPE tables
	for _, a := range bufs {
		need += uint64(a.n)
	}
	if err := m.dev.checkFree(need, fmt.Sprintf("a session of %d positions (KV cache %d bytes)", s.ctx, kvBytes)); err != nil {
		return err
	}
	for _, a := range bufs {
		if a.n == 0 {
			continue // a path this model does not take
		}
		p, err := m.dev.alloc(a.n, a.what)
		if err != nil {
			return err
		}
		s.allocs = append(s.allocs, p)
		*a.p = p
		if err := d.check(d.cuMemsetD8Async(p, 0, uint64(max(a.n, 1)), s.stream), "cuMemsetD8Async("+a.what+")"); err != nil {
			return err
		}
	}
	// The rotations as a table, not sincosf in the kernels: a load, which
	// the QKV products issue before their wait, instead of arithmetic after
	// a load; and the reference's float64 angles.
	tables := []*uint64{&b.rope, &b.ropeLocal} // model.RopeSets' order
	for i, freqs := range model.RopeSets(c) {
		p, err := m.dev.upload(f32Bytes(model.RopeTable(freqs, s.ctx)), "rope table")
		if err != nil {
			return err
		}
		s.allocs = append(s.allocs, p)
		*tables[i] = p
	}
	return nil
}

// steps lists the launches of one step: the decode step's (the graph), or
// with prefill a batch's, which runs the products' batch entry points
// (blockIdx.y the token), reads the batch's token ids and stops before the
// LM head. The decode step runs QKV and attention as one kernel where the
// model's kernels fuse them (kernelDims.fusedAttention); prefill never
// does. Kernels the harness skips (knobs.Knobs.Skip) are left out.
func (s *Session) steps(prefill bool) []launch {
	m, b := s.m, &s.buf
	c := &m.cfg
	var plan []launch
	add := func(name string, op int, grid [3]uint32, block, smem int, args ...uint64) {
		if m.skipped(name) {
			return
		}
		fn := m.fn[name]
		if fb, ok := m.fn[name+batchSuffix]; ok && prefill {
			fn = fb
		}
		plan = append(plan, launch{name: name, fn: fn, op: op, grid: grid, block: uint32(block), smem: uint32(smem), args: args})
	}
	gemv := func(name string, op int, k kind, cols int, p product, args ...uint64) {
		add(name, op, [3]uint32{uint32(m.gemvGrid(name, k, cols, p)), 1, 1}, p.bt, stageBytes(k, cols), args...)
	}
	qd, kvd, kvElem := c.Heads*c.HeadDim, c.KVDim(), m.dims.kvElemBytes()
	pQKV, pWO, pGateUp, pDown, pHead := m.dims.products()
	fused, splits, threads := m.dims.fusedAttention()
	fused = fused && !prefill
	toks := b.tp // the decode step's token: tp[0]
	if prefill {
		toks = b.toks
	}
	e, h := m.embed, m.head
	add("k_embed", opEmbedding, [3]uint32{uint32((c.Dim + 255) / 256), 1, 1}, 256, 0, toks, e.w, e.d, floatArg(m.escale), b.x)
	layerKV := uint64(s.ctx * kvd * kvElem)
	// A block's product goes straight into the residual, or through
	// k_postnorm where the description has post-norms.
	residual := func(name string, op int, k kind, cols int, p product, in, subNorm, w, d, rs, postNorm uint64) {
		if !c.PostNorms {
			gemv(name, op, k, cols, p, in, subNorm, w, d, rs, b.x)
			return
		}
		gemv(name, op, k, cols, p, in, subNorm, w, d, rs, b.post)
		add("k_postnorm", op, [3]uint32{1, 1, 1}, 256, 0, b.post, postNorm, b.x)
	}
	for l := range m.layers {
		L := &m.layers[l]
		kc, vc := b.kc+uint64(l)*layerKV, b.vc+uint64(l)*layerKV
		rope := b.ropeFor(c, l)
		att := b.att
		switch {
		case fused:
			// attention.cu k_qkv_attn: splits blocks a head; k_wo merges their partials
			add("k_qkv_attn", opAttention, [3]uint32{uint32(c.Heads * fusedBlocks(splits)), 1, 1}, threads, stageBytes(m.dims.WK, c.Dim),
				b.tp, b.x, L.attnNorm, L.qkv.w, L.qkv.d, L.qkv.rs, rope, kc, vc, b.part, b.trace)
			att = b.part
		default:
			if m.dims.rawQKV() {
				// the products as they are, then k_qkv_post: one warp a head, 4 a block
				gemv("k_qkv", opQKV, m.dims.WK, c.Dim, pQKV, b.tp, b.x, L.attnNorm, L.qkv.w, L.qkv.d, L.qkv.rs, rope, b.raw, kc, vc)
				add("k_qkv_post", opQKV, [3]uint32{uint32((c.Heads + 2*c.KVHeads + 3) / 4), 1, 1}, 128, 0,
					b.tp, b.raw, L.qkvBias, L.qNorm, L.kNorm, rope, b.q, kc, vc)
			} else {
				gemv("k_qkv", opQKV, m.dims.WK, c.Dim, pQKV, b.tp, b.x, L.attnNorm, L.qkv.w, L.qkv.d, L.qkv.rs, rope, b.q, kc, vc)
			}
			// attention.cu k_attn (k_attn_w in a sliding-window layer): one
			// warp per (head, slice), 4 warps a block
			name := "k_attn"
			if c.IsLocal(l) {
				name = "k_attn_w"
			}
			add(name, opAttention, [3]uint32{uint32((c.Heads*s.nsplit + 3) / 4), 1, 1}, 128, 0,
				b.tp, b.q, kc, vc, b.att, b.part, b.counters, uint64(s.nsplit))
		}
		residual("k_wo", opOutput, m.dims.WK, qd, pWO, att, L.attnSub, L.wo.w, L.wo.d, L.wo.rs, L.attnPost)
		gemv("k_gateup", opFFNUpGate, m.dims.WK, c.Dim, pGateUp, b.x, L.ffnNorm, L.gateUp.w, L.gateUp.d, L.gateUp.rs, b.hb)
		residual("k_down", opFFNDown, m.dims.WK, c.FFNDim, pDown, b.hb, L.ffnSub, L.down.w, L.down.d, L.down.rs, L.ffnPost)
	}
	if !prefill {
		gemv("k_lmhead", opLMHead, m.dims.HK, c.Dim, pHead,
			b.x, m.outNrm, h.w, h.d, h.rs, b.logits, b.bestv, b.besti, b.lmCounter, b.tp, b.tokOut)
	}
	return plan
}

// skipped tells whether the harness leaves kernel name out of the plans
// (knobs.Knobs.Skip).
func (m *Model) skipped(name string) bool {
	skip := m.knobs.Skip
	return skip != "" && strings.Contains(","+skip+",", ","+name+",")
}

// pinArgs points l.ptrs at l.args, what cuLaunchKernel reads, and pins
// both for the session's life (the graph and later launches use them).
func (s *Session) pinArgs(l *launch) { pinLaunch(&s.pinner, l) }

// pinLaunch points l.ptrs at l.args and pins both with p.
func pinLaunch(p *runtime.Pinner, l *launch) {
	l.ptrs = make([]unsafe.Pointer, len(l.args))
	for j := range l.args {
		l.ptrs[j] = unsafe.Pointer(&l.args[j])
	}
	p.Pin(&l.args[0])
	p.Pin(&l.ptrs[0])
}

// floatArg is v as a kernel argument slot (its bits in the low four bytes).
func floatArg(v float32) uint64 { return uint64(math.Float32bits(v)) }

// gemvGrid is the block count of product kernel name (shape p): one pass
// over its items, capped at the blocks resident at once (the driver's
// occupancy for its registers, shared memory and block size; the kernels
// loop over the rest), so no block waits for another to finish and stage
// the input again.
func (m *Model) gemvGrid(name string, k kind, cols int, p product) int {
	perBlock := p.bt / threadsPerRow(k, cols)
	return max(1, min((p.items+perBlock-1)/perBlock, m.resident[name]))
}

// enqueue issues the step's work on the stream: the token/position upload,
// every kernel (and with sampling k_sample after the LM head), and the
// download of the token. With events it records one after each kernel
// (profiling).
func (s *Session) enqueue(events []uintptr, sampling bool) error {
	d := s.m.dev.d
	download := func() error {
		if sampling {
			if err := s.launchSample(); err != nil {
				return err
			}
		}
		return d.check(d.cuMemcpyDtoHAsync(unsafe.Add(s.pinned, 8), s.buf.tokOut, 4, s.stream), "cuMemcpyDtoHAsync(next token)")
	}
	if err := d.check(d.cuMemcpyHtoDAsync(s.buf.tp, s.pinned, 8, s.stream), "cuMemcpyHtoDAsync(token and position)"); err != nil {
		return err
	}
	if events != nil {
		d.cuEventRecord(events[0], s.stream)
	}
	for i := range s.plan {
		l := &s.plan[i]
		var err error
		if l.cfg != nil {
			err = d.check(d.cuLaunchKernelEx(unsafe.Pointer(l.cfg), l.fn, unsafe.Pointer(&l.ptrs[0]), 0), "cuLaunchKernelEx("+l.name+")")
		} else {
			err = s.launchOn(l, l.grid[1], l.name)
		}
		if err != nil {
			return err
		}
		if events != nil {
			d.cuEventRecord(events[i+1], s.stream)
		}
	}
	return download()
}

// launchOn issues l on the session's stream, with gridY blocks in y (a
// prefill batch's tokens) and no programmatic dependent launch; what names
// it in errors.
func (s *Session) launchOn(l *launch, gridY uint32, what string) error {
	d := s.m.dev.d
	r := d.cuLaunchKernel(l.fn, l.grid[0], gridY, l.grid[2], l.block, 1, 1, l.smem, s.stream, unsafe.Pointer(&l.ptrs[0]), 0)
	return d.check(r, "cuLaunchKernel("+what+")")
}

// launchSample issues k_sample (SetSampling's draw from the logits) on the
// session's stream.
func (s *Session) launchSample() error {
	d := s.m.dev.d
	r := d.cuLaunchKernel(s.m.fn["k_sample"], 1, 1, 1, sampleThreads, 1, 1, 0, s.stream, unsafe.Pointer(&s.samplePtrs[0]), 0)
	return d.check(r, "cuLaunchKernel(k_sample)")
}

// capture records the step once as a CUDA graph.
func (s *Session) capture() error {
	return s.captureInto(&s.graph, &s.exec, false)
}

// captureInto records the step (with or without device sampling) into
// *graph and *exec, replacing what they held.
func (s *Session) captureInto(graph, exec *uintptr, sampling bool) error {
	d := s.m.dev.d
	s.destroyGraph(graph, exec)
	if err := d.check(d.cuStreamBeginCapture(s.stream, captureModeThreadLocal), "cuStreamBeginCapture"); err != nil {
		return err
	}
	err := s.enqueue(nil, sampling)
	var g uintptr
	if e := d.check(d.cuStreamEndCapture(s.stream, &g), "cuStreamEndCapture"); err == nil {
		err = e
	}
	if err != nil {
		if g != 0 {
			d.cuGraphDestroy(g)
		}
		return err
	}
	*graph = g
	return d.check(d.cuGraphInstantiateWithFlags(exec, g, 0), "cuGraphInstantiate(decode step)")
}

// destroyGraph frees a captured step and zeroes its handles.
func (s *Session) destroyGraph(graph, exec *uintptr) {
	d := s.m.dev.d
	if *exec != 0 {
		d.cuGraphExecDestroy(*exec)
		*exec = 0
	}
	if *graph != 0 {
		d.cuGraphDestroy(*graph)
		*graph = 0
	}
}

// step runs token at s.pos and waits for it; with sampling the next token
// is drawn on the device (SetSampling) instead of the argmax.
func (s *Session) step(token int32, sampling bool) error {
	if s.closed {
		return errClosed
	}
	c := &s.m.cfg
	if token < 0 || int(token) >= c.Vocab {
		return fmt.Errorf("cuda: token %d out of range [0, %d)", token, c.Vocab)
	}
	if s.pos >= s.ctx {
		return fmt.Errorf("cuda: context of %d positions is full", s.ctx)
	}
	in := unsafe.Slice((*int32)(s.pinned), 2)
	in[0], in[1] = token, int32(s.pos)
	d := s.m.dev.d
	exec := s.exec
	if sampling {
		exec = s.sampleExec
	}
	if s.profile {
		if err := s.enqueue(s.events, sampling); err != nil {
			return err
		}
	} else if err := d.check(d.cuGraphLaunch(exec, s.stream), "cuGraphLaunch(decode step)"); err != nil {
		return err
	}
	if err := d.check(d.cuStreamSynchronize(s.stream), "decode step"); err != nil {
		return err
	}
	if s.profile {
		s.collect()
	}
	s.pos++
	s.stats.Tokens++
	s.stats.H2DBytes += 8
	s.stats.D2HBytes += 4
	s.m.traffic.add(8, 4, s.launches())
	return nil
}

func (s *Session) enter() (func(), error) {
	runtime.LockOSThread()
	if err := s.m.dev.bind(); err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	return runtime.UnlockOSThread, nil
}

// copyLogits brings the last step's logits back.
func (s *Session) copyLogits(logits []float32) error {
	c := &s.m.cfg
	if len(logits) < c.Vocab {
		return fmt.Errorf("cuda: logits buffer of %d, want %d", len(logits), c.Vocab)
	}
	d := s.m.dev.d
	if err := d.check(d.cuMemcpyDtoH(unsafe.Pointer(&logits[0]), s.buf.logits, uint64(4*c.Vocab)), "cuMemcpyDtoH(logits)"); err != nil {
		return err
	}
	s.stats.D2HBytes += 4 * c.Vocab
	return nil
}

// Decode implements backend.Session.
func (s *Session) Decode(token int32, logits []float32) error {
	done, err := s.enter()
	if err != nil {
		return err
	}
	defer done()
	if logits != nil && len(logits) < s.m.cfg.Vocab {
		return fmt.Errorf("cuda: logits buffer of %d, want %d", len(logits), s.m.cfg.Vocab)
	}
	if err := s.step(token, false); err != nil {
		return err
	}
	if logits != nil {
		return s.copyLogits(logits)
	}
	return nil
}

// DecodeArgmax implements backend.ArgmaxDecoder: the greedy next token is
// picked on the device and only its id crosses back.
func (s *Session) DecodeArgmax(token int32) (int32, error) {
	done, err := s.enter()
	if err != nil {
		return 0, err
	}
	defer done()
	if err := s.step(token, false); err != nil {
		return 0, err
	}
	return pinnedInt32(s.pinned, 2), nil
}

// prefillBatch is the most tokens one launch of the legacy prefill
// carries (knobs.Knobs.LegacyPrefill; the activation buffers then have a
// row for each).
const prefillBatch = 64

// Prefill implements backend.Session. The tokens run through the Model's
// many-row step (rowsstep.go) in chunks of up to rowsPromptMax rows, and
// the LM head runs for the last token when logits are wanted. The legacy
// prefill (the harness's knobs.Knobs.LegacyPrefill) runs the decode step's
// kernels over batches of prefillBatch tokens instead (gridDim.y = tokens,
// each at its own position; attention is causal because the batch's keys
// and values are written before it runs).
func (s *Session) Prefill(tokens []int32, logits []float32) error {
	if logits != nil && len(logits) < s.m.cfg.Vocab {
		return fmt.Errorf("cuda: logits buffer of %d, want %d", len(logits), s.m.cfg.Vocab)
	}
	return s.prefillRun(tokens, logits, false)
}

// PrefillLogits implements backend.LogitsPrefiller: Prefill, with the LM
// head run for every token (in groups of rowsBatchMax rows; the legacy
// prefill one launch a token) and each token's logits brought back.
func (s *Session) PrefillLogits(tokens []int32, logits []float32) error {
	if v := s.m.cfg.Vocab; len(logits) != len(tokens)*v {
		return fmt.Errorf("cuda: logits buffer of %d for %d tokens, want %d", len(logits), len(tokens), len(tokens)*v)
	}
	return s.prefillRun(tokens, logits, true)
}

func (s *Session) prefillRun(tokens []int32, logits []float32, all bool) error {
	done, err := s.enter()
	if err != nil {
		return err
	}
	defer done()
	if s.closed {
		return errClosed
	}
	c := &s.m.cfg
	if s.pos+len(tokens) > s.ctx {
		return fmt.Errorf("cuda: prefill of %d tokens at position %d overflows the context of %d", len(tokens), s.pos, s.ctx)
	}
	for _, t := range tokens {
		if t < 0 || int(t) >= c.Vocab {
			return fmt.Errorf("cuda: token %d out of range [0, %d)", t, c.Vocab)
		}
	}
	if !s.m.knobs.LegacyPrefill {
		return s.m.rowsPrefill(s, tokens, logits, all)
	}
	d := s.m.dev.d
	h := &s.prefillHead
	// head runs the LM head on row r of the batch's residual (its
	// arguments are copied at the launch, so the next may point elsewhere).
	head := func(r int) error {
		h.args[0] = s.buf.x + uint64(4*c.Dim*r)
		return s.launchOn(h, 1, "prefill k_lmhead")
	}
	last := 0
	for off := 0; off < len(tokens); off += prefillBatch {
		batch := tokens[off:min(off+prefillBatch, len(tokens))]
		// Copies in stream order, from pageable memory (staged before the
		// call returns): the previous batch's kernels may still be reading
		// both buffers, and a synchronous copy would not wait for them (the
		// session's stream does not block on the legacy stream).
		if err := d.check(d.cuMemcpyHtoDAsync(s.buf.toks, unsafe.Pointer(&batch[0]), uint64(4*len(batch)), s.stream), "cuMemcpyHtoDAsync(prefill tokens)"); err != nil {
			return err
		}
		tp := [2]int32{batch[0], int32(s.pos)}
		if err := d.check(d.cuMemcpyHtoDAsync(s.buf.tp, unsafe.Pointer(&tp[0]), 8, s.stream), "cuMemcpyHtoDAsync(prefill position)"); err != nil {
			return err
		}
		for i := range s.prefill {
			l := &s.prefill[i]
			if err := s.launchOn(l, uint32(len(batch)), "prefill "+l.name); err != nil {
				return err
			}
		}
		if all && h.fn != 0 {
			for r := range batch {
				if err := head(r); err != nil {
					return err
				}
				dst := unsafe.Pointer(&logits[(off+r)*c.Vocab])
				if err := d.check(d.cuMemcpyDtoHAsync(dst, s.buf.logits, uint64(4*c.Vocab), s.stream), "cuMemcpyDtoHAsync(logits)"); err != nil {
					return err
				}
			}
			s.stats.D2HBytes += 4 * c.Vocab * len(batch)
		}
		s.pos += len(batch)
		last = len(batch) - 1
		s.stats.H2DBytes += 4*len(batch) + 8
		s.m.traffic.add(4*len(batch)+8, 0, len(s.prefill))
	}
	if !all && logits != nil && len(tokens) > 0 && h.fn != 0 {
		if err := head(last); err != nil {
			return err
		}
	}
	if err := d.check(d.cuStreamSynchronize(s.stream), "prefill"); err != nil {
		return err
	}
	if !all && logits != nil && len(tokens) > 0 {
		return s.copyLogits(logits)
	}
	return nil
}

// Pos implements backend.Session.
func (s *Session) Pos() int { return s.pos }

// Rewind implements backend.Session. Cache entries past pos are simply
// overwritten by later steps.
func (s *Session) Rewind(pos int) error {
	if pos < 0 || pos > s.pos {
		return fmt.Errorf("cuda: rewind to %d outside [0, %d]", pos, s.pos)
	}
	s.pos = pos
	return nil
}

// LaunchesPerToken is the number of kernels one decode step runs.
func (s *Session) LaunchesPerToken() int { return s.launches() }

func (s *Session) launches() int { return len(s.plan) }

// faTraceMarks is the readings k_qkv_attn built with FA_TRACE writes
// (attention.cu FA_MARK: three blocks, 16 slots each).
const faTraceMarks = 48

// Trace returns the first n clock readings (ns) of the phase clock buffer,
// where k_qkv_attn built with FA_TRACE (knobs.Knobs.Defines) writes its
// phases. For the harness.
func (s *Session) Trace(n int) ([]uint64, error) {
	done, err := s.enter()
	if err != nil {
		return nil, err
	}
	defer done()
	if n <= 0 || n > faTraceMarks {
		return nil, fmt.Errorf("cuda: trace of %d readings out of range", n)
	}
	raw := make([]uint64, n)
	d := s.m.dev.d
	if err := d.check(d.cuMemcpyDtoH(unsafe.Pointer(&raw[0]), s.buf.trace, uint64(8*n)), "cuMemcpyDtoH(trace)"); err != nil {
		return nil, err
	}
	return raw, nil
}

// Stats returns the session's counters.
func (s *Session) Stats() Stats { return s.stats }

// Profile implements backend.Profiler: while on, steps run launch by launch
// (not as the graph) with events between kernels.
func (s *Session) Profile(on bool) {
	if on && s.events == nil {
		done, err := s.enter()
		if err != nil {
			return
		}
		defer done()
		d := s.m.dev.d
		for range len(s.plan) + 1 {
			var e uintptr
			if d.cuEventCreate(&e, eventDefault) != 0 {
				return
			}
			s.events = append(s.events, e)
		}
	}
	s.profile = on && s.events != nil
}

func (s *Session) collect() { addOpTimes(&s.times, s.m.dev.d, s.plan, s.events) }

// addOpTimes adds the times between plan's launches, recorded by events
// (one before the first launch and one after each), to t by op category.
func addOpTimes(t *backend.OpTimes, d *driverAPI, plan []launch, events []uintptr) {
	for i := range plan {
		var ms float32
		if d.cuEventElapsedTime(&ms, events[i], events[i+1]) != 0 {
			continue
		}
		sec := float64(ms) * 1e-3
		switch plan[i].op {
		case opEmbedding:
			t.Embedding += sec
		case opQKV:
			t.QKV += sec
		case opAttention:
			t.Attention += sec
			t.QKVInAttention = plan[i].name == "k_qkv_attn"
		case opOutput:
			t.Output += sec
		case opFFNUpGate:
			t.FFNUpGate += sec
		case opFFNDown:
			t.FFNDown += sec
		case opLMHead:
			t.LMHead += sec
		}
	}
}

// OpTimes implements backend.Profiler.
func (s *Session) OpTimes() backend.OpTimes {
	t := s.times
	s.times = backend.OpTimes{}
	return t
}

func (s *Session) free() {
	d := s.m.dev.d
	s.destroyGraph(&s.graph, &s.exec)
	s.destroyGraph(&s.sampleGraph, &s.sampleExec)
	for _, e := range s.events {
		d.cuEventDestroy(e)
	}
	s.events = nil
	for _, p := range s.allocs {
		d.cuMemFree(p)
	}
	s.allocs = nil
	if s.pinned != nil {
		d.cuMemFreeHost(s.pinned)
		s.pinned = nil
	}
	if s.stream != 0 {
		d.cuStreamDestroy(s.stream)
		s.stream = 0
	}
	s.pinner.Unpin()
}

// Close implements backend.Session.
func (s *Session) Close() error {
	if s.closed {
		return nil
	}
	done, err := s.enter()
	if err != nil {
		return err
	}
	defer done()
	s.free()
	s.closed = true
	s.m.mu.Lock()
	s.m.sessions--
	s.m.mu.Unlock()
	return nil
}

// pinnedInt32 reads int32 slot i of pinned host memory.
func pinnedInt32(p unsafe.Pointer, i int) int32 { return unsafe.Slice((*int32)(p), i+1)[i] }
