package kernels

import (
	"fmt"
	"math"

	"github.com/edgellm/edgellm/internal/par"
)

// Layout is how a Ternary matrix stores its codes.
type Layout int

const (
	// LayoutAuto (the zero value) picks Layout2Bit when the assembly kernels
	// are in use and LayoutLUT otherwise (in pure Go the table lookups are
	// faster than unpacking 2-bit codes; docs/cpu-notes.md).
	LayoutAuto Layout = iota
	// Layout2Bit packs codes c = w+1 in 2 bits: per 128
	// weights of a row 32 bytes, byte m holding weights m, m+32, m+64, m+96
	// at bit shifts 0, 2, 4, 6, so a shift and a mask give 32 codes in
	// activation order for VPMADDUBSW; a row's last 64 weights, when the
	// row is an odd number of 64s, take 16 bytes, byte m holding m, m+16,
	// m+32, m+48. The int dot is sum(c*q) - sum(q).
	Layout2Bit
	// LayoutLUT stores one byte per 4 weights, the base-3 index
	// c0 + 3c1 + 9c2 + 27c3 into a table of the 81 signed sums of those 4
	// activations, built once per token (T-MAC/TL style). Same 2 bits per
	// weight; pure Go (it is the faster layout without assembly).
	LayoutLUT
	// LayoutTL is the AVX2 lookup-table layout (T-MAC/TL1 style): rows in
	// tiles of 32, per 4 columns 32 bytes, byte r holding row r's two pair
	// indices (w0+1)+3(w1+1) as nibbles; per token, each column pair gets a
	// 16-entry int16 table of w0*q0+w1*q1 (low and high bytes apart) and
	// VPSHUFB looks 32 rows up at once. Same 2 bits per weight. It needs
	// one scale per row: with per-block scales NewTernary falls back to
	// Layout2Bit. Kept as an option: it is no faster than Layout2Bit
	// (docs/cpu-notes.md).
	LayoutTL
)

func (l Layout) String() string {
	switch l {
	case LayoutAuto:
		return "auto"
	case Layout2Bit:
		return "2bit"
	case LayoutLUT:
		return "lut"
	case LayoutTL:
		return "tl"
	}
	return fmt.Sprintf("Layout(%d)", int(l))
}

// lutEntries is the table size per group of 4 activations (3^4).
const lutEntries = 81

// TernaryOptions tune NewTernary.
type TernaryOptions struct {
	Layout Layout
	// BlockScales keeps one scale per 64 weights even when a row's scales
	// are all equal (tests use it to walk the per-block path).
	BlockScales bool
	// Arena, when not nil, holds the new matrix's memory. FromQuant
	// passes it on to every kind of matrix it builds, not only ternary.
	Arena *Arena
}

// Ternary is a matrix of weights in {-1, 0, +1} times scales, repacked for
// the kernels. It is read-only after NewTernary and safe for concurrent use.
type Ternary struct {
	rows, cols int
	layout     Layout
	stride     int       // packed bytes per row
	data       []byte    // rows*stride
	rowScale   []float32 // [rows], when each row has one scale
	blockScale []float32 // [rows*cols/64], otherwise
}

