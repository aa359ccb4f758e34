package kernels

import (
	"fmt"
	"github.com/edgellm/edgellm/quant"
	"math"
)

// Int8Mat is a matrix of int8 weights with one float32 scale per Group (32
// or 16) weights of a row: Q8_0, Q5_0 and Q4_0 repack into it exactly (group 32),
// and so does Q6_K (group 16: its 6-bit values times d*sub-scale). Its
// product uses the same per-token int8 activations as the ternary
// matrices: row·x = (sum over groups of scale * (w·q)) / s. This costs the
// precision of one activation scale per token (what BitNet does for every
// other matrix) instead of llama.cpp's one per 32, and lets one
// quantization of x serve the whole layer.
//
// Layout: row r's int8 values are vals[r*cols:], its scales
// scales[r*cols/group:] (float32), or for Q8_0, Q5_0 and Q4_0 the file's own
// float16 scales in hscales: 8.5 bits per weight, as Q8_0 in the file. Q6_K
// takes 10 bits per weight here against its 6.56 in the file: the price of
// a simple, exact kernel (see the package report for a denser plan).
//
// Q4_0 keeps its 4 bits (4.5 a weight with the float16 scales, as in the
// file): nib instead of vals, row r at nib[r*cols/2:], per pair of 32-blocks
// 32 bytes, byte j holding w+8 of weight j of the even block in its low
// nibble and of weight j of the odd block in its high nibble. The q4
// kernels unpack a pair with a shift and a mask; their int32 lane sums are
// the int8 kernels' on the same values, added in four FMA chains a token
// instead of two (see nibbles and q4Chains in _gen).
type Int8Mat struct {
	rows, cols, group int
	vals              []int8
	nib               []byte    // 4-bit weights instead of vals (Q4_0), or nil
	scales            []float32 // one per group, or nil when hscales is set
	hscales           []uint16  // float16 scales (group 32), or nil
}

// NewInt8Mat takes rows*cols int8 values and rows*cols/group scales. group
// must be 16 or 32 and cols a positive multiple of 64. Values of -128 are
// fine.
func NewInt8Mat(rows, cols int, vals []int8, scales []float32, group int) (*Int8Mat, error) {
	if err := checkShape("int8", rows, cols); err != nil {
		return nil, err
	}
	if group != 16 && group != 32 {
		return nil, fmt.Errorf("kernels: int8 matrix: scale group %d is not 16 or 32", group)
	}
	if len(vals) != rows*cols || len(scales) != rows*cols/group {
		return nil, fmt.Errorf("kernels: int8 matrix %dx%d: %d values and %d scales", rows, cols, len(vals), len(scales))
	}
	for i, s := range scales {
		if math.IsNaN(float64(s)) || math.IsInf(float64(s), 0) {
			return nil, fmt.Errorf("kernels: int8 matrix %dx%d: scale %d is %v", rows, cols, i, s)
		}
	}
	return &Int8Mat{rows: rows, cols: cols, group: group, vals: vals, scales: scales}, nil
}

func checkShape(what string, rows, cols int) error {
	if rows <= 0 || cols <= 0 || cols%64 != 0 {
		return fmt.Errorf("kernels: %s matrix %dx%d: columns must be a positive multiple of 64", what, rows, cols)
	}
	if rows > 1<<24 || cols > 1<<24 || tooLarge(rows, cols) {
		return fmt.Errorf("kernels: %s matrix %dx%d is too large", what, rows, cols)
	}
	return nil
}

// checkData checks that a quantized tensor has exactly the bytes its shape
// needs.
func checkData(what string, rows, cols, blockSize, blockBytes int, data []byte) error {
	if err := checkShape(what, rows, cols); err != nil {
		return err
	}
	if cols%blockSize != 0 {
		return fmt.Errorf("kernels: %s matrix %dx%d: columns not a multiple of %d", what, rows, cols, blockSize)
	}
	if want := rows * cols / blockSize * blockBytes; len(data) != want {
		return fmt.Errorf("kernels: %s matrix %dx%d: %d bytes, want %d", what, rows, cols, len(data), want)
	}
	return nil
}

