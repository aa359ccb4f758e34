package cuda

import (
	"fmt"
	"runtime"
	"unsafe"

	"github.com/edgellm/edgellm/backend"
)

var (
	_ backend.BatchDecoder = (*Model)(nil)
	_ backend.BatchSampler = (*Model)(nil)
	_ backend.KVSizer      = (*Model)(nil)
)

// rowsState is the Model's many-row workspace (rowsBuffers) and what runs
// it: one stream, the host side of the batch graphs, the graphs
// themselves. Prompt chunks of every session and decode batches share it,
// one at a time (Model.rowsMu): 64 sessions hold one 512-row workspace,
// not one each.
type rowsState struct {
	buf    rowsBuffers
	allocs []uint64
	stream uintptr
	// pinned is the batch graphs' host memory: the rows and slots they
	// upload and the tokens they bring back (pin* offsets).
	pinned unsafe.Pointer
	// A prompt chunk's tables, copied from pageable memory (staged before
	// the copy returns, so the next chunk may rewrite them).
	hostRows []rowDesc
	hostSlot [1]slotDesc
	// graphs are the decode batch's steps by tail (tailLogits, tailArgmax,
	// tailSample) and bucket, captured on first use.
	graphs [3][len(rowsBuckets)]rowsGraph
	events []uintptr // the profiler's, between a prompt chunk's launches
}

// rowsGraph is one captured decode batch step.
type rowsGraph struct {
	graph, exec uintptr
	launches    int
}

// The batch graphs' pinned host memory: rows, slots, next tokens.
const (
	pinRows  = 0
	pinSlots = pinRows + rowsBatchMax*int(unsafe.Sizeof(rowDesc{}))
	pinNext  = pinSlots + rowsBatchMax*int(unsafe.Sizeof(slotDesc{}))
	pinBytes = pinNext + 4*rowsBatchMax
)

// rowsWorkspace returns the workspace, allocating it on first use after
// checking that the device's free memory holds it. The caller holds
// m.rowsMu and a bound OS thread.
func (m *Model) rowsWorkspace() (*rowsState, error) {
	if m.rows != nil {
		return m.rows, nil
	}
	d := m.dev.d
	for _, name := range append(append([]string(nil), rowsShaped...), rowsKernels...) {
		if m.fn[name] == 0 {
			return nil, fmt.Errorf("cuda: the many-row step's kernel %s is not in the module", name)
		}
	}
	r := &rowsState{hostRows: make([]rowDesc, rowsPromptMax)}
	r.buf.nsplit = m.rowsSplits()
	list := m.rowsBufferList(&r.buf)
	need := uint64(0)
	for _, b := range list {
		need += uint64(b.n)
	}
	if err := m.dev.checkFree(need, "the many-row workspace"); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			r.free(d)
		}
	}()
	if err := d.check(d.cuStreamCreate(&r.stream, streamNonBlocking), "cuStreamCreate(rows)"); err != nil {
		return nil, err
	}
	if err := d.check(d.cuMemHostAlloc(&r.pinned, uint64(pinBytes), hostAllocPortable), fmt.Sprintf("cuMemHostAlloc(%d bytes)", pinBytes)); err != nil {
		return nil, err
	}
	for _, b := range list {
		if b.n == 0 {
			continue // a path this model does not take
		}
		p, err := m.dev.alloc(b.n, b.what)
		if err != nil {
			return nil, err
		}
		r.allocs = append(r.allocs, p)
		*b.p = p
		if err := d.check(d.cuMemsetD8Async(p, 0, uint64(b.n), r.stream), "cuMemsetD8Async("+b.what+")"); err != nil {
			return nil, err
		}
	}
	if err := d.check(d.cuStreamSynchronize(r.stream), "cuStreamSynchronize(rows workspace)"); err != nil {
		return nil, err
	}
	ok = true
	m.rows = r
	return r, nil
}

