package cuda

import "unsafe"

// The many-row step's limits: a prompt chunk's rows, and a decode batch's
// sessions (also the rows of logits the workspace holds).
const (
	rowsPromptMax = 512
	rowsBatchMax  = 64
)

// rowsBuckets are the batch sizes whose decode step is captured as a CUDA
// graph; a batch runs in the smallest bucket that holds it, the rows past
// its sessions padding.
var rowsBuckets = [...]int{1, 2, 4, 8, 16, 32, 64}

// rowsBucket is the bucket of a batch of n sessions (1..rowsBatchMax) and
// its index in rowsBuckets.
func rowsBucket(n int) (size, index int) {
	for i, b := range rowsBuckets {
		if n <= b {
			return b, i
		}
	}
	return 0, -1
}

// rowsBuffers are the Model's many-row workspace, shared by prompt chunks
// and decode batches (which take turns): device addresses.
type rowsBuffers struct {
	rows, slots        uint64 // Row[rowsPromptMax], Slot[rowsBatchMax]
	x, raw, q, att, hb uint64 // activations, a row each
	post               uint64 // a block's product before its post-norm (POST_NORM), or 0
	xq, xs, xf         uint64 // a product's input (rows.cu): int8 and scales, or float
	logits             uint64 // [rowsBatchMax][VOCAB]
	next               uint64 // int32[rowsBatchMax]: the picked tokens
	part               uint64 // k_battn's scratch
	nsplit             int    // k_battn's splits
}

// rowsBuffer is one workspace buffer: where its address goes, its bytes
// (0: a path this model does not take) and its name in errors.
type rowsBuffer struct {
	p    *uint64
	n    int
	what string
}

// rowsNames are the workspace buffer's field name, by its place in
// rowsBufferList (the pinned plans name buffers so).
var rowsNames = []string{"rows", "slots", "x", "raw", "q", "att", "hb", "post", "xq", "xs", "xf", "logits", "next", "part"}

// rowsBufferList lists b's buffers and their sizes for this model.
func (m *Model) rowsBufferList(b *rowsBuffers) []rowsBuffer {
	c := &m.cfg
	d := &m.dims
	const n = rowsPromptMax
	qd, kvd := c.QDim(), c.KVDim()
	kp := max(padK(c.Dim), padK(qd), padK(c.FFNDim))
	isInt8 := func(k kind) bool { return k == kindTernary || k == kindQ8 }
	int8In := b2i(isInt8(d.WK) || isInt8(d.HK))
	floatIn := b2i(!isInt8(d.WK) || !isInt8(d.HK))
	return []rowsBuffer{
		{&b.rows, int(unsafe.Sizeof(rowDesc{})) * rowsPromptMax, "rows"},
		{&b.slots, int(unsafe.Sizeof(slotDesc{})) * rowsBatchMax, "slots"},
		{&b.x, 4 * c.Dim * n, "rows' residual"},
		{&b.raw, 4 * (qd + 2*kvd) * n, "rows' QKV products"},
		{&b.q, 4 * qd * n, "rows' queries"},
		{&b.att, 4 * qd * n, "rows' attention output"},
		{&b.hb, 4 * c.FFNDim * n, "rows' FFN hidden"},
		{&b.post, 4 * c.Dim * n * b2i(c.PostNorms), "rows' block outputs before their post-norm"},
		{&b.xq, kp * n * int8In, "rows' int8 inputs"},
		{&b.xs, 4 * (kp / 32) * n * int8In, "rows' input scales"},
		{&b.xf, 4 * kp * n * floatIn, "rows' float inputs"},
		{&b.logits, 4 * c.Vocab * rowsBatchMax, "rows' logits"},
		{&b.next, 4 * rowsBatchMax, "rows' next tokens"},
		{&b.part, 4 * m.rowsPartFloats(rowsBatchMax, b.nsplit), "rows' attention partials"},
	}
}

// rowsTail is what a many-row step ends with after the layers.
type rowsTail int

const (
	tailNone   rowsTail = iota // nothing: a prompt chunk (its LM head is rowsHead's)
	tailLogits                 // the LM head of every row: logits[r]
	tailArgmax                 // the LM head, then next[r] = its argmax (k_rargmax)
	tailSample                 // the LM head, then next[r] drawn by the row's slot's sampler (k_rsample)
)

