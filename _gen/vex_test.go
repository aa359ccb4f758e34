package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestVPDPBUSDVEX: the encoder gives the bytes GNU as 2.40 writes for
// "{vex} vpdpbusd" (the AT&T form in each comment), over register and
// memory sources, the high registers (REX bits inverted in VEX), SIB
// bases (SP, R12), bases that need a displacement (BP, R13), 8- and
// 32-bit displacements and scaled indexes.
func TestVPDPBUSDVEX(t *testing.T) {
	for _, c := range []struct {
		a, b, c string
		want    []byte
	}{
		{"Y3", "Y2", "Y1", []byte{0xc4, 0xe2, 0x6d, 0x50, 0xcb}},                                     // %ymm3,%ymm2,%ymm1
		{"Y15", "Y8", "Y9", []byte{0xc4, 0x42, 0x3d, 0x50, 0xcf}},                                    // %ymm15,%ymm8,%ymm9
		{"X7", "X6", "X5", []byte{0xc4, 0xe2, 0x49, 0x50, 0xef}},                                     // %xmm7,%xmm6,%xmm5
		{"(SI)", "Y13", "Y4", []byte{0xc4, 0xe2, 0x15, 0x50, 0x26}},                                  // (%rsi),%ymm13,%ymm4
		{"32(SI)", "Y13", "Y5", []byte{0xc4, 0xe2, 0x15, 0x50, 0x6e, 0x20}},                          // 0x20(%rsi)
		{"128(SI)", "Y13", "Y8", []byte{0xc4, 0x62, 0x15, 0x50, 0x86, 0x80, 0, 0, 0}},                // 0x80(%rsi)
		{"-8(BP)", "Y1", "Y2", []byte{0xc4, 0xe2, 0x75, 0x50, 0x55, 0xf8}},                           // -0x8(%rbp)
		{"(BP)", "Y1", "Y2", []byte{0xc4, 0xe2, 0x75, 0x50, 0x55, 0x00}},                             // 0x0(%rbp)
		{"(R13)", "Y1", "Y2", []byte{0xc4, 0xc2, 0x75, 0x50, 0x55, 0x00}},                            // 0x0(%r13)
		{"(SP)", "Y1", "Y2", []byte{0xc4, 0xe2, 0x75, 0x50, 0x14, 0x24}},                             // (%rsp)
		{"16(R12)", "X1", "X2", []byte{0xc4, 0xc2, 0x71, 0x50, 0x54, 0x24, 0x10}},                    // 0x10(%r12)
		{"96(DI)(DX*2)", "Y8", "Y7", []byte{0xc4, 0xe2, 0x3d, 0x50, 0x7c, 0x57, 0x60}},               // 0x60(%rdi,%rdx,2)
		{"4096(R8)(R11*8)", "Y10", "Y12", []byte{0xc4, 0x02, 0x2d, 0x50, 0xa4, 0xd8, 0, 0x10, 0, 0}}, // 0x1000(%r8,%r11,8)
		{"(AX)(R9*4)", "Y0", "Y15", []byte{0xc4, 0x22, 0x7d, 0x50, 0x3c, 0x88}},                      // (%rax,%r9,4)
	} {
		got, err := vpdpbusdVEX(c.a, c.b, c.c)
		if err != nil {
			t.Fatalf("VPDPBUSD %s, %s, %s: %v", c.a, c.b, c.c, err)
		}
		if !bytes.Equal(got, c.want) {
			t.Errorf("VPDPBUSD %s, %s, %s: % x, want % x", c.a, c.b, c.c, got, c.want)
		}
	}
}

// TestVPDPBUSDVEXRejects: what VEX cannot encode, or what is not an
// operand, is an error, not wrong bytes.
func TestVPDPBUSDVEXRejects(t *testing.T) {
	for _, ops := range [][3]string{
		{"Y16", "Y1", "Y2"},        // EVEX-only register
		{"Y1", "Z2", "Z3"},         // 512-bit
		{"X1", "Y2", "Y3"},         // mixed widths
		{"(SI)(SP*1)", "Y1", "Y2"}, // SP cannot index
		{"(EAX)", "Y1", "Y2"},      // not a 64-bit base
		{"foo", "Y1", "Y2"},
	} {
		if b, err := vpdpbusdVEX(ops[0], ops[1], ops[2]); err == nil {
			t.Errorf("VPDPBUSD %s: encoded as % x, want an error", strings.Join(ops[:], ", "), b)
		}
	}
}

// TestVexVNNIRewrites: the file pass replaces VPDPBUSD lines (keeping the
// instruction as a comment) and the Requires line's EVEX features, and
// leaves every other line alone.
func TestVexVNNIRewrites(t *testing.T) {
	src := "// Requires: AVX, AVX2, AVX512VL, AVX512VNNI\nTEXT ·f(SB), NOSPLIT, $0\n\tVPAND Y0, Y1, Y2\n\tVPDPBUSD (SI), Y13, Y4\n\tRET\n"
	want := "// Requires: AVX, AVX2, AVX-VNNI\nTEXT ·f(SB), NOSPLIT, $0\n\tVPAND Y0, Y1, Y2\n\tBYTE $0xc4; BYTE $0xe2; BYTE $0x15; BYTE $0x50; BYTE $0x26 // VPDPBUSD (SI), Y13, Y4 (VEX: AVX-VNNI)\n\tRET\n"
	got, err := vexVNNI(src)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if _, err := vexVNNI("\tVPDPBUSD Y16, Y1, Y2\n"); err == nil {
		t.Fatal("Y16 rewritten")
	}
}