// newInt8MatHalf keeps float16 scales (one per 32), rejecting NaN and Inf.
func newInt8MatHalf(what string, rows, cols int, vals []int8, hs []uint16) (*Int8Mat, error) {
	for i, h := range hs {
		if h&0x7c00 == 0x7c00 {
			return nil, fmt.Errorf("kernels: %s matrix %dx%d: block %d scale is %v", what, rows, cols, i, quant.F16ToF32(h))
		}
	}
	return &Int8Mat{rows: rows, cols: cols, group: 32, vals: vals, hscales: hs}, nil
}

// toFloatScales switches the matrix to float32 scales times k (new ones
// from arena a, or the heap when nil).
func (m *Int8Mat) toFloatScales(k float32, a *Arena) {
	if m.hscales != nil {
		m.scales = alloc[float32](a, len(m.hscales))
		for i, h := range m.hscales {
			m.scales[i] = quant.F16ToF32(h)
		}
		m.hscales = nil
	}
	for i := range m.scales {
		m.scales[i] *= k
	}
}

// scaleAt returns the scale of group g (row-major).
func (m *Int8Mat) scaleAt(g int) float32 {
	if m.hscales != nil {
		return quant.F16ToF32(m.hscales[g])
	}
	return m.scales[g]
}

// FromQ8_0 repacks GGML Q8_0 blocks (fp16 d, 32 int8) of a rows x cols
// matrix, in arena a (or the heap when nil).
func FromQ8_0(rows, cols int, data []byte, a *Arena) (*Int8Mat, error) {
	return fromBlocks32("Q8_0", 34, rows, cols, data, a, func(v *[32]int8, q []byte) {
		for j := range v {
			v[j] = int8(q[2+j])
		}
	})
}

// FromQ5_0 repacks GGML Q5_0 blocks (fp16 d, then 5-bit codes c: weight
// d*(c-16)) into int8 values c-16, exactly, in arena a (or the heap when
// nil): Q5_0 then runs on the Q8_0 kernels, at 8.5 bits a weight against
// the file's 5.5.
func FromQ5_0(rows, cols int, data []byte, a *Arena) (*Int8Mat, error) {
	return fromBlocks32("Q5_0", 22, rows, cols, data, a, quant.Q5Values)
}

// fromBlocks32 repacks a type of 32-weight blocks that start with an fp16
// scale d and whose weights are d times small integers: decode writes a
// block's integers (from the whole block, q). The scales stay float16.
func fromBlocks32(what string, blockBytes, rows, cols int, data []byte, a *Arena, decode func(v *[32]int8, q []byte)) (*Int8Mat, error) {
	if err := checkData(what, rows, cols, 32, blockBytes, data); err != nil {
		return nil, err
	}
	nb := rows * cols / 32
	vals, hs := alloc[int8](a, rows*cols), alloc[uint16](a, nb)
	for b := 0; b < nb; b++ {
		blk := data[b*blockBytes : (b+1)*blockBytes]
		hs[b] = uint16(blk[0]) | uint16(blk[1])<<8
		decode((*[32]int8)(vals[b*32:b*32+32]), blk)
	}
	return newInt8MatHalf(what, rows, cols, vals, hs)
}

// FromQ4_0 repacks GGML Q4_0 blocks (fp16 d, 16 bytes: element i in the low
// nibble of byte i, element i+16 in the high nibble; value nibble-8) into
// the nibble layout (see Int8Mat), as many bytes as the file's.
func FromQ4_0(rows, cols int, data []byte, a *Arena) (*Int8Mat, error) {
	if err := checkData("Q4_0", rows, cols, 32, 18, data); err != nil {
		return nil, err
	}
	nb := rows * cols / 32
	nib, hs := alloc[byte](a, rows*cols/2), alloc[uint16](a, nb)
	for b := 0; b < nb; b += 2 { // a pair of blocks (rows hold whole pairs)
		even, odd := data[b*18:b*18+18], data[b*18+18:b*18+36]
		hs[b] = uint16(even[0]) | uint16(even[1])<<8
		hs[b+1] = uint16(odd[0]) | uint16(odd[1])<<8
		out := nib[b*16 : b*16+32]
		for j := range out {
			out[j] = q4Nibble(even[2:], j) | q4Nibble(odd[2:], j)<<4
		}
	}
	m, err := newInt8MatHalf("Q4_0", rows, cols, nil, hs)
	if err != nil {
		return nil, err
	}
	m.nib = nib
	return m, nil
}

