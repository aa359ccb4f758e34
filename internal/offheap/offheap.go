// Package offheap hands out zeroed byte slices outside the Go heap, for
// large, long-lived or short-lived buffers whose pages should come and go
// with the program's own calls: the repacked weights (kernels.Arena) and
// bench's stream buffer.
//
// Outside the heap the memory is fresh from the system: the runtime never
// clears it (a large heap object reusing freed heap pages is cleared whole
// when it is made, so all of it becomes resident at once), the collector's
// goal follows the heap that is left rather than twice the weights, and
// release gives the pages back at once rather than when the collector and
// the scavenger get to them. Nothing in such memory may hold a Go pointer.
package offheap

// Alloc returns n zeroed bytes and the function that gives them back;
// after release, b must not be touched. Where the system has no anonymous
// maps, or refuses one, the bytes come from the heap and release does
// nothing.
func Alloc(n int) (b []byte, release func()) {
	if n <= 0 {
		return nil, func() {}
	}
	if b, release, ok := mapAnon(n); ok {
		return b, release
	}
	return make([]byte, n), func() {}
}