// NewTernary repacks a rows x cols ternary matrix. codes holds rows*cols
// values in {-1, 0, 1}, row-major; scales holds one scale per group weights
// in the same order (group a multiple of 64 that divides cols, as 64 for
// Q2_0 and 256 for TQ2_0/TQ1_0, or a multiple of cols, as rows*cols for
// I2_S's one per-tensor scale). cols must be a multiple of 64.
//
// When every block of a row that holds a non-zero code has the same scale
// (true of BitNet models: all-zero blocks of TQ2_0 files carry d = 0), the
// row keeps one scale; otherwise the matrix keeps one per 64 weights and
// applies them in the reduction.
func NewTernary(rows, cols int, codes []int8, scales []float32, group int, opts TernaryOptions) (*Ternary, error) {
	if rows <= 0 || cols <= 0 || cols%64 != 0 {
		return nil, fmt.Errorf("kernels: ternary matrix %dx%d: columns must be a positive multiple of 64", rows, cols)
	}
	if rows > 1<<24 || cols > 1<<24 || tooLarge(rows, cols) {
		return nil, fmt.Errorf("kernels: ternary matrix %dx%d is too large", rows, cols)
	}
	n := rows * cols
	if len(codes) != n {
		return nil, fmt.Errorf("kernels: ternary matrix %dx%d: %d codes", rows, cols, len(codes))
	}
	if group <= 0 || group%64 != 0 || (cols%group != 0 && group%cols != 0) || n%group != 0 {
		return nil, fmt.Errorf("kernels: ternary matrix %dx%d: scale group %d does not tile it", rows, cols, group)
	}
	if len(scales) != n/group {
		return nil, fmt.Errorf("kernels: ternary matrix %dx%d: %d scales for groups of %d, want %d", rows, cols, len(scales), group, n/group)
	}
	for i, s := range scales {
		if math.IsNaN(float64(s)) || math.IsInf(float64(s), 0) {
			return nil, fmt.Errorf("kernels: ternary matrix %dx%d: scale %d is %v", rows, cols, i, s)
		}
	}
	err := par.Rows(rows, func(r0, r1 int) error {
		for i, c := range codes[r0*cols : r1*cols] {
			if c < -1 || c > 1 {
				i += r0 * cols
				return fmt.Errorf("kernels: ternary matrix %dx%d: code %d at row %d col %d is not -1, 0 or 1", rows, cols, c, i/cols, i%cols)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	switch opts.Layout {
	case Layout2Bit, LayoutLUT, LayoutTL:
	case LayoutAuto:
		opts.Layout = Layout2Bit
		if !useAVX2 {
			opts.Layout = LayoutLUT
		}
	default:
		return nil, fmt.Errorf("kernels: unknown ternary layout %d", int(opts.Layout))
	}

	nb := cols / 64
	blockScale := func(r, b int) float32 { return scales[(r*cols+b*64)/group] }
	uniform := !opts.BlockScales
	rowScale := alloc[float32](opts.Arena, rows)
	for r := 0; r < rows && uniform; r++ {
		set := false
		for b := 0; b < nb; b++ {
			if allZero(codes[r*cols+b*64 : r*cols+b*64+64]) {
				continue // its scale never shows in the product
			}
			s := blockScale(r, b)
			if !set {
				rowScale[r], set = s, true
			} else if s != rowScale[r] {
				uniform = false
				break
			}
		}
	}
	if !uniform && opts.Layout == LayoutTL {
		opts.Layout = Layout2Bit
	}
	t := &Ternary{rows: rows, cols: cols, layout: opts.Layout, stride: cols / 4}
	if opts.Layout == LayoutTL {
		t.data = alloc[byte](opts.Arena, (rows+31)/32*32*t.stride)
		packTL(t.data, codes, rows, cols)
	} else {
		t.data = alloc[byte](opts.Arena, rows*t.stride)
		par.Rows(rows, func(r0, r1 int) error {
			for r := r0; r < r1; r++ {
				row := codes[r*cols : (r+1)*cols]
				dst := t.data[r*t.stride : (r+1)*t.stride]
				if opts.Layout == LayoutLUT {
					packLUT(dst, row)
				} else {
					pack2Bit(dst, row)
				}
			}
			return nil
		})
	}
	if uniform {
		t.rowScale = rowScale
		return t, nil
	}
	t.blockScale = alloc[float32](opts.Arena, rows*nb)
	for r := 0; r < rows; r++ {
		for b := 0; b < nb; b++ {
			t.blockScale[r*nb+b] = blockScale(r, b)
		}
	}
	return t, nil
}

func allZero(c []int8) bool {
	for _, v := range c {
		if v != 0 {
			return false
		}
	}
	return true
}

// pack2Bit packs one row in Layout2Bit.
func pack2Bit(dst []byte, row []int8) {
	n128 := len(row) / 128
	for k := 0; k < n128; k++ {
		src := row[k*128:]
		for m := 0; m < 32; m++ {
			dst[k*32+m] = byte(src[m]+1) | byte(src[m+32]+1)<<2 | byte(src[m+64]+1)<<4 | byte(src[m+96]+1)<<6
		}
	}
	if len(row)%128 != 0 {
		src, d := row[n128*128:], dst[n128*32:]
		for m := 0; m < 16; m++ {
			d[m] = byte(src[m]+1) | byte(src[m+16]+1)<<2 | byte(src[m+32]+1)<<4 | byte(src[m+48]+1)<<6
		}
	}
}

// packTL packs all rows in LayoutTL tiles (rows past the end: code 0).
func packTL(dst []byte, codes []int8, rows, cols int) {
	nc := cols / 4
	for r := 0; r < rows; r++ {
		tile, tr := r/32, r%32
		row := codes[r*cols : (r+1)*cols]
		for j := 0; j < nc; j++ {
			c := row[4*j : 4*j+4]
			lo := byte(c[0]+1) + 3*byte(c[1]+1)
			hi := byte(c[2]+1) + 3*byte(c[3]+1)
			dst[tile*32*nc+j*32+tr] = lo | hi<<4
		}
	}
	for r := rows; r < (rows+31)/32*32; r++ {
		tile, tr := r/32, r%32
		for j := 0; j < nc; j++ {
			dst[tile*32*nc+j*32+tr] = 4 | 4<<4 // (0+1) + 3(0+1): weights 0, 0
		}
	}
}

// buildTL fills, per column pair, the 16 int16 sums w0*q0+w1*q1 at index
// (w0+1)+3(w1+1) as 16 low bytes then 16 high bytes (unused entries 0).
func buildTL(tbl []byte, q []int8) {
	for p := 0; p < len(q)/2; p++ {
		t := tbl[p*32 : p*32+32]
		clear(t)
		q0, q1 := int16(q[2*p]), int16(q[2*p+1])
		for c1 := int16(0); c1 < 3; c1++ {
			for c0 := int16(0); c0 < 3; c0++ {
				v := (c0-1)*q0 + (c1-1)*q1
				i := c0 + 3*c1
				t[i], t[16+i] = byte(v), byte(uint16(v)>>8)
			}
		}
	}
}

// tlTileGo is the pure-Go LayoutTL kernel: the 32 rows' sum(w*q) of a tile.
func tlTileGo(out []int32, tile []byte, q []int8) {
	out = out[:32]
	clear(out)
	for j := 0; j < len(tile)/32; j++ {
		x := q[4*j : 4*j+4]
		for r, b := range tile[j*32 : j*32+32] {
			lo, hi := &tlCodes[b&15], &tlCodes[b>>4]
			out[r] += int32(lo[0])*int32(x[0]) + int32(lo[1])*int32(x[1]) + int32(hi[0])*int32(x[2]) + int32(hi[1])*int32(x[3])
		}
	}
}

// tlCodes[i] are the two weights of LayoutTL pair index i (0 beyond 8).
var tlCodes = func() (c [16][2]int8) {
	for i := 0; i < 9; i++ {
		c[i] = [2]int8{int8(i%3) - 1, int8(i/3) - 1}
	}
	return c
}()

// packLUT packs one row in LayoutLUT.
func packLUT(dst []byte, row []int8) {
	for g := range dst {
		c := row[g*4 : g*4+4]
		dst[g] = byte(c[0]+1) + 3*byte(c[1]+1) + 9*byte(c[2]+1) + 27*byte(c[3]+1)
	}
}

// buildLUT fills, for each group of 4 activations, the 81 sums
// w0*q0 + w1*q1 + w2*q2 + w3*q3 indexed as packLUT indexes weights.
func buildLUT(tbl []int16, q []int8) {
	for g := 0; g < len(q)/4; g++ {
		t := tbl[g*lutEntries : (g+1)*lutEntries]
		q0, q1, q2, q3 := int16(q[4*g]), int16(q[4*g+1]), int16(q[4*g+2]), int16(q[4*g+3])
		i := 0
		for w3 := int16(-1); w3 <= 1; w3++ {
			for w2 := int16(-1); w2 <= 1; w2++ {
				for w1 := int16(-1); w1 <= 1; w1++ {
					base := w3*q3 + w2*q2 + w1*q1
					t[i], t[i+1], t[i+2] = base-q0, base, base+q0
					i += 3
				}
			}
		}
	}
}

// Rows is the number of output features.
func (t *Ternary) Rows() int { return t.rows }

// Cols is the number of input features.
func (t *Ternary) Cols() int { return t.cols }

// Layout is the packing in use.
func (t *Ternary) Layout() Layout { return t.layout }

// BlockScales reports whether the matrix kept one scale per 64 weights.
func (t *Ternary) BlockScales() bool { return t.blockScale != nil }

// Bytes is the resident size of the packed matrix.
func (t *Ternary) Bytes() int { return len(t.data) + 4*len(t.rowScale) + 4*len(t.blockScale) }

// Memory implements Matrix.
func (t *Ternary) Memory(fn func([]byte)) {
	visit(fn, t.data, asBytes(t.rowScale), asBytes(t.blockScale))
}

// checkArgs panics on a misuse that would otherwise read or write out of
// bounds (a caller bug, like a bad slice index).
func checkArgs(name string, rows, cols int, dstLen int, a *Acts, r0, r1 int, batch bool) {
	if a.Cols != cols {
		panic(fmt.Sprintf("kernels: %s: activations of %d for %d columns", name, a.Cols, cols))
	}
	if r0 < 0 || r1 > rows || r0 > r1 {
		panic(fmt.Sprintf("kernels: %s: rows [%d,%d) of %d", name, r0, r1, rows))
	}
	need := r1
	if batch {
		need = (a.Tokens-1)*rows + r1
	}
	if a.Tokens < 1 || dstLen < need {
		panic(fmt.Sprintf("kernels: %s: dst of %d for rows [%d,%d) of %d and %d tokens", name, dstLen, r0, r1, rows, a.Tokens))
	}
}

// MatVec sets dst[r] = row r · x for r in [r0, r1), x being the first
// token of a. dst is indexed by absolute row, so workers may share it.
func (t *Ternary) MatVec(dst []float32, a *Acts, r0, r1 int) {
	checkArgs("Ternary.MatVec", t.rows, t.cols, len(dst), a, r0, r1, false)
	if t.layout == Layout2Bit && t.blockScale == nil && vnniOn(t.cols) {
		t.matMat2Bit(dst, a, 1, r0, r1)
		return
	}
	t.rowsTok(dst, a, 0, r0, r1)
}

// MatMat sets dst[i*Rows()+r] = row r · x_i for every token i of a and r in
// [r0, r1). Rows are taken a few at a time and applied to every token while
// they sit in L1, so each weight comes from memory once per batch.
func (t *Ternary) MatMat(dst []float32, a *Acts, r0, r1 int) {
	checkArgs("Ternary.MatMat", t.rows, t.cols, len(dst), a, r0, r1, true)
	if t.layout == Layout2Bit && t.blockScale == nil {
		t.matMat2Bit(dst, a, a.Tokens, r0, r1)
		return
	}
	step := (16 << 10) / t.stride / 2 * 2
	if step < 2 {
		step = 2
	}
	for r := r0; r < r1; r += step {
		e := min(r+step, r1)
		for i := 0; i < a.Tokens; i++ {
			t.rowsTok(dst[i*t.rows:(i+1)*t.rows], a, i, r, e)
		}
	}
}

// oneRowCols is the row length from which the AVX2 one-token product
// (dots) reads one row after another (ternaryDot1), so that a core's share
// is one sequential run, instead of two rows a pass (ternaryDot2): faster
// for long rows, slower for 1536-wide ones (docs/cpu-notes.md has the
// figures). The results are the same bits.
const oneRowCols = 2048

// batchRows is the most rows one batched kernel call covers: its int32
// results sit in a stack buffer of 4 tokens per row.
const batchRows = 64

// batchChunk is the bytes of codes per row chunk in matMat2Bit: small
// enough to stay in L2 while every token group of the batch passes over it
// (with that group's activations), so each weight comes from memory once.
const batchChunk = 64 << 10

// matMat2Bit is MatMat for Layout2Bit rows of one scale each, over the
// first tokens of a: every block of codes is unpacked once per 4 tokens
// (dotsBatch), not once per token.
// Each result equals MatVec's for that token: the int dot is exact and the
// scaling is the same expression.
func (t *Ternary) matMat2Bit(dst []float32, a *Acts, tokens, r0, r1 int) {
	step := max(batchChunk/t.stride, 1)
	if tokens == 1 {
		// The chunks keep rows in L2 for the next group of tokens; one
		// token (decode) reads its rows as one sequential run.
		step = max(r1-r0, 1)
	}
	var buf [4 * batchRows]int32
	for r := r0; r < r1; r += step {
		e := min(r+step, r1)
		for i := 0; i < tokens; i += 4 {
			nt := min(4, tokens-i)
			q := a.Q[i*t.cols : (i+nt)*t.cols]
			if nt == 1 && vnniOn(t.cols) {
				// One token: the kernel scales its sums itself.
				vecScaled(dst[i*t.rows+r:i*t.rows+e], t.data[r*t.stride:e*t.stride], t.stride, q, t.cols, t.rowScale[r:e], &a.Sum[i], &a.InvScale[i])
				continue
			}
			for s := r; s < e; s += batchRows {
				se := min(s+batchRows, e)
				dotsBatch(buf[:4*(se-s)], t.data[s*t.stride:se*t.stride], t.stride, q, t.cols, nt)
				for k := 0; k < nt; k++ {
					sum, inv := a.Sum[i+k], a.InvScale[i+k]
					d := dst[(i+k)*t.rows : (i+k+1)*t.rows]
					for j, rs := range t.rowScale[s:se] {
						d[s+j] = float32(buf[4*j+k]-sum) * rs * inv
					}
				}
			}
		}
	}
}

// vecScaled writes float32(c·q - *sum) * rs[r] * *inv for each row of w
// (len(dst) rows, stride bytes apart) on the AVX-512 or AVX-VNNI kernels
// (the caller checks vnniOn): one token's MatVec, scaled as matMat2Bit
// scales.
func vecScaled(dst []float32, w []byte, stride int, q []int8, cols int, rs []float32, sum *int32, inv *float32) {
	n := len(dst)
	if n == 0 {
		return
	}
	_ = w[n*stride-1]
	_ = q[cols-1]
	_ = rs[n-1]
	n128, tail := cols/128, cols%128/64
	switch {
	case avx512On(cols) && shortRows(cols):
		ternaryVecS4Z(&w[0], stride, &q[0], n128, tail, &rs[0], sum, inv, &dst[0], n)
	case avx512On(cols):
		ternaryVecT1Z(&w[0], stride, &q[0], n128, tail, &rs[0], sum, inv, &dst[0], n)
	case shortRows(cols):
		ternaryVecS4V(&w[0], stride, &q[0], n128, tail, &rs[0], sum, inv, &dst[0], n)
	default:
		ternaryVecT1V(&w[0], stride, &q[0], n128, tail, &rs[0], sum, inv, &dst[0], n)
	}
}

// dotsBatch writes sum(c*q_t) of each row of w (len(out)/4 rows, stride
// bytes apart) with each of the nt (1..4) tokens of q (cols apart) to
// out[4*row+t].
func dotsBatch(out []int32, w []byte, stride int, q []int8, cols, nt int) {
	n := len(out) / 4
	if n == 0 {
		return
	}
	_ = w[n*stride-1]
	_ = q[nt*cols-1]
	if avx512On(cols) {
		n128, tail := cols/128, cols%128/64
		switch {
		case nt == 1:
			// One token takes the scaled kernels (vecScaled): here, in
			// tests only, the AVX2 kernel.
			ternaryDotT1(&w[0], stride, &q[0], cols, n128, tail, &out[0], n)
		case nt == 2:
			ternaryDotT2Z(&w[0], stride, &q[0], cols, n128, tail, &out[0], n)
		case nt == 3:
			ternaryDotT3Z(&w[0], stride, &q[0], cols, n128, tail, &out[0], n)
		default:
			ternaryDotT4Z(&w[0], stride, &q[0], cols, n128, tail, &out[0], n)
		}
		return
	}
	if avxvnniOn(cols) && nt > 1 {
		// One token takes the scaled kernels (vecScaled).
		n128, tail := cols/128, cols%128/64
		switch nt {
		case 2:
			ternaryDotT2V(&w[0], stride, &q[0], cols, n128, tail, &out[0], n)
		case 3:
			ternaryDotT3V(&w[0], stride, &q[0], cols, n128, tail, &out[0], n)
		default:
			ternaryDotT4V(&w[0], stride, &q[0], cols, n128, tail, &out[0], n)
		}
		return
	}
	if useAVX2 {
		// direct calls: through a func value, out would escape to the heap
		n128, tail := cols/128, cols%128/64
		switch nt {
		case 1:
			ternaryDotT1(&w[0], stride, &q[0], cols, n128, tail, &out[0], n)
		case 2:
			ternaryDotT2(&w[0], stride, &q[0], cols, n128, tail, &out[0], n)
		case 3:
			ternaryDotT3(&w[0], stride, &q[0], cols, n128, tail, &out[0], n)
		default:
			ternaryDotT4(&w[0], stride, &q[0], cols, n128, tail, &out[0], n)
		}
		return
	}
	for r := 0; r < n; r++ {
		dot2BitBatchGo(out[4*r:4*r+nt], w[r*stride:(r+1)*stride], q, cols)
	}
}

// dot2BitBatchGo is the pure-Go twin of the batched kernel: each byte of
// codes is unpacked once for the len(out) tokens of q (cols apart).
func dot2BitBatchGo(out []int32, w []byte, q []int8, cols int) {
	var s [4]int32
	nt := len(out)
	n128 := cols / 128
	for k := 0; k < n128; k++ {
		for m, b := range w[k*32 : k*32+32] {
			c0, c1, c2, c3 := int32(b&3), int32(b>>2&3), int32(b>>4&3), int32(b>>6)
			for i := 0; i < nt; i++ {
				qb := q[i*cols+k*128 : i*cols+k*128+128]
				s[i] += c0*int32(qb[m]) + c1*int32(qb[m+32]) + c2*int32(qb[m+64]) + c3*int32(qb[m+96])
			}
		}
	}
	if cols%128 != 0 {
		for m, b := range w[n128*32 : n128*32+16] {
			c0, c1, c2, c3 := int32(b&3), int32(b>>2&3), int32(b>>4&3), int32(b>>6)
			for i := 0; i < nt; i++ {
				qb := q[i*cols+n128*128 : i*cols+n128*128+64]
				s[i] += c0*int32(qb[m]) + c1*int32(qb[m+16]) + c2*int32(qb[m+32]) + c3*int32(qb[m+48])
			}
		}
	}
	copy(out, s[:nt])
}

// rowsTok computes rows [r0, r1) for token i into dst[r].
func (t *Ternary) rowsTok(dst []float32, a *Acts, i, r0, r1 int) {
	q := a.token(i)
	inv, sum := a.InvScale[i], a.Sum[i]
	nb := t.cols / 64
	bsum := a.BlockSum[i*nb : (i+1)*nb]
	switch {
	case t.layout == LayoutTL:
		var buf [32]int32
		nc := t.cols / 4
		for tile := r0 / 32; tile*32 < r1; tile++ {
			w := t.data[tile*32*nc : (tile+1)*32*nc]
			if useAVX2 && a.tl != nil {
				tlTiles(&w[0], &a.tl[i*t.cols*16], nc, &buf[0], 1)
			} else {
				tlTileGo(buf[:], w, q)
			}
			for r := max(r0, tile*32); r < min(r1, tile*32+32); r++ {
				dst[r] = float32(buf[r-tile*32]) * t.rowScale[r] * inv
			}
		}
	case t.layout == LayoutLUT:
		if a.lut == nil {
			t.rowsLUTNoTable(dst, q, inv, r0, r1)
			return
		}
		tbl := a.lut[i*t.cols/4*lutEntries : (i+1)*t.cols/4*lutEntries]
		for r := r0; r < r1; r++ {
			w := t.data[r*t.stride : (r+1)*t.stride]
			if t.blockScale == nil {
				dst[r] = float32(dotLUT(w, tbl)) * t.rowScale[r] * inv
				continue
			}
			var f float32
			bs := t.blockScale[r*nb : (r+1)*nb]
			for b := range bs {
				f += float32(dotLUT(w[b*16:b*16+16], tbl[b*16*lutEntries:])) * bs[b]
			}
			dst[r] = f * inv
		}
	case t.blockScale != nil:
		var buf [64]int32 // block dots of up to 4096 columns at a time
		for r := r0; r < r1; r++ {
			w := t.data[r*t.stride : (r+1)*t.stride]
			bs := t.blockScale[r*nb : (r+1)*nb]
			var f float32
			for c := 0; c < t.cols; c += 4096 {
				cn := min(4096, t.cols-c)
				blockDots(buf[:cn/64], w[c/4:(c+cn)/4], q[c:c+cn])
				for b, d := range buf[:cn/64] {
					k := c/64 + b
					f += float32(d-bsum[k]) * bs[k]
				}
			}
			dst[r] = f * inv
		}
	default:
		if n := (r1 - r0) &^ 3; n > 0 && useAVX2 && shortRows(t.cols) {
			// four rows at a time, scaled in the kernel
			ternaryDotS4(&t.data[r0*t.stride], t.stride, &q[0], t.cols/128, t.cols%128/64,
				&t.rowScale[r0], &a.Sum[i], &a.InvScale[i], &dst[r0], n/4)
			r0 += n
		}
		var buf [64]int32
		for r := r0; r < r1; r += len(buf) {
			e := min(r+len(buf), r1)
			dots(buf[:e-r], t.data[r*t.stride:e*t.stride], t.stride, q)
			for k, d := range buf[:e-r] {
				dst[r+k] = float32(d-sum) * t.rowScale[r+k] * inv
			}
		}
	}
}

// shortRows reports whether rows of cols weights take the short-row kernels
// (ternaryDotS4: one int16 sum per row, at most 8 blocks of 128, the last
// of which may be a 64-weight tail; ternaryVecS4Z on AVX-512). On such rows
// (SmolLM's 576) four rows sharing the activation loads beat one or two
// rows at a time; longer rows go one at a time, one sequential run
// (docs/cpu-notes.md).
func shortRows(cols int) bool {
	return cols >= 128 && cols/128+cols%128/64 <= 8
}

// dots writes sum(c*q) of each row of w (len(out) rows, stride bytes apart).
func dots(out []int32, w []byte, stride int, q []int8) {
	n128, tail := len(q)/128, len(q)%128/64
	if useAVX2 && len(q) >= oneRowCols {
		ternaryDot1(&w[0], stride, &q[0], n128, tail, &out[0], len(out))
		return
	}
	if useAVX2 {
		g := len(out) / 2
		if g > 0 {
			ternaryDot2(&w[0], stride, &q[0], n128, tail, &out[0], g)
		}
		if len(out)%2 != 0 {
			ternaryDot1(&w[2*g*stride], stride, &q[0], n128, tail, &out[2*g], 1)
		}
		return
	}
	for r := range out {
		out[r] = dot2BitGo(w[r*stride:(r+1)*stride], q)
	}
}

// blockDots writes sum(c*q) of each 64-weight block of one row.
func blockDots(out []int32, w []byte, q []int8) {
	if useAVX2 {
		ternaryBlockDots(&w[0], &q[0], len(q)/128, len(q)%128/64, &out[0])
		return
	}
	blockDotsGo(out, w, q)
}

// dot2BitGo is the pure-Go Layout2Bit row kernel: sum(c*q).
func dot2BitGo(w []byte, q []int8) int32 {
	var s int32
	n128 := len(q) / 128
	for k := 0; k < n128; k++ {
		wb, qb := w[k*32:k*32+32], q[k*128:k*128+128]
		for m, b := range wb {
			s += int32(b&3)*int32(qb[m]) + int32(b>>2&3)*int32(qb[m+32]) +
				int32(b>>4&3)*int32(qb[m+64]) + int32(b>>6)*int32(qb[m+96])
		}
	}
	if len(q)%128 != 0 {
		wb, qb := w[n128*32:n128*32+16], q[n128*128:]
		for m, b := range wb {
			s += int32(b&3)*int32(qb[m]) + int32(b>>2&3)*int32(qb[m+16]) +
				int32(b>>4&3)*int32(qb[m+32]) + int32(b>>6)*int32(qb[m+48])
		}
	}
	return s
}

// blockDotsGo is the pure-Go per-64-block kernel.
func blockDotsGo(out []int32, w []byte, q []int8) {
	n128 := len(q) / 128
	for k := 0; k < n128; k++ {
		wb, qb := w[k*32:k*32+32], q[k*128:k*128+128]
		var s0, s1 int32
		for m, b := range wb {
			s0 += int32(b&3)*int32(qb[m]) + int32(b>>2&3)*int32(qb[m+32])
			s1 += int32(b>>4&3)*int32(qb[m+64]) + int32(b>>6)*int32(qb[m+96])
		}
		out[2*k], out[2*k+1] = s0, s1
	}
	if len(q)%128 != 0 {
		out[2*n128] = dot2BitGo(w[n128*32:n128*32+16], q[n128*128:])
	}
}

// dotLUT sums the table entries a LayoutLUT row (segment) selects: the
// signed dot sum(w*q) directly, with no code offset.
func dotLUT(w []byte, tbl []int16) int32 {
	var s0, s1 int32
	tbl = tbl[:len(w)*lutEntries]
	i := 0
	for ; i+1 < len(w); i += 2 {
		s0 += int32(tbl[i*lutEntries+int(w[i])])
		s1 += int32(tbl[(i+1)*lutEntries+int(w[i+1])])
	}
	if i < len(w) {
		s0 += int32(tbl[i*lutEntries+int(w[i])])
	}
	return s0 + s1
}

// lutCodes[i] are the 4 weights LayoutLUT index i stands for.
var lutCodes = func() (c [lutEntries][4]int8) {
	for i := range c {
		v := i
		for j := 0; j < 4; j++ {
			c[i][j] = int8(v%3) - 1
			v /= 3
		}
	}
	return c
}()

// rowsLUTNoTable serves LayoutLUT rows for Acts made without tables (slower,
// but a missing EnableLUT is not an error).
func (t *Ternary) rowsLUTNoTable(dst []float32, q []int8, inv float32, r0, r1 int) {
	nb := t.cols / 64
	for r := r0; r < r1; r++ {
		w := t.data[r*t.stride : (r+1)*t.stride]
		var f float32
		for b := 0; b < nb; b++ {
			var s int32
			for g, idx := range w[b*16 : b*16+16] {
				c, x := &lutCodes[idx], q[b*64+4*g:b*64+4*g+4]
				s += int32(c[0])*int32(x[0]) + int32(c[1])*int32(x[1]) + int32(c[2])*int32(x[2]) + int32(c[3])*int32(x[3])
			}
			if t.blockScale != nil {
				f += float32(s) * t.blockScale[r*nb+b]
			} else {
				f += float32(s) // exact: |s| < 2^24 per block sum below
			}
		}
		if t.blockScale == nil {
			f *= t.rowScale[r]
		}
		dst[r] = f * inv
	}
}
