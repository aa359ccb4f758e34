package kernels

import (
	"unsafe"

	"github.com/edgellm/edgellm/internal/offheap"
)

// Arena lays out the memory of the matrices built with it
// (TernaryOptions.Arena) one after another in the order they are built,
// each piece 64-byte aligned, in one allocation sized up front (the sum
// of the matrices' Footprint). A loader that builds its matrices in the
// order a forward pass reads them makes the pass one run through memory:
// the kernels' prefetches, which run a few KiB ahead of the row being
// read, then run on from the end of one matrix into the start of the
// next instead of into unrelated memory, so a small matrix's first rows
// no longer wait on memory (docs/cpu-notes.md). An Arena is not safe for
// concurrent use.
//
// The allocation lies outside the Go heap (offheap), so the collector's
// goal follows the small heap beside it instead of twice the weights (a
// load's garbage was held or freed as the collector's timing fell), and
// the runtime never clears it, which for a heap object reusing freed
// pages touches every page at once (docs/cpu-notes.md).
type Arena struct {
	free    []byte // what is left of the allocation
	spilled int    // bytes taken from the heap when the allocation ran short
	release func()
	// codes is FromQuant's buffer for a ternary tensor's decoded codes,
	// reused from one matrix to the next: a fresh one per tensor was a
	// matrix's worth of garbage each time, which the collector and the
	// system (its pages returned, then faulted in again) paid for.
	codes []int8
}

// NewArena returns an arena of size bytes. A piece that no longer fits
// (a ternary matrix with per-block scales, which Footprint does not
// foresee) comes from the heap instead.
func NewArena(size int) *Arena {
	b, release := offheap.Alloc(max(size, 0) + arenaAlign - 1)
	return &Arena{free: b, release: release}
}

// scratchCodes returns n int8s for decoded codes: the arena's reused
// buffer, or a new slice without an arena. Its contents are garbage.
func scratchCodes(a *Arena, n int) []int8 {
	if a == nil {
		return make([]int8, n)
	}
	if cap(a.codes) < n {
		a.codes = make([]int8, n)
	}
	return a.codes[:n]
}

// Built tells the arena its last matrix is built: it drops the buffer
// the building reused.
func (a *Arena) Built() { a.codes = nil }

// Release gives the arena's memory back to the system. Every matrix built
// in it is gone with it: call it once nothing will read them again.
func (a *Arena) Release() {
	if a.release != nil {
		a.release()
		a.release, a.free = nil, nil
	}
}

// arenaAlign is a cache line: every piece starts on its own.
const arenaAlign = 64

// alignUp rounds n up to a multiple of arenaAlign.
func alignUp(n int) int { return (n + arenaAlign - 1) &^ (arenaAlign - 1) }

// take returns n zeroed bytes, 64-byte aligned where they come from the
// arena.
func (a *Arena) take(n int) []byte {
	pad := int(-uintptr(unsafe.Pointer(unsafe.SliceData(a.free))) & (arenaAlign - 1))
	if len(a.free) < pad+n {
		a.spilled += n
		return make([]byte, n)
	}
	b := a.free[pad : pad+n : pad+n]
	a.free = a.free[pad+n:]
	return b
}

// alloc returns n zeroed elements from arena a, or from the heap when a is
// nil.
func alloc[T byte | int8 | uint16 | float32](a *Arena, n int) []T {
	if a == nil || n == 0 {
		return make([]T, n)
	}
	var z T
	b := a.take(n * int(unsafe.Sizeof(z)))
	return unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(b))), n)
}