// rowsPlan lists the launches of a many-row step of n rows (rows.cu's
// plan): a prompt chunk (prompt: n consecutive positions of one sequence,
// k_pattn) or a decode batch (a row a sequence, k_battn), ending with
// tail. The kernels read the rows and slots tables, so the plan depends
// only on n (a graph a bucket). Kernels the harness skips
// (knobs.Knobs.Skip) are left out.
func (m *Model) rowsPlan(b *rowsBuffers, n int, prompt bool, tail rowsTail) []launch {
	c := &m.cfg
	var plan []launch
	add := func(name string, op int, grid [3]uint32, block, smem int, args ...uint64) {
		if m.skipped(name) {
			return
		}
		plan = append(plan, launch{name: name, fn: m.fn[name], op: op, grid: grid, block: uint32(block), smem: uint32(smem), args: args})
	}
	// shaped launches an author's kernel in the shape its Go file gives.
	shaped := func(name string, op int, args ...uint64) {
		grid, block, smem := m.rowShape(name, n)
		add(name, op, grid, block, smem, args...)
	}
	N := uint64(n)
	product := func(norm, mm string, op int, in, nw uint64, w devMat, out uint64) {
		shaped(norm, op, N, in, nw, b.xq, b.xs, b.xf)
		shaped(mm, op, N, b.xq, b.xs, b.xf, w.w, w.d, w.rs, out)
	}
	// A block's product goes straight into the residual, or through
	// k_rpostnorm where the description has post-norms.
	residual := func(norm, mm string, op int, in, subNorm uint64, w devMat, postNorm uint64) {
		if !c.PostNorms {
			product(norm, mm, op, in, subNorm, w, b.x)
			return
		}
		product(norm, mm, op, in, subNorm, w, b.post)
		add("k_rpostnorm", op, [3]uint32{uint32(n), 1, 1}, 256, 0, N, b.post, postNorm, b.x)
	}
	e := m.embed
	add("k_rembed", opEmbedding, [3]uint32{uint32((c.Dim + 255) / 256), uint32(n), 1}, 256, 0, N, b.rows, e.w, e.d, floatArg(m.escale), b.x)
	for l := range m.layers {
		L := &m.layers[l]
		window := uint64(0)
		if c.IsLocal(l) {
			window = uint64(c.Window)
		}
		product("k_rnorm_dim", "k_mm_qkv", opQKV, b.x, L.attnNorm, L.qkv, b.raw)
		shaped("k_rqkv", opQKV, N, uint64(l), b.rows, b.slots, b.raw, L.qkvBias, L.qNorm, L.kNorm, b.q, uint64(c.RopeSet(l)))
		if prompt {
			shaped("k_pattn", opAttention, N, uint64(l), b.rows, b.slots, b.q, b.att, window)
		} else {
			shaped("k_battn", opAttention, N, uint64(l), b.rows, b.slots, b.q, b.att, b.part, uint64(b.nsplit), window)
		}
		residual("k_rnorm_qd", "k_mm_wo", opOutput, b.att, L.attnSub, L.wo, L.attnPost)
		product("k_rnorm_dim", "k_mm_gateup", opFFNUpGate, b.x, L.ffnNorm, L.gateUp, b.hb)
		residual("k_rnorm_ffn", "k_mm_down", opFFNDown, b.hb, L.ffnSub, L.down, L.ffnPost)
	}
	if tail == tailNone {
		return plan
	}
	plan = append(plan, m.rowsHead(b, 0, n)...)
	switch tail {
	case tailArgmax:
		add("k_rargmax", opLMHead, [3]uint32{uint32(n), 1, 1}, rargmaxThreads, 0, N, b.logits, b.next)
	case tailSample:
		add("k_rsample", opLMHead, [3]uint32{uint32(n), 1, 1}, sampleThreads, 0, N, b.logits, b.rows, b.slots, b.next)
	}
	return plan
}

// rargmaxThreads is k_rargmax's block (sample.cu RARG_BT).
const rargmaxThreads = 256

// rowsHead lists the LM head of n rows of x from row from on (at most
// rowsBatchMax): the output norm and the head's product into logits[0..n).
func (m *Model) rowsHead(b *rowsBuffers, from, n int) []launch {
	c, h := &m.cfg, m.head
	N := uint64(n)
	in := b.x + uint64(4*c.Dim*from)
	var plan []launch
	for _, k := range []struct {
		name string
		args []uint64
	}{
		{"k_rnorm_head", []uint64{N, in, m.outNrm, b.xq, b.xs, b.xf}},
		{"k_mm_head", []uint64{N, b.xq, b.xs, b.xf, h.w, h.d, h.rs, b.logits}},
	} {
		if m.skipped(k.name) {
			continue
		}
		grid, block, smem := m.rowShape(k.name, n)
		plan = append(plan, launch{name: k.name, fn: m.fn[k.name], op: opLMHead, grid: grid, block: uint32(block), smem: uint32(smem), args: k.args})
	}
	return plan
}
