package cuda

// The launch shapes of the many-row kernels, as the rows plan asks for them.

// rowShape is the launch shape (grid, threads a block, dynamic shared
// memory) of many-row kernel name for n rows: mm.go's for mm.cu's k_rnorm_*
// and k_mm_*, mattn.go's for mattn.cu's k_rqkv, k_pattn and k_battn (at
// rowsSplits slices).
func (m *Model) rowShape(name string, n int) (grid [3]uint32, block, smem int) {
	if _, ok := m.dims.mmProducts()[name]; ok {
		return m.mmShape(name, n)
	}
	return m.dims.rowAttnShape(name, n, m.rowsSplits())
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
	return battnPartFloats(m.cfg.Heads, m.cfg.HeadDim, n, nsplit)
}
