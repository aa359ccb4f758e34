//go:build !unix

package offheap

// mapAnon has no anonymous maps to give here: Alloc takes the heap.
func mapAnon(n int) ([]byte, func(), bool) { return nil, nil, false }
