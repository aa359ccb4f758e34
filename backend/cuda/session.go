package cuda

import (
	"fmt"
	"runtime"
	"unsafe"

	"github.com/edgellm/edgellm/backend"
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

// Session is one sequence on the GPU: KV cache, activations and the decode
// step's CUDA graph. It implements backend.Session, backend.ArgmaxDecoder
// and backend.Profiler. A Session is not safe for concurrent use.
type Session struct {
	m      *Model
	ctx    int
	pos    int
	nsplit int
	stream uintptr
	allocs []uint64
	pinned unsafe.Pointer // pinned host memory: [0] token, [1] position, [2] argmax out (int32)

	tp, x, logits, tokOut uint64

	plan   []launch
	pinner runtime.Pinner
	graph  uintptr
	exec   uintptr

	profile bool
	events  []uintptr
	times   backend.OpTimes

	stats  Stats
	closed bool
}

var (
	_ backend.Session       = (*Session)(nil)
	_ backend.ArgmaxDecoder = (*Session)(nil)
	_ backend.Profiler      = (*Session)(nil)
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
	c := &m.cfg
	kvd := c.KVDim()
	if ctx <= 0 || ctx > 1<<20 {
		return nil, fmt.Errorf("cuda: context %d out of range", ctx)
	}
	kvBytes := 2 * uint64(c.Layers) * uint64(ctx) * uint64(kvd) * 4
	if kvBytes > m.dev.info.TotalMemory {
		return nil, fmt.Errorf("cuda: a KV cache of %d positions needs %d bytes, %s has %d", ctx, kvBytes, m.dev.info.Name, m.dev.info.TotalMemory)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := m.dev.bind(); err != nil {
		return nil, err
	}
	s := &Session{m: m, ctx: ctx}
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
	// Flash-decoding splits: enough blocks to spread long contexts, each
	// split at most ATT_MAXLEN (1024) positions.
	s.nsplit = min(max((ctx+15)/16, 1), 64) // kernels.cu ATT_CHUNK = 16
	s.nsplit = max(s.nsplit, (ctx+1023)/1024)

	qd := c.Heads * c.HeadDim
	lmGrid := m.gemvGrid(m.dims.HK, c.Dim, c.Vocab)
	alloc := func(n int, what string) (uint64, error) {
		p, err := m.dev.alloc(n, what)
		if err == nil {
			s.allocs = append(s.allocs, p)
			err = d.check(d.cuMemsetD8Async(p, 0, uint64(max(n, 1)), s.stream), "cuMemsetD8Async("+what+")")
		}
		return p, err
	}
	var err error
	var q, att, hb, part, counters, bestv, besti, lmCounter, kc, vc uint64
	bufs := []struct {
		p    *uint64
		n    int
		what string
	}{
		{&s.tp, 8, "token and position"}, {&s.x, 4 * c.Dim, "residual"}, {&q, 4 * qd, "queries"},
		{&att, 4 * qd, "attention output"}, {&hb, 4 * c.FFNDim, "FFN hidden"}, {&s.logits, 4 * c.Vocab, "logits"},
		{&part, 4 * c.Heads * s.nsplit * (c.HeadDim + 2), "attention partials"}, {&counters, 4 * c.Heads, "attention counters"},
		{&bestv, 4 * lmGrid, "argmax values"}, {&besti, 4 * lmGrid, "argmax ids"}, {&lmCounter, 4, "argmax counter"},
		{&s.tokOut, 4, "argmax token"},
		{&kc, int(kvBytes / 2), "key cache"}, {&vc, int(kvBytes / 2), "value cache"},
	}
	for _, b := range bufs {
		if *b.p, err = alloc(b.n, b.what); err != nil {
			return nil, err
		}
	}

	// The decode step's launches.
	f := func(v float32) uint64 { return uint64(*(*uint32)(unsafe.Pointer(&v))) }
	add := func(name string, op int, grid [3]uint32, block, smem int, args ...uint64) {
		s.plan = append(s.plan, launch{name: name, fn: m.fn[name], op: op, grid: grid, block: uint32(block), smem: uint32(smem), args: args})
	}
	gemv := func(name string, op int, k kind, cols, items int, args ...uint64) {
		bt := gemvBlock(items, threadsPerRow(k, cols), m.dev.sms)
		add(name, op, [3]uint32{uint32(m.gemvGrid(k, cols, items)), 1, 1}, bt, stageBytes(k, cols), args...)
	}
	e, h := m.embed, m.head
	add("k_embed", opEmbedding, [3]uint32{uint32((c.Dim + 255) / 256), 1, 1}, 256, 0, s.tp, e.w, e.d, f(m.escale), s.x)
	layerKV := uint64(ctx * kvd * 4)
	for l := range m.layers {
		L := &m.layers[l]
		kcl, vcl := kc+uint64(l)*layerKV, vc+uint64(l)*layerKV
		gemv("k_qkv", opQKV, m.dims.WK, c.Dim, (qd+2*kvd)/2, s.tp, s.x, L.attnNorm, L.qkv.w, L.qkv.d, L.qkv.rs, m.freqs, q, kcl, vcl)
		add("k_attn", opAttention, [3]uint32{uint32(c.Heads), uint32(s.nsplit), 1}, 128, 0, s.tp, q, kcl, vcl, att, part, counters, uint64(s.nsplit))
		gemv("k_wo", opOutput, m.dims.WK, qd, c.Dim, att, L.attnSub, L.wo.w, L.wo.d, L.wo.rs, s.x)
		gemv("k_gateup", opFFNUpGate, m.dims.WK, c.Dim, c.FFNDim, s.x, L.ffnNorm, L.gateUp.w, L.gateUp.d, L.gateUp.rs, hb)
		gemv("k_down", opFFNDown, m.dims.WK, c.FFNDim, c.Dim, hb, L.ffnSub, L.down.w, L.down.d, L.down.rs, s.x)
	}
	gemv("k_lmhead", opLMHead, m.dims.HK, c.Dim, c.Vocab,
		s.x, m.outNrm, h.w, h.d, h.rs, s.logits, bestv, besti, lmCounter, s.tp, s.tokOut)
	for i := range s.plan {
		l := &s.plan[i]
		l.ptrs = make([]unsafe.Pointer, len(l.args))
		for j := range l.args {
			l.ptrs[j] = unsafe.Pointer(&l.args[j])
		}
		s.pinner.Pin(&l.args[0])
		s.pinner.Pin(&l.ptrs[0])
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
	}
	if err := d.check(d.cuStreamSynchronize(s.stream), "cuStreamSynchronize(session setup)"); err != nil {
		return nil, err
	}
	if err := s.capture(); err != nil {
		return nil, err
	}
	m.sessions++
	ok = true
	return s, nil
}

// gemvGrid is the block count of a product: one pass over the rows, capped
// at four 256-thread blocks (or two of 512) per multiprocessor (the kernels loop over the rest), since
// every block repeats the input's normalisation.
func (m *Model) gemvGrid(k kind, cols, items int) int {
	tpr := threadsPerRow(k, cols)
	bt := gemvBlock(items, tpr, m.dev.sms)
	perBlock := bt / tpr
	return max(1, min((items+perBlock-1)/perBlock, 4*m.dev.sms*256/bt))
}

// enqueue issues the step's work on the stream: the token/position upload,
// every kernel, and the argmax download. With events it records one after
// each kernel (profiling).
func (s *Session) enqueue(events []uintptr) error {
	d := s.m.dev.d
	if err := d.check(d.cuMemcpyHtoDAsync(s.tp, s.pinned, 8, s.stream), "cuMemcpyHtoDAsync(token and position)"); err != nil {
		return err
	}
	if events != nil {
		d.cuEventRecord(events[0], s.stream)
	}
	for i := range s.plan {
		l := &s.plan[i]
		var r cuResult
		if l.cfg != nil {
			r = d.cuLaunchKernelEx(unsafe.Pointer(l.cfg), l.fn, unsafe.Pointer(&l.ptrs[0]), 0)
		} else {
			r = d.cuLaunchKernel(l.fn, l.grid[0], l.grid[1], l.grid[2], l.block, 1, 1, l.smem, s.stream, unsafe.Pointer(&l.ptrs[0]), 0)
		}
		if err := d.check(r, "cuLaunchKernel("+l.name+")"); err != nil {
			return err
		}
		if events != nil {
			d.cuEventRecord(events[i+1], s.stream)
		}
	}
	return d.check(d.cuMemcpyDtoHAsync(unsafe.Add(s.pinned, 8), s.tokOut, 4, s.stream), "cuMemcpyDtoHAsync(argmax token)")
}

// capture records the step once as a CUDA graph.
func (s *Session) capture() error {
	d := s.m.dev.d
	if err := d.check(d.cuStreamBeginCapture(s.stream, captureModeThreadLocal), "cuStreamBeginCapture"); err != nil {
		return err
	}
	err := s.enqueue(nil)
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
	s.graph = g
	return d.check(d.cuGraphInstantiateWithFlags(&s.exec, g, 0), "cuGraphInstantiate(decode step)")
}

// step runs token at s.pos and waits for it.
func (s *Session) step(token int32) error {
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
	if s.profile {
		if err := s.enqueue(s.events); err != nil {
			return err
		}
	} else if err := d.check(d.cuGraphLaunch(s.exec, s.stream), "cuGraphLaunch(decode step)"); err != nil {
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
	s.m.traffic.add(8, 4, len(s.plan))
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
	if err := d.check(d.cuMemcpyDtoH(unsafe.Pointer(&logits[0]), s.logits, uint64(4*c.Vocab)), "cuMemcpyDtoH(logits)"); err != nil {
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
	if err := s.step(token); err != nil {
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
	if err := s.step(token); err != nil {
		return 0, err
	}
	return pinnedInt32(s.pinned, 2), nil
}

// Prefill implements backend.Session. It replays the decode graph once per
// token (a batched prefill is future work; see docs/gpu-notes.md).
func (s *Session) Prefill(tokens []int32, logits []float32) error {
	done, err := s.enter()
	if err != nil {
		return err
	}
	defer done()
	if s.pos+len(tokens) > s.ctx {
		return fmt.Errorf("cuda: prefill of %d tokens at position %d overflows the context of %d", len(tokens), s.pos, s.ctx)
	}
	if logits != nil && len(logits) < s.m.cfg.Vocab {
		return fmt.Errorf("cuda: logits buffer of %d, want %d", len(logits), s.m.cfg.Vocab)
	}
	for _, t := range tokens {
		if t < 0 || int(t) >= s.m.cfg.Vocab {
			return fmt.Errorf("cuda: token %d out of range [0, %d)", t, s.m.cfg.Vocab)
		}
	}
	for _, t := range tokens {
		if err := s.step(t); err != nil {
			return err
		}
	}
	if logits != nil && len(tokens) > 0 {
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
func (s *Session) LaunchesPerToken() int { return len(s.plan) }

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

func (s *Session) collect() {
	d := s.m.dev.d
	for i := range s.plan {
		var ms float32
		if d.cuEventElapsedTime(&ms, s.events[i], s.events[i+1]) != 0 {
			continue
		}
		t := float64(ms) * 1e-3
		switch s.plan[i].op {
		case opEmbedding:
			s.times.Embedding += t
		case opQKV:
			s.times.QKV += t
		case opAttention:
			s.times.Attention += t
		case opOutput:
			s.times.Output += t
		case opFFNUpGate:
			s.times.FFNUpGate += t
		case opFFNDown:
			s.times.FFNDown += t
		case opLMHead:
			s.times.LMHead += t
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
	if s.exec != 0 {
		d.cuGraphExecDestroy(s.exec)
		s.exec = 0
	}
	if s.graph != 0 {
		d.cuGraphDestroy(s.graph)
		s.graph = 0
	}
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
