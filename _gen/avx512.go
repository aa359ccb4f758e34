package main

// The AVX-512 kernels (F, BW, VL and VNNI), written to their own file with
// -avx512:
//
//	go run . -avx512 -out ../backend/cpu/kernels/kernels_avx512_amd64.s -stubs ../backend/cpu/kernels/kernels_avx512_amd64.go -pkg kernels
//
// The products read the same packed data as the AVX2 kernels and give the
// same results bit for bit: the int dots are exact, and the int8 kernels
// apply the scales to the same 8-lane partial sums in the same order as
// int8DotBatch (then the same final reduction). The attention kernels
// (attnz.go) give the AVX2 bits but for the scores' lane sums. Only EVEX-encodable
// instructions are used, since any of the 32 vector registers may be
// allocated (VPHADDD, VPSIGNB, VEXTRACTI128 and the like have no EVEX form).

import (
	"flag"
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

var avx512 = flag.Bool("avx512", false, "write the AVX-512 VNNI kernels (to their own -out and -stubs) instead of the AVX2 ones")

// avx512Only parses the command line and, with -avx512, generates the
// AVX-512 kernels; it reports whether it did.
func avx512Only() bool {
	flag.Parse()
	if !*avx512 {
		return false
	}
	ConstraintExpr("amd64,!noasm")
	zconsts()
	// Decode reads one row after another: a core's share of a product is
	// then one sequential run, which streams at the machine's read rate,
	// where rows taken four (or two) at a time, each its own run, streamed
	// a third slower (docs/cpu-notes.md). Short rows (SmolLM's 576) keep
	// four rows a pass: there the four runs are a few lines apart and the
	// shared activation loads and one reduction for four sums win.
	// One token (decode) scales its sums in the kernel: a Go loop over the
	// int32 results showed in the decode profile (docs/cpu-notes.md).
	ternaryDotBatchZ("ternaryVecT1Z", 1, 1)
	ternaryDotBatchZ("ternaryVecS4Z", 1, 4)
	for nt := 2; nt <= 4; nt++ {
		ternaryDotBatchZ(fmt.Sprintf("ternaryDotT%dZ", nt), nt, 1)
	}
	for nt := 1; nt <= 4; nt++ {
		int8DotBatchZ(nt, false, false, false, 1)
		int8DotBatchZ(nt, true, false, false, 1)
		int8DotBatchZ(nt, true, true, false, 1)
	}
	// One token with float16 scales (decode: the LM head, Q4_0 layers)
	// scales and stores each row in the kernel, as int8DotVecH; short
	// 4-bit rows (SmolLM's 576) two at a time.
	int8DotBatchZ(1, true, false, true, 1)
	int8DotBatchZ(1, true, true, true, 1)
	int8DotBatchZ(1, true, true, true, 2)
	// Decode's attention (attnz.go).
	zec = declareExpConsts("zexp_", true)
	softmaxExpZ()
	for g := 1; g <= 4; g++ {
		attnScoresG(g, avx512Attn)
		attnMixG(g, avx512Attn)
	}
	Generate()
	return true
}

// prefetchAheadZ is prefetchAhead for the AVX-512 kernels, which read one
// row after another: farther ahead suits that one sequential run
// (docs/cpu-notes.md has the distances tried). The AVX2 kernels keep the
// distance measured for them.
const prefetchAheadZ = 8192

// zc holds the 64-byte constants of the AVX-512 kernels.
var zc struct {
	mask01, mask23 Mem // code masks of a 128-weight block broadcast to both halves
	cnt01, cnt23   Mem // per-dword shifts that undo them
	tailShift      Mem // per-qword shifts of a 64-weight tail broadcast to 4 lanes
	mask3          Mem // 0x03 in every byte
	mask0f         Mem // 0x0f in every byte
	nibShift       Mem // per-dword shifts: 0 in the low half, 4 in the high
}

// zconst declares a read-only 64-byte vector of 16 dwords.
func zconst(name string, v [16]uint32) Mem {
	m := GLOBL(name, RODATA|NOPTR)
	for i, x := range v {
		DATA(4*i, U32(x))
	}
	return m
}

// halves returns 16 dwords, lo in the first 8 and hi in the last 8.
func halves(lo, hi uint32) (v [16]uint32) {
	for i := range v {
		v[i] = lo
		if i >= 8 {
			v[i] = hi
		}
	}
	return v
}

func zconsts() {
	zc.mask01 = zconst("z_mask01", halves(0x03030303, 0x0c0c0c0c))
	zc.mask23 = zconst("z_mask23", halves(0x30303030, 0xc0c0c0c0))
	zc.cnt01 = zconst("z_cnt01", halves(0, 2))
	zc.cnt23 = zconst("z_cnt23", halves(4, 6))
	// qword shifts 0, 0, 2, 2, 4, 4, 6, 6 (dwords: low word, then 0)
	zc.tailShift = zconst("z_tailshift", [16]uint32{0, 0, 0, 0, 2, 0, 2, 0, 4, 0, 4, 0, 6, 0, 6, 0})
	zc.mask3 = zconst("z_mask3", halves(0x03030303, 0x03030303))
	zc.mask0f = zconst("z_mask0f", halves(0x0f0f0f0f, 0x0f0f0f0f))
	zc.nibShift = zconst("z_nibshift", halves(0, 4))
}

// hsumZ sums the 16 int32 lanes of z and stores the sum at dst.
func hsumZ(z reg.VecVirtual, dst Mem) {
	VMOVD(hsumZx(z, false), dst)
}

// hsumZx sums the 16 int32 lanes of z (float32 with fl) into lane 0 of
// the XMM it returns.
func hsumZx(z reg.VecVirtual, fl bool) reg.VecVirtual {
	if fl {
		return foldZx(z, true, VADDPS)
	}
	return foldZx(z, false, VPADDD)
}

// foldZx folds the 16 lanes of z (int32, or float32 with fl) with op
// (an add, a max) into lane 0 of the XMM it returns: halves, then
// quarters, then within the last 128 bits.
func foldZx(z reg.VecVirtual, fl bool, op func(...Op)) reg.VecVirtual {
	extract4, extract2 := VEXTRACTI64X4, VEXTRACTI32X4
	if fl {
		extract4, extract2 = VEXTRACTF64X4, VEXTRACTF32X4
	}
	y := YMM()
	extract4(U8(1), z, y)
	op(y, z.AsY(), y)
	x := XMM()
	extract2(U8(1), y, x)
	op(x, y.AsX(), x)
	u := XMM()
	VPSHUFD(U8(0x4e), x, u)
	op(u, x, x)
	VPSHUFD(U8(0xb1), x, u)
	op(u, x, x)
	return x
}

// reduce1fZ is reduce1 (float) with EVEX-encodable instructions: the same
// additions in the same order, ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).
func reduce1fZ(acc reg.VecVirtual, dst Mem) {
	VMOVSS(reduce1fZx(acc), dst)
}

// reduce1fZx is reduce1fZ returning the XMM whose lane 0 holds the sum.
func reduce1fZx(acc reg.VecVirtual) reg.VecVirtual {
	t := XMM()
	VEXTRACTF32X4(U8(1), acc, t)
	VADDPS(t, acc.AsX(), t)
	u := XMM()
	VPSHUFD(U8(0x4e), t, u)
	VADDPS(u, t, t)
	VPSHUFD(U8(0xb1), t, u)
	VADDPS(u, t, t)
	return t
}

// ternaryDotBatchZ is ternaryDotBatch with VPDPBUSD: for each of rows rows
// (stride bytes apart, Layout2Bit) and nt tokens (as bytes apart), the
// int32 sum of code*act to dst[4*r+t].
//
// A 128-weight block's 32 bytes are broadcast to both halves of a ZMM
// register; one AND with 0x03 (low half) / 0x0C (high half) gives codes 0
// and 1 of each byte in activation order (weights m and m+32, so 64
// contiguous activations), the second code scaled by 4; one AND with
// 0x30 / 0xC0 gives codes 2 and 3 (weights m+64, m+96) scaled by 16 and
// 64. No shifts: each dword lane of an accumulator only ever sums codes of
// one scale, so the scales come off exactly at the end (arithmetic shifts
// by 0/2 and 4/6). A lane gains at most 4*128*128 = 2^16 per block, so
// rows up to 2^22 weights stay within int32 (the caller checks). Then per
// token two VPDPBUSD (codes unsigned, activations signed). A 64-weight
// tail (16 bytes, byte m holding m, m+16, m+32, m+48) is broadcast to the
// four 128-bit lanes and shifted by 0, 2, 4, 6.
//
// One row at a time (so the codes are read as one sequential run), two
// sets of accumulators (even and odd blocks) keep four VPDPBUSD chains per
// token in flight. With rowsAPass 4 (one token, short rows: ternaryDotS4Z)
// rows go four at a time while four remain: eight chains, each block's
// activations loaded once for the four rows, and one transposing
// reduction for the four sums (short rows, like SmolLM's 576, spend much
// of their time there); with four tokens one transposing reduction serves
// the row's four sums.
//
// With one token (scaled: the ternaryVec kernels) the kernel finishes each
// row as MatVec's Go expression does, float32(dot - *sum) * rs[r] * *inv
// (the same conversion and two roundings), and writes floats; the
// one-row kernel (ternaryVecT1Z) still reads one row after another, but
// while four rows remain it keeps their four sums and reduces, scales and
// stores them together (seq4).
func ternaryDotBatchZ(name string, nt, rowsAPass int) {
	scaled := nt == 1
	g := ternaryBatchHeader(name, nt, rowsAPass, "Z", "AVX-512 VNNI")
	w, stride, stride3, as, as3, rs, dst, rows := g.w, g.stride, g.stride3, g.as, g.as3, g.rs, g.dst, g.rows
	var sumv, invv reg.VecVirtual
	if scaled {
		sumv, invv = XMM(), XMM()
		VPBROADCASTD(Mem{Base: g.sum}, sumv)
		VBROADCASTSS(Mem{Base: g.inv}, invv)
	}

	m01, m23 := ZMM(), ZMM()
	VMOVDQU64(zc.mask01, m01)
	VMOVDQU64(zc.mask23, m23)

	// body handles nr rows (with nt tokens) a pass while nr remain.
	body := func(nr int) {
		lbl := fmt.Sprintf("%s_r%d", name, nr)
		sets := 2
		if nr > 1 {
			sets = 1
		}
		// acc[row][token][2*set+half]
		acc := make([][][]reg.VecVirtual, nr)
		for r := range acc {
			acc[r] = make([][]reg.VecVirtual, nt)
			for i := range acc[r] {
				acc[r][i] = make([]reg.VecVirtual, 2*sets)
				for j := range acc[r][i] {
					acc[r][i][j] = ZMM()
				}
			}
		}
		p, wc, n := rowHead(lbl, nr, rows, w, flat(acc), func(a reg.VecVirtual) { VPXORD(a, a, a) })

		block := func(k, set int) {
			var q []reg.VecVirtual // one token's activations, shared by the rows
			if nr > 1 {
				q = []reg.VecVirtual{ZMM(), ZMM()}
				VMOVDQU64(Mem{Base: p, Disp: 128 * k}, q[0])
				VMOVDQU64(Mem{Base: p, Disp: 128*k + 64}, q[1])
			}
			for r := 0; r < nr; r++ {
				v01, v23 := blockCodesZ(rowAddr(wc, stride, stride3, r, 32*k), m01, m23)
				for i := 0; i < nt; i++ {
					if q != nil {
						VPDPBUSD(q[0], v01, acc[r][i][2*set])
						VPDPBUSD(q[1], v23, acc[r][i][2*set+1])
						continue
					}
					VPDPBUSD(tokAddr(p, as, as3, i, 128*k), v01, acc[r][i][2*set])
					VPDPBUSD(tokAddr(p, as, as3, i, 128*k+64), v23, acc[r][i][2*set+1])
				}
			}
		}
		prefetch := func() {
			for r := 0; r < nr; r++ {
				PREFETCHT0(rowAddr(wc, stride, stride3, r, prefetchAheadZ))
			}
		}

		blockPairs(lbl, n, p, wc, sets, prefetch, block)
		for r := range acc {
			for i := range acc[r] {
				foldZ(acc[r][i], sets)
			}
		}
		tl := GP64()
		Load(Param("tail"), tl)
		CMPQ(tl, Imm(0))
		JE(LabelRef(lbl + "_reduce"))
		var qt reg.VecVirtual
		if nr > 1 {
			qt = ZMM()
			VMOVDQU64(Mem{Base: p}, qt)
		}
		for r := 0; r < nr; r++ {
			c := tailCodesZ(rowAddr(wc, stride, stride3, r, 0))
			for i := 0; i < nt; i++ {
				if nr > 1 {
					VPDPBUSD(qt, c, acc[r][i][0])
				} else {
					VPDPBUSD(tokAddr(p, as, as3, i, 0), c, acc[r][i][0])
				}
			}
		}

		Label(lbl + "_reduce")
		switch {
		case scaled:
			// dot - sum, converted, times rs[r], times inv: nr rows.
			var x reg.VecVirtual
			if nr == 4 {
				x = hsum4Zx([]reg.VecVirtual{acc[0][0][0], acc[1][0][0], acc[2][0][0], acc[3][0][0]})
			} else {
				x = hsumZx(acc[0][0][0], false)
			}
			scaleStore(x, nr, sumv, invv, rs, dst)
		case nr == 1 && nt == 4:
			hsum4Z([]reg.VecVirtual{acc[0][0][0], acc[0][1][0], acc[0][2][0], acc[0][3][0]}, dst, 4)
		default:
			for r := 0; r < nr; r++ {
				for i := 0; i < nt; i++ {
					hsumZ(acc[r][i][0], Mem{Base: dst, Disp: 16*r + 4*i})
				}
			}
		}
		nextRows(lbl, nr, scaled, w, stride, dst, rows)
	}
	// seq4 (one token, rowsAPass 1): four rows a pass, still one after
	// another as body(1) reads them, their sums reduced, scaled and
	// stored together: a row's own reduction and store were a fifth of
	// its instructions at 2560 columns.
	seq4 := func() {
		lbl := name + "_q4"
		Label(lbl + "_row")
		CMPQ(rows, Imm(4))
		JB(LabelRef(lbl + "_end"))
		fin := make([]reg.VecVirtual, 4)
		for r := range fin {
			rl := fmt.Sprintf("%s_q4r%d", name, r)
			acc := []reg.VecVirtual{ZMM(), ZMM(), ZMM(), ZMM()}
			for _, a := range acc {
				VPXORD(a, a, a)
			}
			p, wc, n := GP64(), GP64(), GP64()
			Load(Param("act"), p)
			LEAQ(rowAddr(w, stride, stride3, r, 0), wc)
			Load(Param("n128"), n)
			block := func(k, set int) {
				v01, v23 := blockCodesZ(Mem{Base: wc, Disp: 32 * k}, m01, m23)
				VPDPBUSD(Mem{Base: p, Disp: 128 * k}, v01, acc[2*set])
				VPDPBUSD(Mem{Base: p, Disp: 128*k + 64}, v23, acc[2*set+1])
			}
			blockPairs(rl, n, p, wc, 2, func() { PREFETCHT0(Mem{Base: wc, Disp: prefetchAheadZ}) }, block)
			foldZ(acc, 2)
			tl := GP64()
			Load(Param("tail"), tl)
			CMPQ(tl, Imm(0))
			JE(LabelRef(rl + "_done"))
			VPDPBUSD(Mem{Base: p}, tailCodesZ(Mem{Base: wc}), acc[0])
			Label(rl + "_done")
			fin[r] = acc[0]
		}
		scaleStore(hsum4Zx(fin), 4, sumv, invv, rs, dst)
		nextRows(lbl, 4, true, w, stride, dst, rows)
	}
	switch {
	case rowsAPass == 4:
		body(4)
	case scaled:
		seq4()
	}
	body(1)
	VZEROUPPER()
	RET()
}

// scaleStore finishes nr (1 or 4) rows of one token from their int32 sums
// in the low lanes of x: (dot - *sum) converted, times rs[r], times *inv
// (sumv and invv hold them broadcast), stored as floats at dst; rs moves
// on past the rows.
func scaleStore(x reg.VecVirtual, nr int, sumv, invv reg.VecVirtual, rs, dst reg.Register) {
	VPSUBD(sumv, x, x)
	VCVTDQ2PS(x, x)
	if nr == 4 {
		VMULPS(Mem{Base: rs}, x, x)
		VMULPS(invv, x, x)
		VMOVUPS(x, Mem{Base: dst})
	} else {
		VMULSS(Mem{Base: rs}, x, x)
		VMULSS(invv, x, x)
		VMOVSS(x, Mem{Base: dst})
	}
	ADDQ(U32(uint32(4*nr)), rs)
}

// blockCodesZ broadcasts a 128-weight block's 32 bytes at m to both halves
// of a ZMM register and masks them into its two pairs of code planes
// (ternaryDotBatchZ's layout note).
func blockCodesZ(m Mem, m01, m23 reg.VecVirtual) (v01, v23 reg.VecVirtual) {
	b := ZMM()
	v01, v23 = ZMM(), ZMM()
	VBROADCASTI64X4(m, b)
	VPANDD(m01, b, v01)
	VPANDD(m23, b, v23)
	return v01, v23
}

// foldZ ends a row's block loop: it adds the odd blocks' set into the even
// one's (sets 2), takes each plane's scale off, and leaves the sum in a[0].
func foldZ(a []reg.VecVirtual, sets int) {
	if sets == 2 {
		VPADDD(a[2], a[0], a[0])
		VPADDD(a[3], a[1], a[1])
	}
	VPSRAVD(zc.cnt01, a[0], a[0])
	VPSRAVD(zc.cnt23, a[1], a[1])
	VPADDD(a[1], a[0], a[0])
}

// tailCodesZ broadcasts a row's 64-weight tail (16 bytes at m) to the four
// 128-bit lanes and unpacks it to unscaled codes.
func tailCodesZ(m Mem) reg.VecVirtual {
	c := ZMM()
	VBROADCASTI32X4(m, c)
	VPSRLVQ(zc.tailShift, c, c)
	VPANDD(zc.mask3, c, c)
	return c
}

// ternaryBatchArgs are a batched ternary kernel's arguments in registers:
// stride3 = 3*stride, as3 = 3*as; as and as3 without scaling, rs, sum and
// inv (addresses) with it.
type ternaryBatchArgs struct {
	w, stride, stride3, as, as3, rs, sum, inv, dst, rows reg.Register
}

// ternaryBatchHeader declares a batched ternary kernel of the VNNI paths
// (suffix "Z": ternaryDotBatchZ, "V": ternaryDotBatchV; isa names it in
// the doc): with one token (scaled) the ternaryVec signature, else
// ternaryDotT's; and loads its arguments.
func ternaryBatchHeader(name string, nt, rowsAPass int, suffix, isa string) (g ternaryBatchArgs) {
	gen := "ternaryDotBatch" + suffix
	scaled := nt == 1
	if scaled {
		TEXT(name, NOSPLIT, "func(w *byte, stride int, act *int8, n128 int, tail int, rs *float32, sum *int32, inv *float32, dst *float32, rows int)")
	} else {
		TEXT(name, NOSPLIT, "func(w *byte, stride int, act *int8, as int, n128 int, tail int, dst *int32, rows int)")
	}
	Pragma("noescape")
	switch {
	case scaled && rowsAPass == 1:
		Doc(fmt.Sprintf("%s writes (code·act - *sum) * rs[r] * *inv for each row, one row after another, with %s; see %s in _gen.", name, isa, gen))
	case scaled:
		Doc(fmt.Sprintf("%s is ternaryVecT1%s taking %d rows a pass while %d remain (short rows); see %s in _gen.", name, suffix, rowsAPass, rowsAPass, gen))
	default:
		Doc(fmt.Sprintf("%s is ternaryDotT%d with %s; see %s in _gen.", name, nt, isa, gen))
	}
	g.w = Load(Param("w"), GP64())
	g.stride = Load(Param("stride"), GP64())
	g.stride3 = GP64()
	LEAQ(Mem{Base: g.stride, Index: g.stride, Scale: 2}, g.stride3)
	if scaled {
		g.rs = Load(Param("rs"), GP64())
		g.sum, g.inv = GP64(), GP64()
		Load(Param("sum"), g.sum)
		Load(Param("inv"), g.inv)
	} else {
		g.as = Load(Param("as"), GP64())
		g.as3 = GP64()
		LEAQ(Mem{Base: g.as, Index: g.as, Scale: 2}, g.as3)
	}
	g.dst = Load(Param("dst"), GP64())
	g.rows = Load(Param("rows"), GP64())
	return g
}

// rowHead opens the row loop of a batched ternary kernel at label lbl_row
// (to lbl_end once fewer than nr rows remain): it zeroes the accumulators
// and loads the activations' address (p), the codes' (wc, from w) and the
// count of 128-weight blocks (n).
func rowHead(lbl string, nr int, rows, w reg.Register, acc []reg.VecVirtual, zero func(reg.VecVirtual)) (p, wc, n reg.Register) {
	Label(lbl + "_row")
	CMPQ(rows, Imm(uint64(nr)))
	JB(LabelRef(lbl + "_end"))
	for _, a := range acc {
		zero(a)
	}
	p, wc, n = GP64(), GP64(), GP64()
	Load(Param("act"), p)
	MOVQ(w, wc)
	Load(Param("n128"), n)
	return p, wc, n
}

// flat lists the registers of a [row or token][...][...] nest in order.
func flat(acc [][][]reg.VecVirtual) []reg.VecVirtual {
	var f []reg.VecVirtual
	for _, a := range acc {
		for _, b := range a {
			f = append(f, b...)
		}
	}
	return f
}

// blockPairs emits the block loop of a batched ternary kernel (the
// AVX-512 and AVX-VNNI ones), from label lbl_b2 to label lbl_sum: two
// 128-weight blocks a pass while two remain (the second into accumulator
// set sets-1), after prefetch; then one. n counts the blocks; p (the
// activations) and wc (the codes) move on with them.
func blockPairs(lbl string, n, p, wc reg.Register, sets int, prefetch func(), block func(k, set int)) {
	Label(lbl + "_b2")
	CMPQ(n, Imm(2))
	JB(LabelRef(lbl + "_b1"))
	prefetch()
	block(0, 0)
	block(1, sets-1)
	ADDQ(U32(256), p)
	ADDQ(U32(64), wc)
	SUBQ(Imm(2), n)
	JMP(LabelRef(lbl + "_b2"))

	Label(lbl + "_b1")
	CMPQ(n, Imm(0))
	JE(LabelRef(lbl + "_sum"))
	block(0, 0)
	ADDQ(U32(128), p)
	ADDQ(U32(32), wc)

	Label(lbl + "_sum")
}

// nextRows ends a pass of a batched ternary kernel over nr rows: w moves
// on nr rows (stride bytes apart) and dst past their results (a float a
// row when scaled, else four int32), rows counts them off, and the kernel
// goes back to lbl_row; lbl_end follows.
func nextRows(lbl string, nr int, scaled bool, w, stride, dst, rows reg.Register) {
	if nr == 4 {
		LEAQ(Mem{Base: w, Index: stride, Scale: 4}, w)
	} else {
		ADDQ(stride, w)
	}
	if scaled {
		ADDQ(U32(uint32(4*nr)), dst)
	} else {
		ADDQ(U32(uint32(16*nr)), dst)
	}
	SUBQ(Imm(uint64(nr)), rows)
	JMP(LabelRef(lbl + "_row"))
	Label(lbl + "_end")
}

// hsum4Z sums the 16 int32 lanes of each of a[0..3] and stores sum r at
// dst+step*r (step 16: the batched kernels' dst[4*row] for four rows; 4:
// dst[4*row+token] for four tokens): unpacks pair the four vectors' lanes
// so that one vector of adds serves all four.
func hsum4Z(a []reg.VecVirtual, dst reg.Register, step int) {
	x := hsum4Zx(a)
	if step == 4 {
		VMOVDQU32(x, Mem{Base: dst})
		return
	}
	VMOVD(x, Mem{Base: dst})
	for r := 1; r < 4; r++ {
		VEXTRACTPS(U8(r), x, Mem{Base: dst, Disp: step * r})
	}
}

// hsum4Zx is hsum4Z's reduction: lane r of the XMM it returns is a[r]'s sum.
func hsum4Zx(a []reg.VecVirtual) reg.VecVirtual {
	lo, hi := ZMM(), ZMM()
	// per 128-bit lane: [a0_0+a0_2, a1_0+a1_2, a0_1+a0_3, a1_1+a1_3]
	VPUNPCKLDQ(a[1], a[0], lo)
	VPUNPCKHDQ(a[1], a[0], hi)
	VPADDD(hi, lo, a[0])
	VPUNPCKLDQ(a[3], a[2], lo)
	VPUNPCKHDQ(a[3], a[2], hi)
	VPADDD(hi, lo, a[2])
	// per 128-bit lane: [sum a0, sum a1, sum a2, sum a3]
	VPUNPCKLQDQ(a[2], a[0], lo)
	VPUNPCKHQDQ(a[2], a[0], hi)
	VPADDD(hi, lo, lo)
	y := YMM()
	VEXTRACTI64X4(U8(1), lo, y)
	VPADDD(y, lo.AsY(), y)
	x := XMM()
	VEXTRACTI32X4(U8(1), y, x)
	VPADDD(x, y.AsX(), x)
	return x
}

// int8DotBatchZ is int8DotBatch with VPDPBUSD, two 32-weight blocks per ZMM
// register: per token, the activations take the weights' signs (a masked
// byte subtraction from zero: VPSIGNB has no EVEX form) and VPDPBUSD sums
// |w|*act by 4 into the 8 dword lanes of each block, exactly the int32
// lanes of int8DotBatch's VPMADDUBSW+VPMADDWD. The lanes are converted
// and multiplied by their block's scale into one 16-lane float
// accumulator a token: its low half takes the even blocks and its high
// half the odd ones, int8DotBatch's two chains, which are added and
// reduced the same way at the end, so each result equals the AVX2
// kernel's bit for bit. nblk (32-blocks) is even: rows are multiples of
// 64.
//
// With nib, the q4 twin (q4DotT*h32Z): a pair of blocks' 32 nibble bytes
// (see nibbles in main.go) fill both halves of a register, the high half
// shifted by 4, and the masked nibbles multiply the activations unsigned,
// each token's lane biases starting its sums: the int32 lanes of the int8
// kernels. Its four chains a token (q4Chains) are two accumulators, the
// pairs of a block quad taking one each; they add before the halves do,
// as (0+2) + (1+3).
//
// Rows go one at a time, so a core reads its rows as one sequential run:
// two rows a pass (two FMA chains, but two runs of values and two of
// scales) streamed a third slower from memory on the Zen 5 VM
// (docs/cpu-notes.md). Blocks go four at a time (one load and one
// conversion for four float16 scales) while four remain, then one pair.
func int8DotBatchZ(nt int, half, nib, vec bool, rowsAPass int) {
	name := fmt.Sprintf("int8DotT%dg32Z", nt)
	scType, scSize := "float32", 4
	if half {
		name = fmt.Sprintf("int8DotT%dh32Z", nt)
		scType, scSize = "uint16", 2
	}
	if vec { // nt 1, half
		name = "int8DotV1h32Z"
	}
	wBytes := 32 // weight bytes a block
	if nib {
		name = "q4" + name[len("int8"):]
		wBytes = 16
	}
	doc := fmt.Sprintf("%s is %s with AVX-512 VNNI, the same results bit for bit; see int8DotBatchZ in _gen.", name, name[:len(name)-1])
	if rowsAPass > 1 {
		if !nib || !vec {
			panic("int8DotBatchZ: several rows a pass only for one token of 4-bit rows")
		}
		doc = fmt.Sprintf("%sS%dZ is %s taking %d rows a pass (short rows), the same results bit for bit; see int8DotBatchZ in _gen.", name[:len(name)-1], rowsAPass, name, rowsAPass)
		name = fmt.Sprintf("%sS%dZ", name[:len(name)-1], rowsAPass)
	}
	w, stride, sc, sstride, as, as3, dst, rows, ib := int8Header(name, scType, doc, nib, vec)
	zero := ZMM()
	VPXORD(zero, zero, zero)
	var nibShift, mask0f reg.VecVirtual // q4: in registers, off the load ports
	if nib {
		nibShift, mask0f = ZMM(), ZMM()
		VMOVDQU64(zc.nibShift, nibShift)
		VMOVDQU64(zc.mask0f, mask0f)
	}
	// VPERMPS indices spreading scales 0 and 1 (and 2 and 3) of a block
	// quad over the low and high halves of a ZMM register
	var idx [2]reg.VecVirtual
	for k := range idx {
		lo, hi := broadcastConst(uint32(2*k)), broadcastConst(uint32(2*k+1))
		idx[k] = ZMM()
		VINSERTI64X4(U8(1), hi, lo.AsZ(), idx[k])
	}

	// rowsPass emits the loop over nr rows a pass (at label name_r<nr>,
	// on to name_r<nr>_end once fewer than nr rows remain). With nr 2
	// (one token, q4) the two rows' blocks share each load of the
	// activations and biases, and the row overhead halves.
	rowsPass := func(nr int) {
		lbl := fmt.Sprintf("%s_r%d", name, nr)
		Label(lbl + "_row")
		CMPQ(rows, Imm(uint64(nr)))
		JB(LabelRef(lbl + "_end"))
		// acc[r][i], acc2[r][i]: row r, token i (acc2: the q4 kernels'
		// second accumulator, the odd pairs)
		acc := make([][]reg.VecVirtual, nr)
		acc2 := make([][]reg.VecVirtual, nr)
		for r := range acc {
			for range nt {
				a := ZMM()
				VPXORD(a, a, a)
				acc[r] = append(acc[r], a)
				if nib {
					a2 := ZMM()
					VPXORD(a2, a2, a2)
					acc2[r] = append(acc2[r], a2)
				}
			}
		}
		p, wc, scc, n := GP64(), GP64(), GP64(), GP64()
		Load(Param("act"), p)
		var pb reg.Register // the lane biases (nib)
		if nib {
			pb = GP64()
			Load(Param("bias"), pb)
		}
		MOVQ(w, wc)
		MOVQ(sc, scc)
		Load(Param("nblk"), n)
		// row r's weights and scales (r < 2)
		wAt := func(r, disp int) Mem { return rowAddr(wc, stride, nil, r, disp) }
		sAt := func(r int) Mem { return rowAddr(scc, sstride, nil, r, 0) }

		// nb blocks (nb*32 weights) of the rows, a pair to a ZMM register
		byFour(lbl, n, func(nb int) {
			np := nb / 2
			// h[r]: row r's 2*np scales in its low lanes
			h := make([]reg.VecVirtual, nr)
			for r := range h {
				h[r] = ZMM()
				sm := sAt(r)
				switch {
				case half && np == 2:
					VPBROADCASTQ(sm, h[r].AsX())
					VCVTPH2PS(h[r].AsX(), h[r].AsY())
				case half:
					VPBROADCASTD(sm, h[r].AsX())
					VCVTPH2PS(h[r].AsX(), h[r].AsY())
				case np == 2:
					VMOVUPS(sm, h[r].AsX())
				default:
					VMOVQ(sm, h[r].AsX())
				}
			}
			for pr := 0; pr < np; pr++ {
				for r := range nr {
					if (2*wBytes*pr)%64 == 0 {
						PREFETCHT0(wAt(r, prefetchAheadZ+2*wBytes*pr))
					}
				}
				if nib {
					// the activations and biases once for the rows
					var t, bb reg.VecVirtual
					if nr > 1 {
						t, bb = ZMM(), ZMM()
						VMOVDQU64(tokAddr(p, as, as3, 0, 64*pr), t)
						VMOVDQU64(tokAddr(pb, as, as3, 0, 64*pr), bb)
					}
					for r := range nr {
						f := ZMM() // the pair's scales, each over its block's 8 lanes
						VPERMPS(h[r], idx[pr], f)
						u := ZMM()
						VBROADCASTI64X4(wAt(r, 32*pr), u)
						VPSRLVD(nibShift, u, u)
						VPANDD(mask0f, u, u)
						for i := 0; i < nt; i++ {
							d := ZMM()
							if nr > 1 {
								VMOVDQA64(bb, d)
								VPDPBUSD(t, u, d)
							} else {
								VMOVDQU64(tokAddr(pb, as, as3, i, 64*pr), d)
								VPDPBUSD(tokAddr(p, as, as3, i, 64*pr), u, d)
							}
							VCVTDQ2PS(d, d)
							a := acc[r][i]
							if pr == 1 {
								a = acc2[r][i]
							}
							VFMADD231PS(f, d, a)
						}
					}
					continue
				}
				f := ZMM() // the pair's scales, each over its block's 8 lanes
				VPERMPS(h[0], idx[pr], f)
				wv, aw, k := ZMM(), ZMM(), K()
				VMOVDQU64(wAt(0, 64*pr), wv)
				VPABSB(wv, aw)
				VPMOVB2M(wv, k)
				for i := 0; i < nt; i++ {
					t, d := ZMM(), ZMM()
					VMOVDQU64(tokAddr(p, as, as3, i, 64*pr), t)
					VPSUBB(t, zero, k, t) // t = -t where w < 0
					VPXORD(d, d, d)
					VPDPBUSD(t, aw, d)
					VCVTDQ2PS(d, d)
					VFMADD231PS(f, d, acc[0][i])
				}
			}
			ADDQ(U32(uint32(64*np)), p)
			if nib {
				ADDQ(U32(uint32(64*np)), pb)
			}
			ADDQ(U32(uint32(2*wBytes*np)), wc)
			ADDQ(Imm(uint64(2*np*scSize)), scc)
			SUBQ(Imm(uint64(2*np)), n)
		})
		for r := range nr {
			for i := 0; i < nt; i++ {
				if nib {
					VADDPS(acc2[r][i], acc[r][i], acc[r][i])
				}
				hi := YMM()
				VEXTRACTF64X4(U8(1), acc[r][i], hi)
				VADDPS(hi, acc[r][i].AsY(), hi)
				if vec {
					x := reduce1fZx(hi)
					VMULSS(ib, x, x)
					VMOVSS(x, Mem{Base: dst, Disp: 4 * r})
					continue
				}
				reduce1fZ(hi, Mem{Base: dst, Disp: 4 * i})
			}
		}
		for range nr {
			ADDQ(stride, w)
			ADDQ(sstride, sc)
		}
		if vec {
			ADDQ(U32(uint32(4*nr)), dst)
		} else {
			ADDQ(U32(16), dst)
		}
		SUBQ(Imm(uint64(nr)), rows)
		JMP(LabelRef(lbl + "_row"))
		Label(lbl + "_end")
	}
	if rowsAPass > 1 {
		rowsPass(rowsAPass)
	}
	rowsPass(1)
	VZEROUPPER()
	RET()
}
