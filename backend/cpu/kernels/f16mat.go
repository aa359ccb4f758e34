package kernels

import (
	"fmt"

	"github.com/edgellm/edgellm/quant"
)

// F16Mat is a matrix of IEEE half weights (GGML F16, row-major), multiplied
// with float32 activations (no activation quantization).
type F16Mat struct {
	rows, cols int
	w          []uint16
	scale      float32 // multiplies every product (FromQuant's scale)
}

// NewF16Mat takes rows*cols halves. cols may be any positive width.
func NewF16Mat(rows, cols int, w []uint16) (*F16Mat, error) {
	if rows <= 0 || cols <= 0 || rows > 1<<24 || cols > 1<<24 || tooLarge(rows, cols) {
		return nil, fmt.Errorf("kernels: F16 matrix %dx%d: bad shape", rows, cols)
	}
	if len(w) != rows*cols {
		return nil, fmt.Errorf("kernels: F16 matrix %dx%d: %d values", rows, cols, len(w))
	}
	return &F16Mat{rows: rows, cols: cols, w: w, scale: 1}, nil
}

// FromF16 reads GGML F16 data (little-endian halves) into a new F16Mat,
// in arena a (or the heap when nil).
func FromF16(rows, cols int, data []byte, a *Arena) (*F16Mat, error) {
	if rows <= 0 || cols <= 0 || tooLarge(rows, cols) || len(data) != 2*rows*cols {
		return nil, fmt.Errorf("kernels: F16 matrix %dx%d: %d bytes", rows, cols, len(data))
	}
	w := alloc[uint16](a, rows*cols)
	for i := range w {
		w[i] = uint16(data[2*i]) | uint16(data[2*i+1])<<8
	}
	return NewF16Mat(rows, cols, w)
}

// Rows is the number of output features.
func (m *F16Mat) Rows() int { return m.rows }

// Cols is the number of input features.
func (m *F16Mat) Cols() int { return m.cols }

// Bytes is the resident size.
func (m *F16Mat) Bytes() int { return 2 * len(m.w) }

// Memory implements Matrix.
func (m *F16Mat) Memory(fn func([]byte)) { visit(fn, asBytes(m.w)) }

// MatVec sets dst[r] = row r · x for r in [r0, r1), x the first token's
// float input held by a.
func (m *F16Mat) MatVec(dst []float32, a *Acts, r0, r1 int) {
	checkArgs("F16Mat.MatVec", m.rows, m.cols, len(dst), a, r0, r1, false)
	m.MatVecF32(dst, a.X[:m.cols], r0, r1)
}

// MatMat sets dst[i*Rows()+r] = row r · x_i for every token i of a.
func (m *F16Mat) MatMat(dst []float32, a *Acts, r0, r1 int) {
	checkArgs("F16Mat.MatMat", m.rows, m.cols, len(dst), a, r0, r1, true)
	step := (16 << 10) / (2 * m.cols) / 4 * 4
	if step < 4 {
		step = 4
	}
	for r := r0; r < r1; r += step {
		e := min(r+step, r1)
		for i := 0; i < a.Tokens; i++ {
			m.MatVecF32(dst[i*m.rows:(i+1)*m.rows], a.X[i*m.cols:(i+1)*m.cols], r, e)
		}
	}
}

// MatVecF32 sets dst[r] = row r · x for r in [r0, r1) with x a plain float32
// vector of Cols() elements (any width).
func (m *F16Mat) MatVecF32(dst []float32, x []float32, r0, r1 int) {
	if len(x) != m.cols || r0 < 0 || r1 > m.rows || r0 > r1 || len(dst) < r1 {
		panic(fmt.Sprintf("kernels: F16Mat.MatVecF32: x of %d for %d columns, rows [%d,%d) of %d, dst of %d", len(x), m.cols, r0, r1, m.rows, len(dst)))
	}
	if r0 == r1 {
		return
	}
	n16 := m.cols / 16
	done := 0
	if useAVX2 && n16 > 0 {
		g := (r1 - r0) / 4
		if g > 0 {
			f16Dot4(&m.w[r0*m.cols], 2*m.cols, &x[0], n16, &dst[r0], g)
		}
		if r := r0 + 4*g; r < r1 {
			f16Dot1(&m.w[r*m.cols], 2*m.cols, &x[0], n16, &dst[r], r1-r)
		}
		done = 16 * n16
	} else {
		for r := r0; r < r1; r++ {
			dst[r] = 0
		}
	}
	for r := r0; r < r1; r++ {
		row := m.w[r*m.cols : (r+1)*m.cols]
		var s float32
		for j := done; j < m.cols; j++ {
			s += quant.F16ToF32(row[j]) * x[j]
		}
		dst[r] = (dst[r] + s) * m.scale
	}
}