// q4Nibble is element j (0..31) of a Q4_0 block's 16 bytes q, as stored
// (its value plus 8).
func q4Nibble(q []byte, j int) byte {
	if j < 16 {
		return q[j] & 15
	}
	return q[j-16] >> 4
}

// fromQ4_0Int8 repacks Q4_0 into int8 values, for a matrix whose every
// weight takes an extra scale (FromQuant's scale: the q4 kernels take
// only float16 scales), and for the tests' reference.
func fromQ4_0Int8(rows, cols int, data []byte, a *Arena) (*Int8Mat, error) {
	return fromBlocks32("Q4_0", 18, rows, cols, data, a, func(v *[32]int8, q []byte) {
		for j := range v {
			v[j] = int8(q4Nibble(q[2:], j)) - 8
		}
	})
}

// block returns the int8 values of row r's block g of 32 (group 32): a
// view of vals, or the nibbles decoded into buf.
func (m *Int8Mat) block(r, g int, buf *[32]int8) []int8 {
	if m.nib == nil {
		o := r*m.cols + g*32
		return m.vals[o : o+32]
	}
	pair := m.nib[r*m.cols/2+g/2*32:][:32]
	sh := 4 * uint(g%2)
	for j, v := range pair {
		buf[j] = int8(v>>sh&15) - 8
	}
	return buf[:]
}

// FromQ6_K repacks GGML Q6_K super-blocks of 256 (ql[128] low 4 bits, qh[64]
// high 2 bits, 16 int8 sub-scales, fp16 d; value (q-32)*d*scale[j/16]).
func FromQ6_K(rows, cols int, data []byte, a *Arena) (*Int8Mat, error) {
	if err := checkData("Q6_K", rows, cols, 256, 210, data); err != nil {
		return nil, err
	}
	nb := rows * cols / 256
	vals, scales := alloc[int8](a, rows*cols), alloc[float32](a, rows*cols/16)
	for b := 0; b < nb; b++ {
		blk := data[b*210 : b*210+210]
		ql, qh, sc := blk[:128], blk[128:192], blk[192:208]
		d := quant.F16ToF32(uint16(blk[208]) | uint16(blk[209])<<8)
		v := vals[b*256 : b*256+256]
		for h := 0; h < 2; h++ { // two halves of 128
			l4, h2, o := ql[h*64:], qh[h*32:], v[h*128:]
			for l := 0; l < 32; l++ {
				o[l] = int8(l4[l]&15|(h2[l]&3)<<4) - 32
				o[l+32] = int8(l4[l+32]&15|(h2[l]>>2&3)<<4) - 32
				o[l+64] = int8(l4[l]>>4|(h2[l]>>4&3)<<4) - 32
				o[l+96] = int8(l4[l+32]>>4|(h2[l]>>6&3)<<4) - 32
			}
		}
		for j := 0; j < 16; j++ {
			scales[b*16+j] = d * float32(int8(sc[j]))
		}
	}
	return NewInt8Mat(rows, cols, vals, scales, 16)
}

// Rows is the number of output features.
func (m *Int8Mat) Rows() int { return m.rows }

// Cols is the number of input features.
func (m *Int8Mat) Cols() int { return m.cols }

// Group is the number of weights per scale.
func (m *Int8Mat) Group() int { return m.group }

// Bytes is the resident size.
func (m *Int8Mat) Bytes() int {
	return len(m.vals) + len(m.nib) + 4*len(m.scales) + 2*len(m.hscales)
}

// Memory implements Matrix.
func (m *Int8Mat) Memory(fn func([]byte)) {
	visit(fn, asBytes(m.vals), m.nib, asBytes(m.scales), asBytes(m.hscales))
}

