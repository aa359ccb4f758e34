package cuda

// The launch shapes of the kernel authors' many-row kernels (mm.cu,
// mattn.cu), which the rows plan asks for. PLACEHOLDERS until mm.go and
// mattn.go land with their authors' shape functions; then rowShape's body
// becomes
//
//	if _, ok := m.dims.mmProducts()[name]; ok {
//		return m.mmShape(name, n)
//	}
//	return m.dims.rowAttnShape(name, n, m.rowsSplits())
//
// rowsPartFloats returns battnPartFloats(c.Heads, c.HeadDim, n, nsplit),
// and the pinned plans (testdata/rows) are rewritten with -update-plans.
// The attention shapes and scratch here are mattn.go's (branch mattn,
// cff2e41); the products' are a plausible tiling, not mm.go's.

// rowShape is the launch shape (grid, threads a block, dynamic shared
// memory) of many-row kernel name for n rows (mm.cu's k_rnorm_* and
// k_mm_*, mattn.cu's k_rqkv, k_pattn and k_battn).
func (m *Model) rowShape(name string, n int) (grid [3]uint32, block, smem int) {
	c := &m.cfg
	qd, kvd := c.QDim(), c.KVDim()
	tiles := func(outs int) [3]uint32 { return [3]uint32{uint32((outs + 63) / 64), uint32((n + 63) / 64), 1} }
	switch name {
	case "k_rnorm_dim", "k_rnorm_qd", "k_rnorm_ffn", "k_rnorm_head":
		return [3]uint32{uint32(n), 1, 1}, 256, 0
	case "k_mm_qkv":
		return tiles(qd + 2*kvd), 128, 0
	case "k_mm_wo", "k_mm_down":
		return tiles(c.Dim), 128, 0
	case "k_mm_gateup":
		return tiles(c.FFNDim), 128, 0
	case "k_mm_head":
		return tiles(c.Vocab), 128, 0
	case "k_rqkv":
		return [3]uint32{uint32((c.Heads + 2*c.KVHeads + 3) / 4), uint32(n), 1}, 128, 0
	case "k_pattn":
		group := c.Heads / max(c.KVHeads, 1)
		return [3]uint32{uint32((n*group + 63) / 64), uint32(c.KVHeads), 1}, 128, 0
	case "k_battn":
		return [3]uint32{uint32((c.Heads*m.rowsSplits() + 3) / 4), uint32(n), 1}, 128, 0
	}
	return [3]uint32{}, 0, 0 // not a kernel of the plan: a launch the driver refuses, naming it
}

// rowsShaped are the kernels rowShape gives shapes for.
var rowsShaped = []string{"k_rnorm_dim", "k_rnorm_qd", "k_rnorm_ffn", "k_rnorm_head",
	"k_mm_qkv", "k_mm_wo", "k_mm_gateup", "k_mm_down", "k_mm_head", "k_rqkv", "k_pattn", "k_battn"}

// rowsSplits is k_battn's most slices a (row, head): the lone decode
// step's cap (attnSplits). attention.cu slices a row's positions into
// min(ceil(positions/16), nsplit) slices, and a lone session into
// min(ceil(positions/16), attnSplits(ctx)), which is the same for any
// position its context holds: so a row is split, summed and merged as the
// lone decode step does it, and as in any batch (batch invariance). Never
// choose it from a batch's size.
func (m *Model) rowsSplits() int { return attnMaxSplits }

// rowsPartFloats is the 4-byte words of k_battn's scratch for n rows at
// nsplit slices: the tickets of rowsBatchMax rows (a head each, zero when
// allocated), then each slice's output, maximum and sum, a (row, head).
func (m *Model) rowsPartFloats(n, nsplit int) int {
	c := &m.cfg
	return rowsBatchMax*c.Heads + n*c.Heads*nsplit*(c.HeadDim+2)
}
