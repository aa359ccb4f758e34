package quant

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
)

// A throwaway GGUF v3 tensor lookup for the real-file tests, so this
// package's tests need no package that imports quant (the gguf package
// does). It trusts the test files and checks only bounds.

type testTensor struct {
	typ  Type
	dims []uint64
	data []byte
}

func (t testTensor) elems() int {
	n := 1
	for _, d := range t.dims {
		n *= int(d)
	}
	return n
}

type ggufCursor struct {
	b   []byte
	off int
	err error
}

func (c *ggufCursor) take(n int) []byte {
	if c.err != nil || n < 0 || c.off+n > len(c.b) {
		if c.err == nil {
			c.err = fmt.Errorf("truncated at %d", c.off)
		}
		return make([]byte, 8) // enough for any fixed-size read; the error stops parsing
	}
	s := c.b[c.off : c.off+n]
	c.off += n
	return s
}

func (c *ggufCursor) u32() uint32 { return binary.LittleEndian.Uint32(c.take(4)) }
func (c *ggufCursor) u64() uint64 { return binary.LittleEndian.Uint64(c.take(8)) }
func (c *ggufCursor) str() string { return string(c.take(int(c.u64()))) }
func (c *ggufCursor) skipValue(t uint32) (v uint64) {
	switch t {
	case 0, 1, 7:
		return uint64(c.take(1)[0])
	case 2, 3:
		return uint64(binary.LittleEndian.Uint16(c.take(2)))
	case 4, 5, 6:
		return uint64(c.u32())
	case 10, 11, 12:
		return c.u64()
	case 8:
		c.str()
	case 9:
		et, n := c.u32(), c.u64()
		if n > uint64(len(c.b)) {
			c.err = fmt.Errorf("array of %d", n)
			return
		}
		for i := uint64(0); i < n && c.err == nil; i++ {
			c.skipValue(et)
		}
	default:
		c.err = fmt.Errorf("value type %d", t)
	}
	return
}

func readTestGGUF(path string) (map[string]testTensor, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c := &ggufCursor{b: b}
	if string(c.take(4)) != "GGUF" || c.u32() != 3 {
		return nil, fmt.Errorf("%s: not GGUF v3", path)
	}
	nt, nkv := c.u64(), c.u64()
	align := uint64(32)
	for i := uint64(0); i < nkv && c.err == nil; i++ {
		k := c.str()
		v := c.skipValue(c.u32())
		if k == "general.alignment" {
			align = v
		}
	}
	type info struct {
		name string
		t    testTensor
		off  uint64
	}
	var infos []info
	for i := uint64(0); i < nt && c.err == nil; i++ {
		var in info
		in.name = c.str()
		nd := c.u32()
		for j := uint32(0); j < nd && j < 8; j++ {
			in.t.dims = append(in.t.dims, c.u64())
		}
		in.t.typ = Type(c.u32())
		in.off = c.u64()
		infos = append(infos, in)
	}
	if c.err != nil {
		return nil, fmt.Errorf("%s: %w", path, c.err)
	}
	base := (uint64(c.off) + align - 1) / align * align
	out := map[string]testTensor{}
	for _, in := range infos {
		n := uint64(in.t.elems())
		size, err := TensorBytes(in.t.typ, in.t.dims[0], n)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", path, in.name, err)
		}
		start := base + in.off
		if start+size > uint64(len(b)) || start+size < start {
			return nil, fmt.Errorf("%s: %s: data beyond end of file", path, in.name)
		}
		in.t.data = b[start : start+size]
		out[in.name] = in.t
	}
	return out, nil
}

// relRMS is the RMS of a-b over the RMS of b.
func relRMS(a, b []float32) float64 {
	var num, den float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		num += d * d
		den += float64(b[i]) * float64(b[i])
	}
	return math.Sqrt(num / den)
}