// MatVec sets dst[r] = row r · x for r in [r0, r1), x the first token of a.
func (m *Int8Mat) MatVec(dst []float32, a *Acts, r0, r1 int) {
	checkArgs("Int8Mat.MatVec", m.rows, m.cols, len(dst), a, r0, r1, false)
	if m.group == 32 {
		// The batched kernel for one token: it streams faster than the
		// two-row kernel it replaced (docs/cpu-notes.md), and a token gets
		// the same bits alone as in a batch (MatMat).
		m.matMat32(dst, a, 1, r0, r1)
		return
	}
	m.rowsTok(dst, a, 0, r0, r1)
}

// MatMat sets dst[i*Rows()+r] = row r · x_i for every token i of a.
func (m *Int8Mat) MatMat(dst []float32, a *Acts, r0, r1 int) {
	checkArgs("Int8Mat.MatMat", m.rows, m.cols, len(dst), a, r0, r1, true)
	if m.group == 32 {
		m.matMat32(dst, a, a.Tokens, r0, r1)
		return
	}
	step := (16 << 10) / m.cols / 4 * 4
	if step < 4 {
		step = 4
	}
	for r := r0; r < r1; r += step {
		e := min(r+step, r1)
		for i := 0; i < a.Tokens; i++ {
			m.rowsTok(dst[i*m.rows:(i+1)*m.rows], a, i, r, e)
		}
	}
}

// matMat32 is MatMat for one scale per 32 weights (Q8_0, Q4_0) over the
// first tokens of a: each block of weights, its absolute values and its
// scale are loaded once for 4 tokens. Each result equals rowsTok1's for
// that token (same operations in the same order).
func (m *Int8Mat) matMat32(dst []float32, a *Acts, tokens, r0, r1 int) {
	if m.nib != nil && useAVX2 && a.bias == nil {
		panic("kernels: Int8Mat: a 4-bit matrix's product needs Acts.EnableLaneBias")
	}
	if tokens == 1 && r1 > r0 && useAVX2 && m.hscales != nil {
		// one token (decode): the kernel scales and stores each row itself
		// (AVX-VNNI: one VPDPBUSD a block instead of two multiplies)
		ns := m.cols / 32
		sc, d := &m.hscales[r0*ns], &dst[r0]
		switch {
		case m.nib != nil && avx512On(m.cols) && shortRows(m.cols):
			// two rows a pass: short rows spend much of their time per row
			q4DotV1h32S2Z(&m.nib[r0*m.cols/2], m.cols/2, sc, 2*ns, &a.Q[0], &a.bias[0], ns, &a.InvScale[0], d, r1-r0)
		case m.nib != nil && avx512On(m.cols):
			q4DotV1h32Z(&m.nib[r0*m.cols/2], m.cols/2, sc, 2*ns, &a.Q[0], &a.bias[0], ns, &a.InvScale[0], d, r1-r0)
		case avx512On(m.cols):
			int8DotV1h32Z(&m.vals[r0*m.cols], m.cols, sc, 2*ns, &a.Q[0], ns, &a.InvScale[0], d, r1-r0)
		case m.nib != nil && AVXVNNI():
			q4DotV1h32V(&m.nib[r0*m.cols/2], m.cols/2, sc, 2*ns, &a.Q[0], &a.bias[0], ns, &a.InvScale[0], d, r1-r0)
		case m.nib != nil:
			q4DotV1h32(&m.nib[r0*m.cols/2], m.cols/2, sc, 2*ns, &a.Q[0], &a.bias[0], ns, &a.InvScale[0], d, r1-r0)
		case AVXVNNI():
			int8DotV1h32V(&m.vals[r0*m.cols], m.cols, sc, 2*ns, &a.Q[0], ns, &a.InvScale[0], d, r1-r0)
		default:
			int8DotV1h32(&m.vals[r0*m.cols], m.cols, sc, 2*ns, &a.Q[0], ns, &a.InvScale[0], d, r1-r0)
		}
		return
	}
	step := max(batchChunk/m.cols, 1)
	var buf [4 * batchRows]float32
	ns := m.cols / 32
	group := 4 // tokens a kernel call
	if m.nib != nil && useAVX2 && !avx512On(m.cols) {
		group = 2 // the AVX2 registers hold the q4 kernels' chains for two
	}
	for r := r0; r < r1; r += step {
		e := min(r+step, r1)
		for i := 0; i < tokens; i += group {
			nt := min(group, tokens-i)
			q := a.Q[i*m.cols : (i+nt)*m.cols]
			for s := r; s < e; s += batchRows {
				n := min(s+batchRows, e) - s
				out := buf[:4*n]
				switch {
				case useAVX2 && m.nib != nil:
					m.q4Batch32(s, ns, &q[0], &a.bias[i*m.cols/4], nt, &out[0], n)
				case useAVX2:
					m.int8Batch32(&m.vals[s*m.cols], s, ns, &q[0], nt, &out[0], n)
				default:
					for j := 0; j < n; j++ {
						m.rowBatchGo(out[4*j:4*j+nt], s+j, q)
					}
				}
				for k := 0; k < nt; k++ {
					inv := a.InvScale[i+k]
					d := dst[(i+k)*m.rows : (i+k+1)*m.rows]
					for j := 0; j < n; j++ {
						d[s+j] = out[4*j+k] * inv
					}
				}
			}
		}
	}
}

