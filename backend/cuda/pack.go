package cuda

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync/atomic"

	"github.com/edgellm/edgellm/internal/par"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/quant"
)

// padK is the padded row length every device matrix uses (common.cuh PADK).
func padK(k int) int { return (k + 63) / 64 * 64 }

// chunkElems is how many weights one 16-byte chunk holds (common.cuh Kind<>::E).
func chunkElems(k kind) int {
	switch k {
	case kindTernary:
		return 64
	case kindF32:
		return 4
	case kindF16:
		return 8
	default:
		return 16
	}
}

// threadsPerRow mirrors common.cuh's tpr_for: the lanes that share a row
// of cols weights of kind k.
func threadsPerRow(k kind, cols int) int {
	need := padK(cols) / chunkElems(k)
	switch {
	case need > 16:
		return 32
	case need > 8:
		return 16
	case need > 4:
		return 8
	case need > 2:
		return 4
	case need > 1:
		return 2
	}
	return 1
}

// stageBytes mirrors common.cuh's Mat<>::SMEM: the dynamic shared memory of
// a product whose input has cols values.
func stageBytes(k kind, cols int) int {
	kp := padK(cols)
	switch k {
	case kindTernary:
		return kp
	case kindQ8:
		return kp + kp/32*4
	}
	return kp * 4
}

// hostMat is a matrix repacked for the device, still in host memory.
type hostMat struct {
	kind       kind
	rows, cols int
	w          []byte    // weights: ternary codes, f32, f16 or q8_0 int8
	d          []byte    // q8_0 only: f16 scales [rows][padK/32]
	rs         []float32 // per-row scale applied to every product
}

// rowBytes is the device bytes of one row of w.
func (m *hostMat) rowBytes() int {
	kp := padK(m.cols)
	switch m.kind {
	case kindTernary:
		return kp / 4
	case kindF32:
		return kp * 4
	case kindF16:
		return kp * 2
	}
	return kp
}

func newHostMat(k kind, rows, cols int) *hostMat {
	m := &hostMat{kind: k, rows: rows, cols: cols, rs: make([]float32, rows)}
	m.w = make([]byte, rows*m.rowBytes())
	if k == kindQ8 {
		m.d = make([]byte, rows*padK(cols)/32*2)
	}
	return m
}

// checkTensor verifies a tensor's shape and size before anything reads it.
func checkTensor(t *model.Tensor, rows, cols int) error {
	if t.Rows != rows || t.Cols != cols {
		return fmt.Errorf("cuda: tensor %q is %dx%d, want %dx%d", t.Name, t.Rows, t.Cols, rows, cols)
	}
	if !t.Type.Supported() {
		return fmt.Errorf("cuda: tensor %q has unsupported type %s", t.Name, t.Type)
	}
	rb, err := t.Type.RowBytes(cols)
	if err != nil {
		return fmt.Errorf("cuda: tensor %q: %w", t.Name, err)
	}
	if len(t.Data) < rows*rb {
		return fmt.Errorf("cuda: tensor %q holds %d bytes, want %d", t.Name, len(t.Data), rows*rb)
	}
	if math.IsNaN(float64(t.Scale)) || math.IsInf(float64(t.Scale), 0) {
		return fmt.Errorf("cuda: tensor %q has scale %g", t.Name, t.Scale)
	}
	return nil
}

// tensorScale is the tensor's product scale, 1 when unset.
func tensorScale(t *model.Tensor) float32 {
	if t.Scale == 0 {
		return 1
	}
	return t.Scale
}

// forRows dequantizes the rows of t, in parallel, and calls fn with each
// row zero-padded to padK(t.Cols) values and a scratch buffer of extra
// bytes (both owned by the calling worker). The first error wins.
func forRows(t *model.Tensor, extra int, fn func(r int, row []float32, scratch []byte) error) error {
	rb, err := t.Type.RowBytes(t.Cols)
	if err != nil {
		return fmt.Errorf("cuda: tensor %q: %w", t.Name, err)
	}
	var failed atomic.Bool // the other ranges stop early
	return par.Rows(t.Rows, func(r0, r1 int) error {
		buf, scratch := make([]float32, padK(t.Cols)), make([]byte, extra)
		for r := r0; r < r1 && !failed.Load(); r++ {
			err := quant.Dequantize(t.Type, buf[:t.Cols], t.Data[r*rb:(r+1)*rb])
			if err != nil {
				err = fmt.Errorf("cuda: tensor %q row %d: %w", t.Name, r, err)
			} else {
				err = fn(r, buf, scratch)
			}
			if err != nil {
				failed.Store(true)
				return err
			}
		}
		return nil
	})
}

