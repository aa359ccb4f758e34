//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package gguf

import (
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmapFile maps size bytes of f read-only. The mapping outlives f's
// descriptor; the returned function unmaps it.
func mmapFile(f *os.File, size int) ([]byte, func() error, error) {
	b, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	return b, func() error { return syscall.Munmap(b) }, nil
}

// dropPages tells the kernel the whole pages inside b (part of a read-only
// file mapping) are not needed now: they leave the process's resident set
// and are read from the file again if touched.
func dropPages(b []byte) {
	page := uintptr(syscall.Getpagesize())
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	lo := int((start+page-1)&^(page-1) - start) // first whole page, as an offset into b
	hi := int((start+uintptr(len(b)))&^(page-1) - start)
	if hi <= lo {
		return
	}
	_ = unix.Madvise(b[lo:hi], unix.MADV_DONTNEED)
}
