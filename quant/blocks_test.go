package quant

import (
	"encoding/binary"
	"testing"
)

// Hand-made blocks: the expected values are worked out by hand from the
// layouts described in the package's files, never by the code under test.

func filled(n int, v byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = v
	}
	return b
}

func setF16(b []byte, off int, h uint16) { binary.LittleEndian.PutUint16(b[off:], h) }

func TestHandBlocks(t *testing.T) {
	type tc struct {
		name string
		typ  Type
		blk  []byte
		want map[int]float32 // index -> value; others must equal rest
		rest float32
	}
	var cases []tc

	{ // Q8_0: d = 0.5
		b := filled(34, 0)
		setF16(b, 0, 0x3800)
		b[2], b[3], b[4], b[5] = 1, 0xfe, 127, 0x80 // 1, -2, 127, -128
		cases = append(cases, tc{"q8_0", Q8_0, b, map[int]float32{0: 0.5, 1: -1, 2: 63.5, 3: -64}, 0})
	}
	{ // Q4_0: d = 2; nibble 8 is zero
		b := filled(18, 0x88)
		setF16(b, 0, 0x4000)
		b[2] = 0x9f // element 0: 15-8 = 7 -> 14; element 16: 9-8 = 1 -> 2
		b[3] = 0x08 // element 1: 0; element 17: 0-8 -> -16
		cases = append(cases, tc{"q4_0", Q4_0, b, map[int]float32{0: 14, 16: 2, 17: -16}, 0})
	}
	{ // Q5_0: d = 0.5; code 16 (nibble 0, fifth bit 1) is zero
		b := filled(22, 0)
		setF16(b, 0, 0x3800)
		binary.LittleEndian.PutUint32(b[2:], 0xffffffff)
		b[6] = 0xf3 // element 0: 16+3 -> 1.5; element 16: 16+15 = 31 -> 7.5
		b[7] = 0x08 // element 1: 24 -> 4
		b[2] = 0xfd // element 1's fifth bit 0: code 8 -> -4
		b[5] = 0x7f // element 31's fifth bit 0: code 0 -> -8
		cases = append(cases, tc{"q5_0", Q5_0, b, map[int]float32{0: 1.5, 16: 7.5, 1: -4, 31: -8}, 0})
	}
	{ // Q6_K: d = 1; code 32 (ql nibble 0, qh bits 2) is zero everywhere
		b := filled(210, 0)
		for i := 128; i < 192; i++ {
			b[i] = 0xaa // qh: every 2-bit field = 2
		}
		setF16(b, 208, 0x3c00)
		sc := func(i int, v int8) { b[192+i] = byte(v) }
		sc(0, 2)
		sc(2, -1)
		sc(4, 3)
		sc(6, 1)
		sc(9, 5)
		b[0] = 0x21     // el 0 low nibble 1, el 64 low nibble 2
		b[32] = 0x05    // el 32 low nibble 5, el 96 low nibble 0
		b[128] = 0x1b   // qh[0]: el0 hi 3, el32 hi 2, el64 hi 1, el96 hi 0
		b[64+16] = 0x0f // second half, l = 16: element 144 low nibble 15
		b[128+32+16] = 0xa9
		cases = append(cases, tc{"q6_k", Q6_K, b, map[int]float32{
			0:   2 * (1 + 48 - 32),  // 34
			32:  -1 * (5 + 32 - 32), // -5
			64:  3 * (2 + 16 - 32),  // -42
			96:  1 * (0 + 0 - 32),   // -32
			144: 5 * (15 + 16 - 32), // -5: scale 9 = 8 + l/16
		}, 0})
	}
	{ // Q4_K: d = 1, dmin = 0.5
		b := filled(144, 0)
		setF16(b, 0, 0x3c00)
		setF16(b, 2, 0x3800)
		s := b[4:16]
		s[0], s[4] = 3, 2 // sub-block 0: scale 3, min 2
		s[9] = 0x21       // sub-block 5 (byte 5+4): low bits scale 1, min 2
		s[1] = 0x40       // sub-block 5 scale high bits 01 -> 17; sub-block 1 scale 0
		s[5] = 0x80       // sub-block 5 min high bits 10 -> 34; sub-block 1 min 0
		qs := b[16:]
		qs[0] = 0x05    // element 0 (sub-block 0): 3*5 - 0.5*2 = 14
		qs[64+3] = 0x70 // element 128+32+3 = 163 (sub-block 5): 17*7 - 0.5*34 = 102
		want := map[int]float32{0: 14, 163: 102}
		for i := 1; i < 32; i++ {
			want[i] = -1 // sub-block 0 with code 0: -dmin*2
		}
		for i := 160; i < 192; i++ {
			if i != 163 {
				want[i] = -17
			}
		}
		cases = append(cases, tc{"q4_k", Q4_K, b, want, 0})
	}
	{ // TQ2_0: d = 0.25; 0x55 is code 1 (zero) in every field
		b := filled(66, 0x55)
		setF16(b, 64, 0x3400)
		b[0] = 0x92  // fields 2,0,1,2: el 0 +1, el 32 -1, el 64 0, el 96 +1
		b[33] = 0x00 // el 129, 161, 193, 225: -1
		cases = append(cases, tc{"tq2_0", TQ2_0, b, map[int]float32{
			0: 0.25, 32: -0.25, 96: 0.25, 129: -0.25, 161: -0.25, 193: -0.25, 225: -0.25,
		}, 0})
	}
	{ // TQ1_0: d = 2. Byte 128 = digits 11111 (all zero weights); qh byte
		// 127 = digits 1111 then the scaling 0.
		b := filled(54, 128)
		b[48], b[49], b[50], b[51] = 127, 127, 127, 127
		setF16(b, 52, 0x4000)
		b[0] = 186 // digits 2,0,1,1,2 = 176; ceil(176*256/243) = 186
		b[37] = 3  // digits 0,0,0,0,2 = 2; ceil(512/243) = 3: el 165+16n
		b[50] = 67 // digits 0,2,1,0 (*3) = 63; ceil(63*256/243) = 67: el 242+4n
		cases = append(cases, tc{"tq1_0", TQ1_0, b, map[int]float32{
			0: 2, 32: -2, 128: 2,
			165: -2, 181: -2, 197: -2, 213: -2, 229: 2,
			242: -2, 246: 2, 254: -2,
		}, 0})
	}
	{ // Q2_0: d = 0.5 first; codes 0..3 = -1, 0, +1, +2
		b := filled(18, 0x55)
		setF16(b, 0, 0x3800)
		b[2] = 0xe4  // 11 10 01 00: el 0 -1, el 1 0, el 2 +1, el 3 +2
		b[17] = 0x15 // el 63 (bits 6-7) code 0: -1
		cases = append(cases, tc{"q2_0", Q2_0, b, map[int]float32{0: -0.5, 2: 0.5, 3: 1, 63: -0.5}, 0})
	}
	{ // I2_S: unscaled codes; element 0 in the high bits
		b := filled(32, 0x55)
		b[0] = 0x1b // 00 01 10 11: el 0 -1, el 32 0, el 64 +1, el 96 +2
		b[5] = 0x85 // 10 00 01 01: el 5 +1, el 37 -1
		cases = append(cases, tc{"i2_s", I2_S, b, map[int]float32{0: -1, 64: 1, 96: 2, 5: 1, 37: -1}, 0})
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := c.typ.BlockSize()
			if len(c.blk) != c.typ.BlockBytes() {
				t.Fatalf("block of %d bytes, type says %d", len(c.blk), c.typ.BlockBytes())
			}
			got := make([]float32, n)
			if err := Dequantize(c.typ, got, c.blk); err != nil {
				t.Fatal(err)
			}
			for i, v := range got {
				want, ok := c.want[i]
				if !ok {
					want = c.rest
				}
				if v != want {
					t.Errorf("element %d = %g, want %g", i, v, want)
				}
			}
		})
	}
}