// int8Batch32 runs the batched assembly kernel for nt tokens (direct calls:
// through a func value, dst would escape to the heap).
func (m *Int8Mat) int8Batch32(w *int8, s, ns int, q *int8, nt int, dst *float32, n int) {
	if avx512On(m.cols) {
		m.int8Batch32Z(w, s, ns, q, nt, dst, n)
		return
	}
	if AVXVNNI() {
		m.int8Batch32V(w, s, ns, q, nt, dst, n)
		return
	}
	if m.hscales != nil {
		sc, ss := &m.hscales[s*ns], 2*ns
		switch nt {
		case 1:
			int8DotT1h32(w, m.cols, sc, ss, q, m.cols, ns, dst, n)
		case 2:
			int8DotT2h32(w, m.cols, sc, ss, q, m.cols, ns, dst, n)
		case 3:
			int8DotT3h32(w, m.cols, sc, ss, q, m.cols, ns, dst, n)
		default:
			int8DotT4h32(w, m.cols, sc, ss, q, m.cols, ns, dst, n)
		}
		return
	}
	sc, ss := &m.scales[s*ns], 4*ns
	switch nt {
	case 1:
		int8DotT1g32(w, m.cols, sc, ss, q, m.cols, ns, dst, n)
	case 2:
		int8DotT2g32(w, m.cols, sc, ss, q, m.cols, ns, dst, n)
	case 3:
		int8DotT3g32(w, m.cols, sc, ss, q, m.cols, ns, dst, n)
	default:
		int8DotT4g32(w, m.cols, sc, ss, q, m.cols, ns, dst, n)
	}
}

// q4Batch32 is int8Batch32 for the nibble layout (rows s.. of nib, token
// biases at bias), on the q4 kernels of the CPU's set: up to 4 tokens on
// AVX-512, 2 on AVX2 and AVX-VNNI (matMat32 groups them so).
func (m *Int8Mat) q4Batch32(s, ns int, q *int8, bias *int32, nt int, dst *float32, n int) {
	w, sc := &m.nib[s*m.cols/2], &m.hscales[s*ns]
	stride, ss := m.cols/2, 2*ns
	switch {
	case avx512On(m.cols):
		switch nt {
		case 1:
			q4DotT1h32Z(w, stride, sc, ss, q, bias, m.cols, ns, dst, n)
		case 2:
			q4DotT2h32Z(w, stride, sc, ss, q, bias, m.cols, ns, dst, n)
		case 3:
			q4DotT3h32Z(w, stride, sc, ss, q, bias, m.cols, ns, dst, n)
		default:
			q4DotT4h32Z(w, stride, sc, ss, q, bias, m.cols, ns, dst, n)
		}
	case AVXVNNI() && nt == 1:
		q4DotT1h32V(w, stride, sc, ss, q, bias, m.cols, ns, dst, n)
	case AVXVNNI():
		q4DotT2h32V(w, stride, sc, ss, q, bias, m.cols, ns, dst, n)
	case nt == 1:
		q4DotT1h32(w, stride, sc, ss, q, bias, m.cols, ns, dst, n)
	default:
		q4DotT2h32(w, stride, sc, ss, q, bias, m.cols, ns, dst, n)
	}
}

