package kernels

import "encoding/binary"

// StreamSum adds b's little-endian 8-byte words, mod 2^64, then its tail
// bytes: a value depending on every byte, so a loop that calls it reads
// them all. It is the machine's streaming read in bench (the roofline of
// bandwidth_fraction), so it reads as the kernels read their weights: the
// assembly prefetches ahead as they do, which on a core whose demand
// misses alone do not fill its bandwidth is the difference between the
// two (docs/cpu-notes.md). The Go code gives the same value.
func StreamSum(b []byte) uint64 {
	var acc uint64
	if n := len(b) / 128; useAVX2 && n > 0 {
		acc = streamSum(&b[0], n)
		b = b[128*n:]
	}
	return acc + streamSumGo(b)
}

// streamSumGo is StreamSum in eight chains of plain loads.
func streamSumGo(b []byte) uint64 {
	var s0, s1, s2, s3, s4, s5, s6, s7 uint64
	le := binary.LittleEndian
	for len(b) >= 64 {
		w := b[:64:64]
		s0 += le.Uint64(w[0:])
		s1 += le.Uint64(w[8:])
		s2 += le.Uint64(w[16:])
		s3 += le.Uint64(w[24:])
		s4 += le.Uint64(w[32:])
		s5 += le.Uint64(w[40:])
		s6 += le.Uint64(w[48:])
		s7 += le.Uint64(w[56:])
		b = b[64:]
	}
	for len(b) >= 8 {
		s0 += le.Uint64(b)
		b = b[8:]
	}
	for _, x := range b {
		s0 += uint64(x)
	}
	return s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7
}