// free releases the workspace's device and pinned memory, graphs, events
// and stream.
func (r *rowsState) free(d *driverAPI) {
	for i := range r.graphs {
		for j := range r.graphs[i] {
			g := &r.graphs[i][j]
			if g.exec != 0 {
				d.cuGraphExecDestroy(g.exec)
			}
			if g.graph != 0 {
				d.cuGraphDestroy(g.graph)
			}
			*g = rowsGraph{}
		}
	}
	for _, e := range r.events {
		d.cuEventDestroy(e)
	}
	r.events = nil
	for _, p := range r.allocs {
		d.cuMemFree(p)
	}
	r.allocs = nil
	if r.pinned != nil {
		d.cuMemFreeHost(r.pinned)
		r.pinned = nil
	}
	if r.stream != 0 {
		d.cuStreamDestroy(r.stream)
		r.stream = 0
	}
}

// launch issues l on the workspace's stream.
func (r *rowsState) launch(d *driverAPI, l *launch) error {
	res := d.cuLaunchKernel(l.fn, l.grid[0], l.grid[1], l.grid[2], l.block, 1, 1, l.smem, r.stream, unsafe.Pointer(&l.ptrs[0]), 0)
	return d.check(res, "cuLaunchKernel(rows "+l.name+")")
}

// slot is the session's Slot: its KV cache, RoPE tables and, with
// sampling and a sampler set (SetSampling), its sampling block.
func (s *Session) slot(sampling bool) slotDesc {
	sd := slotDesc{K: s.buf.kc, V: s.buf.vc, Rope: s.buf.rope, RopeLocal: s.buf.ropeLocal,
		Layer: int64(s.ctx * s.m.cfg.KVDim()), Ctx: int64(s.ctx)}
	if sampling && s.sampleHost != nil {
		sd.Sample = s.buf.sampleP
	}
	return sd
}