// int8Batch32Z is int8Batch32 on the AVX-512 kernels (the same results bit
// for bit).
func (m *Int8Mat) int8Batch32Z(w *int8, s, ns int, q *int8, nt int, dst *float32, n int) {
	if m.hscales != nil {
		sc, ss := &m.hscales[s*ns], 2*ns
		switch nt {
		case 1:
			int8DotT1h32Z(w, m.cols, sc, ss, q, m.cols, ns, dst, n)
		case 2:
			int8DotT2h32Z(w, m.cols, sc, ss, q, m.cols, ns, dst, n)
		case 3:
			int8DotT3h32Z(w, m.cols, sc, ss, q, m.cols, ns, dst, n)
		default:
			int8DotT4h32Z(w, m.cols, sc, ss, q, m.cols, ns, dst, n)
		}
		return
	}
	sc, ss := &m.scales[s*ns], 4*ns
	switch nt {
	case 1:
		int8DotT1g32Z(w, m.cols, sc, ss, q, m.cols, ns, dst, n)
	case 2:
		int8DotT2g32Z(w, m.cols, sc, ss, q, m.cols, ns, dst, n)
	case 3:
		int8DotT3g32Z(w, m.cols, sc, ss, q, m.cols, ns, dst, n)
	default:
		int8DotT4g32Z(w, m.cols, sc, ss, q, m.cols, ns, dst, n)
	}
}

// int8Batch32V is int8Batch32 on the AVX-VNNI kernels (the same results
// bit for bit).
func (m *Int8Mat) int8Batch32V(w *int8, s, ns int, q *int8, nt int, dst *float32, n int) {
	if m.hscales != nil {
		sc, ss := &m.hscales[s*ns], 2*ns
		switch nt {
		case 1:
			int8DotT1h32V(w, m.cols, sc, ss, q, m.cols, ns, dst, n)
		case 2:
			int8DotT2h32V(w, m.cols, sc, ss, q, m.cols, ns, dst, n)
		case 3:
			int8DotT3h32V(w, m.cols, sc, ss, q, m.cols, ns, dst, n)
		default:
			int8DotT4h32V(w, m.cols, sc, ss, q, m.cols, ns, dst, n)
		}
		return
	}
	sc, ss := &m.scales[s*ns], 4*ns
	switch nt {
	case 1:
		int8DotT1g32V(w, m.cols, sc, ss, q, m.cols, ns, dst, n)
	case 2:
		int8DotT2g32V(w, m.cols, sc, ss, q, m.cols, ns, dst, n)
	case 3:
		int8DotT3g32V(w, m.cols, sc, ss, q, m.cols, ns, dst, n)
	default:
		int8DotT4g32V(w, m.cols, sc, ss, q, m.cols, ns, dst, n)
	}
}

// rowBatchGo is the pure-Go batched row (group 32): row r with each of the
// len(out) tokens of q, in int8RowGo's order of operations.
func (m *Int8Mat) rowBatchGo(out []float32, r int, q []int8) {
	var f [4]float32
	var buf [32]int8
	ns := m.cols / 32
	for g := 0; g < ns; g++ {
		s := m.scaleAt(r*ns + g)
		wb := m.block(r, g, &buf)
		for k := range out {
			qb := q[k*m.cols+g*32 : k*m.cols+g*32+32]
			var d int32
			for j, v := range wb {
				d += int32(v) * int32(qb[j])
			}
			f[k] += float32(d) * s
		}
	}
	copy(out, f[:len(out)])
}

