package kernels

import "unsafe"

// Matrix is what every packed matrix here offers the backend. Row ranges let
// the caller's workers split one product; dst is indexed by absolute row
// (MatMat: dst[token*Rows()+row]). Misuse (wrong widths, ranges past the
// end, short dst) panics like an out-of-range slice index.
type Matrix interface {
	Rows() int
	Cols() int
	Bytes() int
	// Memory calls fn with each slice of the matrix's resident memory
	// (values, then scales), read-only: Bytes() bytes in all. A benchmark
	// streams it to measure the machine's bandwidth over the same pages.
	Memory(fn func([]byte))
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

// asBytes views s's elements as bytes, without copying.
func asBytes[T any](s []T) []byte {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*int(unsafe.Sizeof(s[0])))
}

// visit calls fn with each non-empty slice.
func visit(fn func([]byte), parts ...[]byte) {
	for _, b := range parts {
		if len(b) > 0 {
			fn(b)
		}
	}
}
