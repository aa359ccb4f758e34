package main

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// vexVNNIFile rewrites the VPDPBUSD lines of the assembly file at path as
// VEX-encoded bytes (vexVNNI).
func vexVNNIFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, err := vexVNNI(string(b))
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.WriteFile(path, []byte(out), 0o644)
}

// vexVNNI replaces every "VPDPBUSD src, vsrc, dst" line of Go assembly with
// the bytes of its AVX-VNNI form (VEX.128/256.66.0F38.W0 50 /r) and the
// instruction as a comment. Go's assembler would encode it as EVEX, an
// AVX-512 instruction.
func vexVNNI(src string) (string, error) {
	lines := strings.Split(src, "\n")
	for n, line := range lines {
		if strings.HasPrefix(line, "// Requires:") {
			// avo lists the EVEX form's features
			lines[n] = strings.Replace(line, "AVX512VL, AVX512VNNI", "AVX-VNNI", 1)
			continue
		}
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "VPDPBUSD" {
			continue
		}
		ops := strings.Split(strings.Join(f[1:], ""), ",")
		if len(ops) != 3 {
			return "", fmt.Errorf("line %d: %q: want three operands", n+1, line)
		}
		enc, err := vpdpbusdVEX(ops[0], ops[1], ops[2])
		if err != nil {
			return "", fmt.Errorf("line %d: %q: %w", n+1, line, err)
		}
		bs := make([]string, len(enc))
		for i, c := range enc {
			bs[i] = fmt.Sprintf("BYTE $0x%02x", c)
		}
		indent := line[:len(line)-len(strings.TrimLeft(line, " \t"))]
		lines[n] = indent + strings.Join(bs, "; ") + " // " + strings.Join(f, " ") + " (VEX: AVX-VNNI)"
	}
	return strings.Join(lines, "\n"), nil
}

var gpNum = map[string]byte{
	"AX": 0, "CX": 1, "DX": 2, "BX": 3, "SP": 4, "BP": 5, "SI": 6, "DI": 7,
	"R8": 8, "R9": 9, "R10": 10, "R11": 11, "R12": 12, "R13": 13, "R14": 14, "R15": 15,
}

// vecReg parses X0-X15 or Y0-Y15: the register number and whether it is
// 256 bits wide. VEX reaches only the first 16.
func vecReg(s string) (num byte, wide bool, err error) {
	if len(s) < 2 || (s[0] != 'X' && s[0] != 'Y') {
		return 0, false, fmt.Errorf("%q is not a vector register", s)
	}
	v, err := strconv.Atoi(s[1:])
	if err != nil || v < 0 || v > 15 {
		return 0, false, fmt.Errorf("%q is not a VEX vector register (X0-X15, Y0-Y15)", s)
	}
	return byte(v), s[0] == 'Y', nil
}

// memRe matches Go's memory operands: disp(base) or disp(base)(index*scale).
var memRe = regexp.MustCompile(`^(-?\d*)\(([A-Z0-9]+)\)(?:\(([A-Z0-9]+)\*([1248])\))?$`)

// vpdpbusdVEX encodes Go's "VPDPBUSD a, b, c" (c += the dot of b's
// unsigned bytes with a's signed ones, a a register or memory) in VEX.
func vpdpbusdVEX(a, b, c string) ([]byte, error) {
	vv, wide, err := vecReg(b)
	if err != nil {
		return nil, err
	}
	rr, wide2, err := vecReg(c)
	if err != nil {
		return nil, err
	}
	if wide != wide2 {
		return nil, fmt.Errorf("mixed register widths %s, %s", b, c)
	}
	var rexB, rexX byte
	var modrm byte
	var tail []byte
	if r, w, err := vecReg(a); err == nil {
		if w != wide {
			return nil, fmt.Errorf("mixed register widths %s, %s", a, b)
		}
		rexB = r >> 3
		modrm = 0xc0 | (rr&7)<<3 | r&7
	} else {
		m := memRe.FindStringSubmatch(a)
		if m == nil {
			return nil, fmt.Errorf("operand %q is neither a vector register nor a memory operand", a)
		}
		disp := 0
		if m[1] != "" {
			if disp, err = strconv.Atoi(m[1]); err != nil {
				return nil, err
			}
		}
		base, ok := gpNum[m[2]]
		if !ok {
			return nil, fmt.Errorf("base %q is not a 64-bit general register", m[2])
		}
		rexB = base >> 3
		var mod byte
		switch {
		case disp == 0 && base&7 != 5: // rm 101 with mod 00 means RIP+disp32
		case disp >= -128 && disp <= 127:
			mod = 1
		case disp >= -1<<31 && disp < 1<<31:
			mod = 2
		default:
			return nil, fmt.Errorf("displacement %d out of range", disp)
		}
		if m[3] == "" && base&7 != 4 {
			modrm = mod<<6 | (rr&7)<<3 | base&7
		} else {
			idx := byte(4) // none
			var ss byte
			if m[3] != "" {
				var ok bool
				if idx, ok = gpNum[m[3]]; !ok || idx == 4 {
					return nil, fmt.Errorf("index %q is not usable", m[3])
				}
				ss = map[string]byte{"1": 0, "2": 1, "4": 2, "8": 3}[m[4]]
				rexX = idx >> 3
			}
			modrm = mod<<6 | (rr&7)<<3 | 4
			tail = append(tail, ss<<6|(idx&7)<<3|base&7)
		}
		switch mod {
		case 1:
			tail = append(tail, byte(int8(disp)))
		case 2:
			d := uint32(int32(disp))
			tail = append(tail, byte(d), byte(d>>8), byte(d>>16), byte(d>>24))
		}
	}
	var l byte
	if wide {
		l = 1
	}
	enc := []byte{
		0xc4,
		(^(rr>>3)&1)<<7 | (^rexX&1)<<6 | (^rexB&1)<<5 | 0x02, // map 0F38
		(^vv&15)<<3 | l<<2 | 0x01,                            // W0, pp 66
		0x50,
		modrm,
	}
	return append(enc, tail...), nil
}
