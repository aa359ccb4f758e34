package kernels

// Matrix is what every packed matrix here offers the backend. Row ranges let
// the caller's workers split one product; dst is indexed by absolute row
// (MatMat: dst[token*Rows()+row]). Misuse (wrong widths, ranges past the
// end, short dst) panics like an out-of-range slice index.
type Matrix interface {
	Rows() int
	Cols() int
	Bytes() int
	MatVec(dst []float32, a *Acts, r0, r1 int)
	MatMat(dst []float32, a *Acts, r0, r1 int)
}

var (
	_ Matrix = (*Ternary)(nil)
	_ Matrix = (*Int8Mat)(nil)
	_ Matrix = (*F16Mat)(nil)
)

// tooLarge reports a shape whose element count (times the 4 bytes of the
// widest per-element data) would not fit an int, or is beyond any model.
func tooLarge(rows, cols int) bool {
	n := int64(rows) * int64(cols)
	return n > 1<<36 || n > int64(maxInt/4)
}

const maxInt = int(^uint(0) >> 1)
