//go:build !unix

package bench

// newBuffer makes n bytes on the heap where there is no mmap; PeakRSS is
// Linux's only, so nothing counts them.
func newBuffer(n int64) (buf []byte, release func()) { return make([]byte, n), func() {} }
