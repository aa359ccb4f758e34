package offheap

import (
	"runtime"
	"testing"
)

// TestAlloc: the bytes are n long, zeroed and writable, outside the heap
// where the system maps memory (the heap's in-use bytes do not grow by
// them), and n <= 0 gives nothing.
func TestAlloc(t *testing.T) {
	const n = 64<<20 + 3
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b, release := Alloc(n)
	runtime.ReadMemStats(&after)
	if len(b) != n {
		t.Fatalf("len %d, want %d", len(b), n)
	}
	for i := 0; i < n; i += 4093 {
		if b[i] != 0 {
			t.Fatalf("byte %d = %d, want 0", i, b[i])
		}
		b[i] = byte(i)
	}
	b[n-1] = 1
	_, rel, mapped := mapAnon(4096)
	if mapped {
		rel()
	}
	if mapped && after.HeapAlloc-before.HeapAlloc >= n {
		t.Fatalf("heap grew by %d bytes for a mapped buffer of %d", after.HeapAlloc-before.HeapAlloc, n)
	}
	release()
	for _, m := range []int{0, -1} {
		if b, release := Alloc(m); b != nil {
			t.Fatalf("Alloc(%d) = %d bytes", m, len(b))
		} else {
			release()
		}
	}
}
