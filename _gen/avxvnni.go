package main

// The AVX-VNNI kernels: VEX-encoded VPDPBUSD on 256-bit registers, the
// one VNNI form that CPUs without AVX-512 have (Intel Alder Lake and later
// client cores, AMD Zen 5). They live in the AVX2 file and use only the 16
// VEX registers. Go's assembler knows VPDPBUSD only in its EVEX (AVX-512 VL)
// form, which faults where AVX-512 is missing, so the generator writes each
// VPDPBUSD as avo emits it and vexVNNI then rewrites those lines as the VEX
// bytes (vex.go).

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// ternaryDotBatchV is ternaryDotBatch (same layout and results) with
// VPDPBUSD. A block's 32 bytes hold codes of weights m, m+32, m+64, m+96
// in bits 0-1, 2-3, 4-5, 6-7 of byte m. AND with 0x03 << 2s gives plane s
// in activation order, scaled by 4^s; VPDPBUSD sums 4 bytes of one plane
// into a dword lane, so a lane only ever holds codes of one scale and the
// scale comes off exactly at the end (an arithmetic shift by 2s). One row
// of one token keeps the four planes in their own accumulators (no shifts:
// 1 load, 4 ANDs and 4 VPDPBUSD a block, against ternaryDotBatch's 3
// shifts, 4 ANDs, 4 VPMADDUBSW and 3 adds); more tokens, or four rows a
// pass, shift the block once by 4 so planes 2 and 3 join the accumulators
// of 0 and 1 (two a token and row, so four fit the 16 registers). One or
// two tokens of one row alternate two sets of accumulators between even
// and odd blocks, so that eight VPDPBUSD chains are in flight. A lane gains
// at most 4*128*128 = 2^16 a block: rows up to 2^21 weights (maxZCols,
// which the caller checks) stay within int32.
//
// With one token (scaled: the ternaryVec kernels, as ternaryDotBatchZ's)
// the kernel finishes each row as MatVec's Go expression does,
// float32(dot - *sum) * rs[r] * *inv, and writes floats; with rowsAPass 4
// (short rows, like SmolLM's 576) rows go four at a time while four remain,
// sharing each block's activations (from L1) and one reduction.
func ternaryDotBatchV(name string, nt, rowsAPass int) {
	scaled := nt == 1
	g := ternaryBatchHeader(name, nt, rowsAPass, "V", "AVX-VNNI")
	w, stride, stride3, as, as3, rs, sp, ip, dst, rows := g.w, g.stride, g.stride3, g.as, g.as3, g.rs, g.sum, g.inv, g.dst, g.rows

	// body handles nr rows (with nt tokens) a pass while nr remain.
	body := func(nr int) {
		lbl := fmt.Sprintf("%s_r%d", name, nr)
		scales, sets := 2, 1
		if nt == 1 && nr == 1 {
			scales = 4
		}
		if nt <= 2 && nr == 1 {
			sets = 2
		}
		mask := make([]reg.VecVirtual, scales)
		for s := range mask {
			mask[s] = broadcastConst(0x03030303 << (2 * s))
		}
		// acc[row*nt+token][set][scale]
		acc := make([][][]reg.VecVirtual, nr*nt)
		for i := range acc {
			acc[i] = make([][]reg.VecVirtual, sets)
			for j := range acc[i] {
				acc[i][j] = make([]reg.VecVirtual, scales)
				for s := range acc[i][j] {
					acc[i][j][s] = YMM()
				}
			}
		}

		p, wc, n := rowHead(lbl, nr, rows, w, flat(acc), func(a reg.VecVirtual) { VPXOR(a, a, a) })

		block := func(k, set int) {
			for r := 0; r < nr; r++ {
				b := YMM()
				VMOVDQU(rowAddr(wc, stride, stride3, r, 32*k), b)
				h := b
				if scales == 2 {
					h = YMM()
					VPSRLW(U8(4), b, h)
				}
				for l := 0; l < 4; l++ {
					src := b
					if l >= scales {
						src = h
					}
					s := l % scales
					v := YMM()
					VPAND(mask[s], src, v)
					for i := 0; i < nt; i++ {
						VPDPBUSD(tokAddr(p, as, as3, i, 128*k+32*l), v, acc[r*nt+i][set][s])
					}
				}
			}
		}
		prefetch := func() {
			for r := 0; r < nr; r++ {
				PREFETCHT0(rowAddr(wc, stride, stride3, r, prefetchAhead))
			}
		}

		blockPairs(lbl, n, p, wc, sets, prefetch, block)

		// Each sum's planes, unscaled, into tot.
		tot := make([]reg.VecVirtual, len(acc))
		for i, a := range acc {
			if sets == 2 {
				for s := range a[0] {
					VPADDD(a[1][s], a[0][s], a[0][s])
				}
			}
			for s := 1; s < scales; s++ {
				VPSRAD(U8(uint64(2*s)), a[0][s], a[0][s])
				VPADDD(a[0][s], a[0][0], a[0][0])
			}
			tot[i] = a[0][0]
		}

		// A 64-weight tail (16 bytes, byte m holding weights m, m+16,
		// m+32, m+48) unpacked to scale 1 in 128-bit registers, summed
		// into a fresh register a sum: a VEX.128 op clears the upper lane
		// of its destination, which a full add then carries.
		tl := GP64()
		Load(Param("tail"), tl)
		CMPQ(tl, Imm(0))
		JE(LabelRef(lbl + "_reduce"))
		for r := 0; r < nr; r++ {
			x := XMM()
			VMOVDQU(rowAddr(wc, stride, stride3, r, 0), x)
			t := make([]reg.VecVirtual, nt)
			for i := range t {
				t[i] = YMM()
				VPXOR(t[i], t[i], t[i])
			}
			for l := 0; l < 4; l++ {
				c := XMM()
				if l == 0 {
					VPAND(mask[0].AsX(), x, c)
				} else {
					VPSRLW(U8(uint64(2*l)), x, c)
					VPAND(mask[0].AsX(), c, c)
				}
				for i := 0; i < nt; i++ {
					VPDPBUSD(tokAddr(p, as, as3, i, 16*l), c, t[i].AsX())
				}
			}
			for i := range t {
				VPADDD(t[i], tot[r*nt+i], tot[r*nt+i])
			}
		}

		Label(lbl + "_reduce")
		switch {
		case scaled:
			// dot - sum, converted, times rs[r], times inv: nr rows.
			var x reg.VecVirtual
			sv := XMM()
			VPBROADCASTD(Mem{Base: sp}, sv)
			if nr == 4 {
				x = reduce4x(tot, false)
				VPSUBD(sv, x, x)
				VCVTDQ2PS(x, x)
				VMULPS(Mem{Base: rs}, x, x)
				VBROADCASTSS(Mem{Base: ip}, sv)
				VMULPS(sv, x, x)
				VMOVUPS(x, Mem{Base: dst})
			} else {
				x = reduce1x(tot[0], false)
				VPSUBD(sv, x, x)
				VCVTDQ2PS(x, x)
				VMULSS(Mem{Base: rs}, x, x)
				VMULSS(Mem{Base: ip}, x, x)
				VMOVSS(x, Mem{Base: dst})
			}
			ADDQ(U32(uint32(4*nr)), rs)
		case nt == 4:
			reduce4(tot, Mem{Base: dst}, false)
		default:
			for i := 0; i < nt; i++ {
				reduce1(tot[i], Mem{Base: dst, Disp: 4 * i}, false)
			}
		}
		nextRows(lbl, nr, scaled, w, stride, dst, rows)
	}
	if rowsAPass == 4 {
		body(4)
	}
	body(1)
	VZEROUPPER()
	RET()
}
