package kernels

import (
	"math/rand/v2"
	"runtime"
	"testing"
	"unsafe"

	"github.com/edgellm/edgellm/quant"
)

func addr[T any](s []T) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(s))) }

// TestArena checks the arena's pieces: zeroed, 64-byte aligned, each right
// after the one before (up to the alignment), and from the heap once the
// arena is full.
func TestArena(t *testing.T) {
	sizes := []int{1, 100, 4096, 63, 64, 65, 300 << 10}
	total := 0
	for _, n := range sizes {
		total += alignUp(n)
	}
	a := NewArena(total)
	var prevEnd uintptr
	for i, n := range sizes {
		b := alloc[byte](a, n)
		if len(b) != n || cap(b) != n {
			t.Fatalf("piece %d: len %d cap %d, want %d", i, len(b), cap(b), n)
		}
		p := addr(b)
		if p%arenaAlign != 0 {
			t.Fatalf("piece %d at %#x: not 64-byte aligned", i, p)
		}
		if i > 0 && (p < prevEnd || p-prevEnd >= arenaAlign) {
			t.Fatalf("piece %d at %#x: the one before ended at %#x", i, p, prevEnd)
		}
		for j, v := range b {
			if v != 0 {
				t.Fatalf("piece %d byte %d = %d", i, j, v)
			}
			b[j] = 0xff // a later piece must not overlap
		}
		prevEnd = p + uintptr(n)
	}
	if a.spilled != 0 {
		t.Fatalf("%d bytes spilled from an arena sized for its pieces", a.spilled)
	}
	if s := alloc[float32](a, 1000); len(s) != 1000 || a.spilled != 4000 {
		t.Fatalf("a full arena: %d floats, %d bytes spilled; want 1000 from the heap", len(s), a.spilled)
	}
	if s := alloc[int8](a, 0); len(s) != 0 {
		t.Fatal("an empty piece has elements")
	}
	if s := alloc[float32](nil, 5); len(s) != 5 {
		t.Fatal("no arena: want a heap slice of 5")
	}
}

// TestArenaOffHeap: a large arena does not count in the Go heap (where the
// system maps memory, as on Linux), so the collector's goal and the
// runtime's clearing never see the weights; Release gives it back and
// leaves nothing to build in.
func TestArenaOffHeap(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("anonymous maps are checked where the CI runs")
	}
	const n = 64 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	a := NewArena(n)
	b := alloc[byte](a, n)
	b[0], b[n-1] = 1, 1
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown >= n/2 {
		t.Fatalf("the heap grew by %d bytes for an arena of %d", grown, n)
	}
	if a.spilled != 0 {
		t.Fatalf("%d bytes spilled", a.spilled)
	}
	a.Release()
	a.Release() // twice is harmless
	if len(a.free) != 0 {
		t.Fatalf("%d bytes left after Release", len(a.free))
	}
}

// TestArenaMatrices builds every kind of matrix in an arena of its
// Footprint and on the heap: the arena holds all of the matrix and is
// used up exactly, and the products agree bit for bit.
func TestArenaMatrices(t *testing.T) {
	rng := rand.New(rand.NewPCG(61, 62))
	const rows, cols = 37, 256
	acts := newActs(t, randActs(rng, cols, 1), cols, true)
	for _, typ := range []quant.Type{quant.TQ2_0, quant.Q2_0, quant.Q8_0, quant.Q5_0, quant.Q4_0, quant.Q6_K, quant.F16, quant.TQ1_0, quant.I2_S} {
		data := randQuantData(t, rng, typ, rows, cols)
		for _, scale := range []float32{1, 0.5} {
			heap, err := FromQuant(typ, rows, cols, data, scale, TernaryOptions{})
			if err != nil {
				t.Fatal(err)
			}
			a := NewArena(Footprint(typ, rows, cols, scale, TernaryOptions{}))
			lo, hi := addr(a.free), addr(a.free)+uintptr(len(a.free))
			// the reused codes buffer holds the last matrix's codes: every
			// one must be written again
			a.codes = make([]int8, rows*cols)
			for i := range a.codes {
				a.codes[i] = int8(i%3 - 1)
			}
			in, err := FromQuant(typ, rows, cols, data, scale, TernaryOptions{Arena: a})
			if err != nil {
				t.Fatal(err)
			}
			if len(a.free) >= 2*arenaAlign || a.spilled != 0 { // the start's and the last piece's padding
				t.Fatalf("%s scale %v: %d bytes of the arena left, %d spilled", typ, scale, len(a.free), a.spilled)
			}
			in.Memory(func(b []byte) {
				if p := addr(b); len(b) > 0 && (p < lo || p+uintptr(len(b)) > hi) {
					t.Fatalf("%s scale %v: a piece at %#x outside the arena [%#x, %#x)", typ, scale, p, lo, hi)
				}
			})
			want, got := make([]float32, rows), make([]float32, rows)
			heap.MatVec(want, acts, 0, rows)
			in.MatVec(got, acts, 0, rows)
			for r := range want {
				if want[r] != got[r] {
					t.Fatalf("%s scale %v: row %d: arena %v, heap %v", typ, scale, r, got[r], want[r])
				}
			}
		}
	}
}

// randQuantData quantizes random weights (ternary ones for the ternary
// types) to typ.
func randQuantData(t *testing.T, rng *rand.Rand, typ quant.Type, rows, cols int) []byte {
	t.Helper()
	w := make([]float32, rows*cols)
	for i := range w {
		if quant.IsTernary(typ) {
			w[i] = 0.25 * float32(rng.IntN(3)-1)
		} else {
			w[i] = float32(rng.NormFloat64() * 0.05)
		}
	}
	rb, err := typ.RowBytes(cols)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, rb*rows)
	if err := quant.Quantize(typ, data, w); err != nil {
		t.Fatalf("%s: %v", typ, err)
	}
	return data
}