// rowsPrefill runs tokens at s.pos through the many-row step, in chunks of
// up to rowsPromptMax rows, and writes the last token's logits to logits
// (when not nil), or with all every token's (the LM head in groups of
// rowsBatchMax rows). With the session's profiler on, each launch is timed
// into its OpTimes. The caller has checked the arguments and holds a bound
// OS thread.
func (m *Model) rowsPrefill(s *Session, tokens []int32, logits []float32, all bool) error {
	m.rowsMu.Lock()
	defer m.rowsMu.Unlock()
	r, err := m.rowsWorkspace()
	if err != nil {
		return err
	}
	d, v := m.dev.d, m.cfg.Vocab
	r.hostSlot[0] = s.slot(false)
	if err := d.check(d.cuMemcpyHtoDAsync(r.buf.slots, unsafe.Pointer(&r.hostSlot[0]), uint64(unsafe.Sizeof(slotDesc{})), r.stream),
		"cuMemcpyHtoDAsync(prefill slot)"); err != nil {
		return err
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	for off := 0; off < len(tokens); off += rowsPromptMax {
		chunk := tokens[off:min(off+rowsPromptMax, len(tokens))]
		n := len(chunk)
		for i, t := range chunk {
			r.hostRows[i] = rowDesc{Tok: t, Pos: int32(s.pos + i)}
		}
		if err := d.check(d.cuMemcpyHtoDAsync(r.buf.rows, unsafe.Pointer(&r.hostRows[0]), uint64(n*int(unsafe.Sizeof(rowDesc{}))), r.stream),
			"cuMemcpyHtoDAsync(prefill rows)"); err != nil {
			return err
		}
		plan := m.rowsPlan(&r.buf, n, true, tailNone)
		groups := headGroups(off, n, len(tokens), logits != nil, all)
		for _, g := range groups {
			plan = append(plan, m.rowsHead(&r.buf, g.from, g.n)...)
		}
		for i := range plan {
			pinLaunch(&pin, &plan[i])
		}
		if err := m.runPrefillChunk(r, s, plan, func(gi int) error {
			g := groups[gi]
			dst := logits[g.dst*v:]
			err := d.check(d.cuMemcpyDtoHAsync(unsafe.Pointer(&dst[0]), r.buf.logits, uint64(4*v*g.n), r.stream), "cuMemcpyDtoHAsync(prefill logits)")
			s.stats.D2HBytes += 4 * v * g.n
			return err
		}); err != nil {
			return err
		}
		s.pos += n
		s.stats.H2DBytes += n * int(unsafe.Sizeof(rowDesc{}))
		m.traffic.add(n*int(unsafe.Sizeof(rowDesc{})), 0, len(plan))
	}
	return d.check(d.cuStreamSynchronize(r.stream), "prefill")
}

// headGroup is one LM head launch of a prompt chunk: n rows from the
// chunk's row from on, whose logits go to row dst of the caller's buffer.
type headGroup struct{ from, n, dst int }

// headGroups are the LM head launches of the chunk of n rows at token off
// of a prompt of total: with all, every row in groups of rowsBatchMax (the
// logits buffer's rows; each group's copied out before the next overwrites
// them), to rows off+from; else with logits the prompt's last row, in its
// last chunk, to row 0; else none.
func headGroups(off, n, total int, logits, all bool) []headGroup {
	var gs []headGroup
	switch {
	case all:
		for g := 0; g < n; g += rowsBatchMax {
			gs = append(gs, headGroup{g, min(rowsBatchMax, n-g), off + g})
		}
	case logits && off+n == total:
		gs = append(gs, headGroup{n - 1, 1, 0})
	}
	return gs
}

// runPrefillChunk issues a prompt chunk's plan on the workspace's stream,
// calling head(i) after the i-th LM head's product (k_mm_head) to copy its
// logits out. With the session's profiler on, it records an event around
// every launch, waits, and adds the times to the session's OpTimes.
func (m *Model) runPrefillChunk(r *rowsState, s *Session, plan []launch, head func(i int) error) error {
	d := m.dev.d
	var events []uintptr
	if s.profile {
		for len(r.events) < len(plan)+1 {
			var e uintptr
			if err := d.check(d.cuEventCreate(&e, eventDefault), "cuEventCreate"); err != nil {
				return err
			}
			r.events = append(r.events, e)
		}
		events = r.events[:len(plan)+1]
		d.cuEventRecord(events[0], r.stream)
	}
	heads := 0
	for i := range plan {
		l := &plan[i]
		if err := r.launch(d, l); err != nil {
			return err
		}
		if events != nil {
			d.cuEventRecord(events[i+1], r.stream)
		}
		if l.name == "k_mm_head" {
			if err := head(heads); err != nil {
				return err
			}
			heads++
		}
	}
	if events != nil {
		if err := d.check(d.cuStreamSynchronize(r.stream), "prefill (profiled)"); err != nil {
			return err
		}
		addOpTimes(&s.times, d, plan, events)
	}
	return nil
}

// DecodeBatch implements backend.BatchDecoder: one many-row step for the
// sessions (in groups of up to rowsBatchMax), each row at its session's
// position over its own KV cache; each session's logits come back.
func (m *Model) DecodeBatch(sessions []backend.Session, tokens []int32, logits [][]float32) error {
	if len(logits) != len(sessions) {
		return fmt.Errorf("cuda: decode batch of %d sessions and %d logits buffers", len(sessions), len(logits))
	}
	for i, l := range logits {
		if len(l) < m.cfg.Vocab {
			return fmt.Errorf("cuda: decode batch: session %d: logits buffer of %d, want %d", i, len(l), m.cfg.Vocab)
		}
	}
	return m.decodeBatch(sessions, tokens, tailLogits, logits, nil)
}

// DecodeBatchSample implements backend.BatchSampler: as DecodeBatch, but
// each session's next token is picked on the device (drawn under its
// SetSampling parameters where it has them, else the argmax) and only the
// ids come back.
func (m *Model) DecodeBatchSample(sessions []backend.Session, tokens []int32, next []int32) error {
	if len(next) != len(sessions) {
		return fmt.Errorf("cuda: decode batch of %d sessions and %d next tokens", len(sessions), len(next))
	}
	return m.decodeBatch(sessions, tokens, tailSample, nil, next)
}

// decodeBatch checks the batch, then runs it in groups of rowsBatchMax;
// tail tailSample runs k_rargmax instead where no session of a group
// samples. On a checking error no session has advanced.
func (m *Model) decodeBatch(sessions []backend.Session, tokens []int32, tail rowsTail, logits [][]float32, next []int32) error {
	m.rowsMu.Lock()
	defer m.rowsMu.Unlock()
	if err := m.checkBatch(sessions, tokens); err != nil {
		return err
	}
	if len(sessions) == 0 {
		return nil
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := m.dev.bind(); err != nil {
		return err
	}
	r, err := m.rowsWorkspace()
	if err != nil {
		return err
	}
	for g := 0; g < len(sessions); g += rowsBatchMax {
		e := min(g+rowsBatchMax, len(sessions))
		var lg [][]float32
		var nx []int32
		if logits != nil {
			lg = logits[g:e]
		} else {
			nx = next[g:e]
		}
		if err := m.batchStep(r, sessions[g:e], tokens[g:e], tail, lg, nx); err != nil {
			return err
		}
	}
	return nil
}

// checkBatch validates a batch as the CPU backend's DecodeBatch does:
// one token a session, distinct open sessions of this model with room for
// one more position, tokens in the vocabulary.
func (m *Model) checkBatch(sessions []backend.Session, tokens []int32) error {
	if len(tokens) != len(sessions) {
		return fmt.Errorf("cuda: decode batch of %d sessions and %d tokens", len(sessions), len(tokens))
	}
	for i, bs := range sessions {
		s, ok := bs.(*Session)
		switch {
		case !ok || s == nil:
			return fmt.Errorf("cuda: decode batch: session %d is not a cuda session", i)
		case s.m != m:
			return fmt.Errorf("cuda: decode batch: session %d belongs to another model", i)
		case s.closed:
			return fmt.Errorf("cuda: decode batch: session %d is closed", i)
		case s.pos >= s.ctx:
			return fmt.Errorf("cuda: decode batch: session %d: position %d is past the %d-position context", i, s.pos, s.ctx)
		case tokens[i] < 0 || int(tokens[i]) >= m.cfg.Vocab:
			return fmt.Errorf("cuda: decode batch: session %d: token %d outside the vocabulary of %d", i, tokens[i], m.cfg.Vocab)
		}
		for j := range i {
			if sessions[j] == bs {
				return fmt.Errorf("cuda: decode batch: session %d is also session %d", i, j)
			}
		}
	}
	return nil
}

// batchStep runs one group of checked sessions (at most rowsBatchMax) as
// its bucket's captured step: the rows and slots go up from pinned memory
// inside the graph, and the picked tokens come back inside it (the logits,
// for tailLogits, are copied after). Nothing is allocated.
func (m *Model) batchStep(r *rowsState, sessions []backend.Session, tokens []int32, tail rowsTail, logits [][]float32, next []int32) error {
	d, v := m.dev.d, m.cfg.Vocab
	n := len(sessions)
	size, bi := rowsBucket(n)
	rows := unsafe.Slice((*rowDesc)(unsafe.Add(r.pinned, pinRows)), rowsBatchMax)
	slots := unsafe.Slice((*slotDesc)(unsafe.Add(r.pinned, pinSlots)), rowsBatchMax)
	sampling := false
	for i, bs := range sessions {
		s := bs.(*Session)
		if tail == tailSample && s.sampleHost != nil {
			sampling = true
			// A new SetSampling's block goes up first, in stream order.
			if err := s.uploadSampling(tokens[i], r.stream); err != nil {
				return err
			}
		}
		rows[i] = rowDesc{Tok: tokens[i], Pos: int32(s.pos), Slot: int32(i)}
		slots[i] = s.slot(tail == tailSample)
	}
	for i := n; i < size; i++ {
		rows[i] = rowDesc{Slot: -1} // padding: no KV write, no attention, no pick
	}
	if tail == tailSample && !sampling {
		tail = tailArgmax
	}
	g := &r.graphs[tail-tailLogits][bi]
	if g.exec == 0 {
		if err := m.captureBatch(r, g, size, tail); err != nil {
			return err
		}
	}
	if err := d.check(d.cuGraphLaunch(g.exec, r.stream), "cuGraphLaunch(decode batch)"); err != nil {
		return err
	}
	if err := d.check(d.cuStreamSynchronize(r.stream), "decode batch"); err != nil {
		return err
	}
	h2d := size * int(unsafe.Sizeof(rowDesc{})+unsafe.Sizeof(slotDesc{}))
	d2h := 4 * size
	if tail == tailLogits {
		d2h = 4 * v * n
		for i := range logits {
			if err := d.check(d.cuMemcpyDtoH(unsafe.Pointer(&logits[i][0]), r.buf.logits+uint64(4*v*i), uint64(4*v)), "cuMemcpyDtoH(batch logits)"); err != nil {
				return err
			}
		}
	} else {
		picked := unsafe.Slice((*int32)(unsafe.Add(r.pinned, pinNext)), rowsBatchMax)
		copy(next, picked[:n])
	}
	for _, bs := range sessions {
		s := bs.(*Session)
		s.pos++
		s.stats.Tokens++
		s.stats.H2DBytes += h2d / n
		s.stats.D2HBytes += d2h / n
	}
	m.traffic.add(h2d, d2h, g.launches)
	m.traffic.tokens.Add(int64(n - 1))
	return nil
}

// captureBatch records the decode batch step of bucket size with tail into
// g: the rows and slots uploaded from pinned memory, the plan, and (but
// for tailLogits) the picked tokens' download.
func (m *Model) captureBatch(r *rowsState, g *rowsGraph, size int, tail rowsTail) error {
	d := m.dev.d
	plan := m.rowsPlan(&r.buf, size, false, tail)
	var pin runtime.Pinner
	defer pin.Unpin()
	for i := range plan {
		pinLaunch(&pin, &plan[i])
	}
	if err := d.check(d.cuStreamBeginCapture(r.stream, captureModeThreadLocal), "cuStreamBeginCapture(decode batch)"); err != nil {
		return err
	}
	err := d.check(d.cuMemcpyHtoDAsync(r.buf.rows, unsafe.Add(r.pinned, pinRows), uint64(size*int(unsafe.Sizeof(rowDesc{}))), r.stream), "cuMemcpyHtoDAsync(batch rows)")
	if err == nil {
		err = d.check(d.cuMemcpyHtoDAsync(r.buf.slots, unsafe.Add(r.pinned, pinSlots), uint64(size*int(unsafe.Sizeof(slotDesc{}))), r.stream), "cuMemcpyHtoDAsync(batch slots)")
	}
	for i := 0; err == nil && i < len(plan); i++ {
		err = r.launch(d, &plan[i])
	}
	if err == nil && tail != tailLogits {
		err = d.check(d.cuMemcpyDtoHAsync(unsafe.Add(r.pinned, pinNext), r.buf.next, uint64(4*size), r.stream), "cuMemcpyDtoHAsync(batch tokens)")
	}
	var gr uintptr
	if e := d.check(d.cuStreamEndCapture(r.stream, &gr), "cuStreamEndCapture(decode batch)"); err == nil {
		err = e
	}
	if err != nil {
		if gr != 0 {
			d.cuGraphDestroy(gr)
		}
		return err
	}
	g.graph, g.launches = gr, len(plan)
	return d.check(d.cuGraphInstantiateWithFlags(&g.exec, gr, 0), "cuGraphInstantiate(decode batch)")
}
