package cpu

import (
	"syscall"
	"unsafe"
)

// threadCPU returns the CPU time the calling OS thread has used, in
// seconds (the goroutine must be locked to its thread): unlike the wall
// clock it does not count time the thread spent descheduled.
func threadCPU() float64 {
	var ts syscall.Timespec
	const clockThreadCPUTime = 3 // CLOCK_THREAD_CPUTIME_ID
	if _, _, e := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTime, uintptr(unsafe.Pointer(&ts)), 0); e != 0 {
		return 0
	}
	return float64(ts.Nano()) / 1e9
}

// threadFaults returns the calling OS thread's minor and major page faults
// and involuntary context switches so far.
func threadFaults() (minor, major, invol int64) {
	var ru syscall.Rusage
	const rusageThread = 1 // RUSAGE_THREAD
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0, 0, 0
	}
	return ru.Minflt, ru.Majflt, ru.Nivcsw
}
