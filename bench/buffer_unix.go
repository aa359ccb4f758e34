//go:build unix

package bench

import "syscall"

// newBuffer maps n bytes of anonymous memory outside the Go heap, so that
// release gives them back to the system at once: a heap buffer leaves
// when the collector and the scavenger get to it, and the peak restarted
// after it (ResetPeakRSS) could still count it. Where the map is refused
// it falls back to the heap.
func newBuffer(n int64) (buf []byte, release func()) {
	b, err := syscall.Mmap(-1, 0, int(n), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		return make([]byte, n), func() {}
	}
	return b, func() { _ = syscall.Munmap(b) }
}
