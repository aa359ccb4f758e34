package cuda

// The launch shapes of the kernel authors' many-row kernels (mm.cu,
// mattn.cu), which the rows plan asks for. PLACEHOLDERS until mm.go and
// mattn.go land with their authors' shape functions: this file is then
// replaced by calls to those (rowShape's switch names each kernel), and
// the pinned plans (testdata/rows) rewritten with -update-plans. The
// shapes here are plausible tilings (64 rows by 64 outputs a block), not
// measured ones; the plan never depends on them beyond passing them on.

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
		return [3]uint32{uint32((n + 63) / 64), uint32(c.Heads), 1}, 128, 0
	case "k_battn":
		return [3]uint32{uint32(n), uint32(c.Heads), uint32(m.rowsSplits())}, 128, 0
	}
	return [3]uint32{}, 0, 0 // not a kernel of the plan: a launch the driver refuses, naming it
}

// rowsShaped are the kernels rowShape gives shapes for.
var rowsShaped = []string{"k_rnorm_dim", "k_rnorm_qd", "k_rnorm_ffn", "k_rnorm_head",
	"k_mm_qkv", "k_mm_wo", "k_mm_gateup", "k_mm_down", "k_mm_head", "k_rqkv", "k_pattn", "k_battn"}

// rowsSplits is k_battn's flash-decoding splits a (row, head). It is one
// number for the model, never chosen from a batch's sizes or positions, so
// a row's attention sums in the same order in any batch (batch
// invariance).
func (m *Model) rowsSplits() int { return 16 }

// rowsPartFloats is the floats of k_battn's scratch for n rows at nsplit
// splits: each split's output, maximum and sum, a (row, head).
func (m *Model) rowsPartFloats(n, nsplit int) int {
	c := &m.cfg
	return n * c.Heads * nsplit * (c.HeadDim + 2)
}