// putTernary writes codes (-1, 0, +1) as the kernels' 2-bit codes (w+1)
// into dst (padK/4 bytes): in chunk c, word j, bits 8b+2s hold weight
// c*64+16j+4s+b. Padding weights get code 1 (zero).
func putTernary(dst []byte, codes []int8) {
	kp := padK(len(codes))
	for c := 0; c < kp/64; c++ {
		for j := 0; j < 4; j++ {
			var word uint32
			for s := 0; s < 4; s++ {
				for b := 0; b < 4; b++ {
					code := uint32(1)
					if i := c*64 + 16*j + 4*s + b; i < len(codes) {
						code = uint32(codes[i] + 1)
					}
					word |= code << (8*b + 2*s)
				}
			}
			binary.LittleEndian.PutUint32(dst[c*16+j*4:], word)
		}
	}
}

// uniformScale folds a row's block scales into its codes and returns the
// row's one scale a (weights are then codes*a), or false when blocks that
// hold weights have scales of different magnitudes. A negative block scale
// flips its codes; a zero one zeroes them. scales is nil for types whose
// only scale is the tensor's (I2_S): a is 1.
func uniformScale(codes []int8, scales []float32, block int) (float32, bool) {
	if scales == nil {
		return 1, true
	}
	var a float32
	for b, d := range scales {
		blk := codes[b*block : (b+1)*block]
		if d == 0 {
			clear(blk)
			continue
		}
		m := float32(math.Abs(float64(d)))
		if math.IsNaN(float64(m)) || math.IsInf(float64(m), 0) {
			return 0, false
		}
		used := false
		for _, c := range blk {
			used = used || c != 0
		}
		if !used {
			continue
		}
		if a == 0 {
			a = m
		} else if m != a {
			return 0, false
		}
		if d < 0 {
			for i := range blk {
				blk[i] = -blk[i]
			}
		}
	}
	return a, true
}

// packTernary repacks t as 2-bit codes with a scale per row, decoding the
// codes straight from the file's blocks, rows in parallel. ok is false when
// some row is not of the form {-a, 0, +a} (e.g. TQ2_0 blocks of one row with
// different scales, or Q2_0 code +2): the caller then uses a dense kind,
// which is exact for those.
func packTernary(t *model.Tensor) (m *hostMat, ok bool, err error) {
	if !quant.IsTernary(t.Type) {
		return nil, false, nil
	}
	srcRB, err := t.Type.RowBytes(t.Cols)
	if err != nil {
		return nil, false, fmt.Errorf("cuda: tensor %q: %w", t.Name, err)
	}
	m = newHostMat(kindTernary, t.Rows, t.Cols)
	rb := m.rowBytes()
	ts := tensorScale(t)
	block := t.Type.BlockSize()
	var notUniform atomic.Bool // the other ranges stop early
	par.Rows(t.Rows, func(r0, r1 int) error {
		codes := make([]int8, t.Cols)
		for r := r0; r < r1 && !notUniform.Load(); r++ {
			// An error here is a code that is not ternary (checkTensor
			// has verified the sizes): the dense kinds are exact for it.
			scales, err := quant.TernaryCodes(t.Type, t.Data[r*srcRB:(r+1)*srcRB], codes)
			if err != nil {
				notUniform.Store(true)
				return nil
			}
			a, good := uniformScale(codes, scales, block)
			if !good {
				notUniform.Store(true)
				return nil
			}
			putTernary(m.w[r*rb:(r+1)*rb], codes)
			m.rs[r] = a * ts
		}
		return nil
	})
	if notUniform.Load() {
		return nil, false, nil
	}
	return m, true, nil
}

