package kernels

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestStreamSum: StreamSum is the sum of b's little-endian 8-byte words,
// mod 2^64, plus its tail bytes, on each path, at any length and
// alignment.
func TestStreamSum(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	buf := make([]byte, 1<<16+300)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	want := func(b []byte) uint64 {
		var s uint64
		for len(b) >= 8 {
			s += binary.LittleEndian.Uint64(b)
			b = b[8:]
		}
		for _, x := range b {
			s += uint64(x)
		}
		return s
	}
	for _, asm := range []bool{false, true} {
		prev := SetAVX2(asm)
		for _, n := range []int{0, 1, 7, 8, 63, 64, 127, 128, 129, 255, 256, 1000, 4096 + 17, 1 << 16} {
			for _, off := range []int{0, 1, 5, 64, 131} {
				b := buf[off : off+n]
				if got, w := StreamSum(b), want(b); got != w {
					t.Errorf("asm %v, %d bytes at %d: %#x, want %#x", asm, n, off, got, w)
				}
			}
		}
		SetAVX2(prev)
	}
}

// BenchmarkStreamSum reads a buffer larger than the last-level cache with
// StreamSum (the assembly where there is one) and with its Go code.
func BenchmarkStreamSum(b *testing.B) {
	buf := make([]byte, 512<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	const chunk = 8 << 20
	for _, asm := range []bool{false, true} {
		b.Run(fmt.Sprintf("asm=%v", asm), func(b *testing.B) {
			prev := SetAVX2(asm)
			defer SetAVX2(prev)
			b.SetBytes(chunk)
			var sink uint64
			off := 0
			for i := 0; i < b.N; i++ {
				if off+chunk > len(buf) {
					off = 0
				}
				sink += StreamSum(buf[off : off+chunk])
				off += chunk
			}
			_ = sink
		})
	}
}
