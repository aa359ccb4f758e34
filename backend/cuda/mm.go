package cuda

// The products of many rows (mm.cu): their launch shapes for n rows.

// mmTile is one int8 tile shape of mm.cu (MmTile): bm weight rows by bn
// rows of the launch, (bm/wm) x (bn/wn) x ks warps, each wm x wn over
// every ks-th 64-wide chunk of K, ch chunks a shared-memory stage.
type mmTile struct{ bm, bn, wm, wn, ks, ch int }

// mm.cu's constants (TestMMTileSource reads them back from the source).
const (
	mmDecodeN      = 64  // MM_DECODE_N: more rows than this take the prompt tile
	mmRNormThreads = 256 // MM_RNORM_BT: a k_rnorm_* block (one row)
	mmFloatRows    = 64  // MM_FROWS, MM_FTOKS: the f16/f32 tile, a thread an output
	mmFloatToks    = 4
	mmStages       = 2 // shared-memory stages (double buffering)
	mmSmemDefault  = 48 << 10
)

// mmTileFor mirrors mm.cu mm_run's table: prompts (n > mmDecodeN) take
// 64x128 tiles of 2x4 warps; decode batches a tile as wide as n rounded up
// to 8, 16, 32 or 64, ternary ones 32 rows with four warps splitting K
// (weight streaming wants many warps and few rows; the integer sums may be
// added in any order), q8_0 ones 64 rows summing K in order (batch
// invariance of the float sums).
func mmTileFor(k kind, n int) mmTile {
	if n > mmDecodeN {
		if k == kindTernary {
			return mmTile{64, 128, 32, 32, 1, 2}
		}
		return mmTile{64, 128, 32, 32, 1, 1}
	}
	bn := 8
	for bn < n {
		bn *= 2
	}
	wn := min(bn, 32)
	if k == kindTernary {
		return mmTile{32, bn, 32, wn, 4, 4}
	}
	return mmTile{64, bn, 32, wn, 1, 1}
}

func (t mmTile) warps() int { return t.bm / t.wm * (t.bn / t.wn) * t.ks }

// smem mirrors MmTile::SMEM: two stages of the weight and row tiles (q8_0
// with their scales), or the split-K sums if larger.
func (t mmTile) smem(k kind) int {
	astr, bstr := t.ch*64+16, t.ch*64+16
	ad, bd := t.bm*t.ch*4, t.bn*t.ch*8
	if k == kindTernary {
		astr, ad, bd = t.ch*16, 0, 0
	}
	stage := t.bm*astr + ad + t.bn*bstr + bd
	red := 0
	if t.ks > 1 {
		mt, nt := t.wm/16, t.wn/8
		red = (t.ks - 1) * (t.warps() / t.ks) * 32 * (mt*nt*4 + nt) * 4
	}
	return max(mmStages*stage, red)
}

// mmProduct is what a k_mm_* or k_rnorm_* entry point computes: the kind
// and width of its input and its output rows (k_mm_gateup: FFN features,
// each a gate and an up row).
type mmProduct struct {
	k      kind
	cols   int
	rows   int
	gateUp bool
	rnorm  bool
}

// mmProducts are mm.cu's entry points (rows.go mmKernels).
func (d kernelDims) mmProducts() map[string]mmProduct {
	qd, kvd := d.Heads*d.HeadDim, d.KVHeads*d.HeadDim
	return map[string]mmProduct{
		"k_rnorm_dim":  {k: d.WK, cols: d.Dim, rnorm: true},
		"k_rnorm_qd":   {k: d.WK, cols: qd, rnorm: true},
		"k_rnorm_ffn":  {k: d.WK, cols: d.FFN, rnorm: true},
		"k_rnorm_head": {k: d.HK, cols: d.Dim, rnorm: true},
		"k_mm_qkv":     {k: d.WK, cols: d.Dim, rows: qd + 2*kvd},
		"k_mm_wo":      {k: d.WK, cols: qd, rows: d.Dim},
		"k_mm_gateup":  {k: d.WK, cols: d.Dim, rows: d.FFN, gateUp: true},
		"k_mm_down":    {k: d.WK, cols: d.FFN, rows: d.Dim},
		"k_mm_head":    {k: d.HK, cols: d.Dim, rows: d.Vocab},
	}
}

// mmShape is the launch of entry point name (rows.go mmKernels) over n
// rows: its grid, threads a block and dynamic shared memory. Zero for a
// name mm.cu does not have, or n < 1 (nothing to launch).
func (d kernelDims) mmShape(name string, n int) (grid [3]uint32, block, smem int) {
	p, ok := d.mmProducts()[name]
	if !ok || n < 1 {
		return grid, 0, 0
	}
	cdiv := func(a, b int) uint32 { return uint32((a + b - 1) / b) }
	switch {
	case p.rnorm:
		return [3]uint32{uint32(n), 1, 1}, mmRNormThreads, stageBytes(p.k, p.cols)
	case p.k == kindF32 || p.k == kindF16:
		return [3]uint32{cdiv(p.rows, mmFloatRows), cdiv(n, mmFloatToks), 1}, mmFloatRows * mmFloatToks, 0
	}
	t := mmTileFor(p.k, n)
	rowsPerBlock := t.bm
	if p.gateUp {
		rowsPerBlock = t.bm / 2 // a tile holds the gate and the up rows of bm/2 features
	}
	return [3]uint32{cdiv(p.rows, rowsPerBlock), cdiv(n, t.bn), 1}, t.warps() * 32, t.smem(p.k)
}

// mmShape is the launch of mm.cu entry point name over n rows (the host's
// plan calls it per bucket of n).
func (m *Model) mmShape(name string, n int) (grid [3]uint32, block, smem int) {
	return m.dims.mmShape(name, n)
}

// mmSmemAttrs are the entry points whose dynamic shared memory can exceed
// the default 48 KB at some n, with the most they take: the host raises
// their limit with cuFuncSetAttribute (as loadKernels does for the
// products). The int8 tiles stay under 48 KB; only k_rnorm_* of wide
// f16/f32 rows (4 bytes a value staged) can need more.
func (d kernelDims) mmSmemAttrs() map[string]int {
	out := map[string]int{}
	for name := range d.mmProducts() {
		most := 0
		for _, n := range []int{1, 9, 17, 33, mmDecodeN + 1} { // one n per tile of mmTileFor
			_, _, s := d.mmShape(name, n)
			most = max(most, s)
		}
		if most > mmSmemDefault {
			out[name] = most
		}
	}
	return out
}