// packDense repacks t as kind k (f32, f16 or q8_0). Sources already of that
// kind are copied bit for bit; others are dequantized (and for q8_0
// re-quantized in blocks of 32 as ggml does).
func packDense(t *model.Tensor, k kind) (*hostMat, error) {
	m := newHostMat(k, t.Rows, t.Cols)
	ts := tensorScale(t)
	for r := range m.rs {
		m.rs[r] = ts
	}
	kp := padK(t.Cols)
	rb := m.rowBytes()
	srcRB, err := t.Type.RowBytes(t.Cols)
	if err != nil {
		return nil, fmt.Errorf("cuda: tensor %q: %w", t.Name, err)
	}
	switch {
	case k == kindF16 && t.Type == quant.F16:
		for r := 0; r < t.Rows; r++ {
			copy(m.w[r*rb:], t.Data[r*srcRB:(r+1)*srcRB])
		}
		return m, nil
	case k == kindQ8 && t.Type == quant.Q8_0:
		for r := 0; r < t.Rows; r++ {
			splitQ8(m, r, t.Data[r*srcRB:(r+1)*srcRB])
		}
		return m, nil
	}
	q8 := 0
	if k == kindQ8 {
		q8 = kp / 32 * 34
	}
	err = forRows(t, q8, func(r int, padded []float32, q8 []byte) error {
		dst := m.w[r*rb : (r+1)*rb]
		switch k {
		case kindF32:
			for i, v := range padded {
				binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
			}
		case kindF16:
			for i, v := range padded {
				binary.LittleEndian.PutUint16(dst[2*i:], quant.F32ToF16(v))
			}
		case kindQ8:
			if err := quant.Quantize(quant.Q8_0, q8, padded); err != nil {
				return fmt.Errorf("cuda: tensor %q row %d: %w", t.Name, r, err)
			}
			splitQ8(m, r, q8)
		default:
			return fmt.Errorf("cuda: tensor %q: cannot pack as %s", t.Name, k)
		}
		return nil
	})
	return m, err
}

// splitQ8 moves one row of q8_0 blocks (f16 d, 32 int8) into the device
// layout: the int8 values contiguous, the scales in their own array.
// Padding blocks stay zero.
func splitQ8(m *hostMat, r int, blocks []byte) {
	kp := padK(m.cols)
	qs := m.w[r*kp : (r+1)*kp]
	ds := m.d[r*(kp/32)*2 : (r+1)*(kp/32)*2]
	for b := 0; b < len(blocks)/34; b++ {
		copy(ds[2*b:2*b+2], blocks[34*b:34*b+2])
		copy(qs[32*b:32*b+32], blocks[34*b+2:34*b+34])
	}
}

// stackRows concatenates matrices of one kind and width row-wise.
func stackRows(ms ...*hostMat) *hostMat {
	out := &hostMat{kind: ms[0].kind, cols: ms[0].cols}
	for _, m := range ms {
		out.rows += m.rows
		out.w = append(out.w, m.w...)
		out.d = append(out.d, m.d...)
		out.rs = append(out.rs, m.rs...)
	}
	return out
}

// denseKindFor picks the device kind for a non-ternary tensor type: f32
// stays f32 (exact, and cheap for the small models stored that way), f16
// and bf16 become f16, everything else q8_0 (Q6_K, Q5_0, Q4_K, Q4_0 and ternary
// tensors whose rows are not uniform are re-quantized: close, not exact).
func denseKindFor(t quant.Type) kind {
	switch t {
	case quant.F32:
		return kindF32
	case quant.F16, quant.BF16:
		return kindF16
	}
	return kindQ8
}

// widest returns the kind that loses least of a and b (f32 > f16 > q8_0).
func widest(a, b kind) kind {
	rank := func(k kind) int {
		switch k {
		case kindF32:
			return 3
		case kindF16:
			return 2
		}
		return 1
	}
	if rank(b) > rank(a) {
		return b
	}
	return a
}

// gemvBlock is a product's block size: the largest of 256, 512 and 1024
// threads (at most maxBT) that still gives every multiprocessor a block.
// Bigger blocks mean fewer blocks staging (and normalising) the same
// input; products too small to fill the card keep 256.
func gemvBlock(items, tpr, sms, maxBT int) int {
	bt := 256
	for bt*2 <= maxBT && items/(bt*2/tpr) >= sms {
		bt *= 2
	}
	return bt
}