// rowsTok1 is the single-token product on the AVX2 one-token batched
// kernel (int8DotT1*32), one row a call, for group 32 (and rowsTok
// otherwise): the computation every other group-32 kernel reproduces bit
// for bit (tests compare them).
func (m *Int8Mat) rowsTok1(dst []float32, a *Acts, i, r0, r1 int) {
	if !useAVX2 || m.group != 32 {
		m.rowsTok(dst, a, i, r0, r1)
		return
	}
	q, inv := a.token(i), a.InvScale[i]
	ns := m.cols / 32
	var out [1]float32
	for r := r0; r < r1; r++ {
		switch {
		case m.nib != nil:
			q4DotT1h32(&m.nib[r*m.cols/2], m.cols/2, &m.hscales[r*ns], 2*ns, &q[0], &a.bias[i*m.cols/4], m.cols, ns, &out[0], 1)
		case m.hscales != nil:
			int8DotT1h32(&m.vals[r*m.cols], m.cols, &m.hscales[r*ns], 2*ns, &q[0], m.cols, ns, &out[0], 1)
		default:
			int8DotT1g32(&m.vals[r*m.cols], m.cols, &m.scales[r*ns], 4*ns, &q[0], m.cols, ns, &out[0], 1)
		}
		dst[r] = out[0] * inv
	}
}

// rowsTok is the single-token product for groups other than 32 (whose
// MatVec runs matMat32), and the pure-Go path for all.
func (m *Int8Mat) rowsTok(dst []float32, a *Acts, i, r0, r1 int) {
	q, inv := a.token(i), a.InvScale[i]
	ns := m.cols / m.group
	if useAVX2 && r1 > r0 && m.group == 16 {
		g := (r1 - r0) / 2
		if g > 0 {
			int8Dot2g16(&m.vals[r0*m.cols], m.cols, &m.scales[r0*ns], 4*ns, &q[0], m.cols/32, &dst[r0], g)
		}
		r := r0 + 2*g
		if r < r1 {
			int8Dot1g16(&m.vals[r*m.cols], m.cols, &m.scales[r*ns], 4*ns, &q[0], m.cols/32, &dst[r], r1-r)
		}
		for r := r0; r < r1; r++ {
			dst[r] *= inv
		}
		return
	}
	for r := r0; r < r1; r++ {
		if m.hscales != nil {
			dst[r] = m.rowGoH(r, q) * inv
		} else {
			dst[r] = int8RowGo(m.vals[r*m.cols:(r+1)*m.cols], m.scales[r*ns:(r+1)*ns], m.group, q) * inv
		}
	}
}

// rowGoH is int8RowGo for row r with float16 scales of 32.
func (m *Int8Mat) rowGoH(r int, q []int8) float32 {
	var f float32
	var buf [32]int8
	ns := m.cols / 32
	for g, h := range m.hscales[r*ns : (r+1)*ns] {
		var d int32
		for j, v := range m.block(r, g, &buf) {
			d += int32(v) * int32(q[g*32+j])
		}
		f += float32(d) * quant.F16ToF32(h)
	}
	return f
}

// int8RowGo is the pure-Go Int8Mat row kernel.
func int8RowGo(w []int8, sc []float32, group int, q []int8) float32 {
	var f float32
	for g, s := range sc {
		var d int32
		for j, v := range w[g*group : (g+1)*group] {
			d += int32(v) * int32(q[g*group+j])
		}
		f += float32(d) * s
	}
	return f
}

// Row writes row r dequantized (with any scale folded into the matrix) into
// dst[:Cols()]. A tied embedding reads its rows here, from the one resident
// copy, instead of from the file.
func (m *Int8Mat) Row(r int, dst []float32) {
	g0 := r * m.cols / m.group
	if m.group == 32 { // the values, or the nibbles decoded (block)
		var buf [32]int8
		for g := range m.cols / 32 {
			s := m.scaleAt(g0 + g)
			for j, v := range m.block(r, g, &buf) {
				dst[g*32+j] = float32(v) * s
			}
		}
		return
	}
	row := m.vals[r*m.cols : (r+1)*m.cols]
	for i, v := range row {
		dst[i] = float32(v) * m.scaleAt(g0+i/m.group)
	}
}
