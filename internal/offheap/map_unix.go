//go:build unix

package offheap

import "syscall"

// mapAnon maps n bytes of private anonymous memory (zeroed by the kernel).
func mapAnon(n int) ([]byte, func(), bool) {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		return nil, nil, false
	}
	return b, func() { _ = syscall.Munmap(b) }, true
}
