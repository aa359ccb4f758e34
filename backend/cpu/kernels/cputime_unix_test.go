//go:build unix

package kernels

import "syscall"

// processCPU returns the process's user+system CPU time in nanoseconds, so
// benchmarks can report a rate that other processes on a busy machine do
// not distort (much).
func processCPU() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
