//go:build unix

package bench

import "syscall"

// newBuffer maps n bytes of anonymous memory outside the Go heap, so that
// freeBuffer gives them back to the system at once: a heap buffer leaves
// when the collector and the scavenger get to it, and the peak restarted
// after it (ResetPeakRSS) could still count it.
func newBuffer(n int64) ([]byte, error) {
	return syscall.Mmap(-1, 0, int(n), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
}

func freeBuffer(b []byte) { _ = syscall.Munmap(b) }
