package cuda

// The launch shapes of mattn.cu's kernels (attention of many rows, rows.cu
// and the contract in rows.go) and the decode batch's scratch size, which
// the host's rows step uses. Every kernel's shared memory is static and
// under 48 KB: no cuFuncSetAttribute is needed.

// Limits of a launch's rows.
const (
	pattnMaxRows = rowsPromptMax // a prompt chunk (k_pattn)
	battnMaxRows = rowsBatchMax  // a decode batch (k_battn; mattn.cu BA_MAXR: its tickets' room in part)
)

// k_pattn's block: pattnWarps warps of 16 query rows each (mattn.cu PA_W),
// a query row being one (position, query head) pair of a KV head.
const (
	pattnWarps = 4
	pattnRows  = 16 * pattnWarps
)

// battnWarpsPerSM is how many (row, head, slice) warps a batch's attention
// aims to have per multiprocessor: enough cached rows in flight to stream
// the caches at HBM speed (battnSplits).
const battnWarpsPerSM = 32

// rowAttnShape is the launch of mattn.cu kernel name (k_rqkv, k_pattn,
// k_battn) for n rows, with nsplit slices a (row, head) for k_battn
// (battnSplits); block 0 for another name. smem is 0: the kernels' shared
// memory is static.
func (d kernelDims) rowAttnShape(name string, n, nsplit int) (grid [3]uint32, block, smem int) {
	n = max(n, 0)
	switch name {
	case "k_rqkv":
		// one warp a head of q, k and v, 4 a block; y the row (step.cu k_qkv_post's shape)
		return [3]uint32{uint32((d.Heads + 2*d.KVHeads + 3) / 4), uint32(n), 1}, 128, 0
	case "k_pattn":
		// the query rows of each KV head (n positions x its query heads), pattnRows a block
		group := d.Heads / max(d.KVHeads, 1)
		return [3]uint32{uint32((n*group + pattnRows - 1) / pattnRows), uint32(d.KVHeads), 1}, 32 * pattnWarps, 0
	case "k_battn":
		// one warp a (head, slice), 4 a block (attention.cu ATT_NT); y the row
		return [3]uint32{uint32((d.Heads*max(nsplit, 1) + 3) / 4), uint32(n), 1}, 128, 0
	}
	return [3]uint32{}, 0, 0
}

// battnSplits is k_battn's slices a (row, head) for a batch of n rows in
// sessions of ctx positions, on sms multiprocessors: enough warps to
// keep battnWarpsPerSM on each, at most what the decode step's k_attn
// takes for that context (attnSplits: 16 positions a slice while they
// last, at most 64, all that attn_warp's merge takes). A row at a short
// position uses fewer (attention.cu att_slices).
func battnSplits(heads, n, ctx, sms int) int {
	want := (max(sms, 1)*battnWarpsPerSM + max(n*heads, 1) - 1) / max(n*heads, 1)
	return min(max(want, 1), attnSplits(ctx))
}

// battnPartFloats is k_battn's scratch for a batch of n rows at nsplit
// slices, in 4-byte words: the tickets of battnMaxRows rows (a head each),
// then each row's partials (output, maximum, sum of each slice of each
// head).
func battnPartFloats(heads, headDim, n, nsplit int) int {
	return battnMaxRows*heads + n*heads*nsplit*(headDim+2)
}

// rowAttnShape is d.rowAttnShape for the model on its card, k_battn with
// battnSplits(n, ctx) slices.
func (m *Model) rowAttnShape(name string, n, ctx int) (grid [3]uint32, block, smem int) {
	return m.dims.rowAttnShape(name, n, m.battnSplits(n, ctx))
}

// battnSplits is the nsplit argument of k_battn for n rows in sessions of
// ctx positions (the slices rowAttnShape's grid holds).
func (m *Model) battnSplits(n, ctx int) int {
	return battnSplits(m.cfg.Heads, n, ctx, m.dev.sms)
}

// battnPartBytes is the bytes of k_battn's part buffer that serves every
// batch of 1..battnMaxRows rows in sessions of ctx positions. Zero it once
// when it is allocated: the tickets at its start must begin at zero, and
// every launch leaves them there.
func (m *Model) battnPartBytes(ctx int) int {
	most := 0
	for n := 1; n <= battnMaxRows; n++ {
		most = max(most, battnPartFloats(m.cfg.Heads, m.cfg.HeadDim, n, m.battnSplits(n, ctx)))
	}
	return 4 * most
}
