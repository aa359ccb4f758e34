// Command _gen writes the AVX2 assembly of package
// github.com/edgellm/edgellm/backend/cpu/kernels with avo. It is its own
// module so that avo never enters the library's dependencies.
//
// Regenerate from this directory with:
//
//	go run . -out ../backend/cpu/kernels/kernels_amd64.s -stubs ../backend/cpu/kernels/kernels_amd64.go -pkg kernels
//
// The packed layouts the kernels read are described in the kernels package
// (ternary.go, int8mat.go, f16mat.go); keep the two in step.
package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// prefetchAhead is how far ahead in each row the streaming kernels prefetch
// (for the int8 and F16 kernels 2 and 4 KiB measured alike).
const prefetchAhead = 4096

func main() {
	ConstraintExpr("amd64,!noasm")

	// Measured on Zen 3 from DRAM: unroll 8 beat 1, 2 and 4, and a software
	// prefetch 4 KiB ahead in every row beat none, 0.5, 1, 2 and 8 KiB
	// (about 6 -> 9.5-10.5 GB/s per CPU second on a shared machine, then
	// 10.5-12 with two rows and activations in registers).
	ternaryDot("ternaryDot2", 2, 8, prefetchAhead)
	ternaryDot("ternaryDot1", 1, 8, prefetchAhead)
	ternaryBlockDots()
	// Two rows a group streamed ~12% faster than four from DRAM (Zen 3).
	int8Dot(2, 32, false)
	int8Dot(1, 32, false)
	int8Dot(2, 16, false)
	int8Dot(1, 16, false)
	int8Dot(2, 32, true)
	int8Dot(1, 32, true)
	f16Dot(4)
	f16Dot(1)
	absMax()
	quantI8()
	tlTiles()

	Generate()
}

// broadcastConst puts a 32-bit pattern in every dword of a new YMM register.
func broadcastConst(v uint32) reg.VecVirtual {
	g := GP32()
	MOVL(U32(v), g)
	y := YMM()
	VMOVD(g, y.AsX())
	VPBROADCASTD(y.AsX(), y)
	return y
}

// reduce4 sums the eight int32 (or float32 with fl) lanes of each of four
// accumulators and stores the four sums at dst.
func reduce4(acc []reg.VecVirtual, dst Mem, fl bool) {
	hadd := VPHADDD
	add := VPADDD
	if fl {
		hadd = VHADDPS
		add = VADDPS
	}
	hadd(acc[1], acc[0], acc[0])
	hadd(acc[3], acc[2], acc[2])
	hadd(acc[2], acc[0], acc[0])
	t := XMM()
	VEXTRACTI128(U8(1), acc[0], t)
	add(t, acc[0].AsX(), t)
	VMOVDQU(t, dst)
}

// reduce1 sums the eight lanes of acc and stores the sum at dst.
func reduce1(acc reg.VecVirtual, dst Mem, fl bool) {
	add := VPADDD
	if fl {
		add = VADDPS
	}
	t := XMM()
	VEXTRACTI128(U8(1), acc, t)
	add(t, acc.AsX(), t)
	u := XMM()
	VPSHUFD(U8(0x4e), t, u)
	add(u, t, t)
	VPSHUFD(U8(0xb1), t, u)
	add(u, t, t)
	if fl {
		VMOVSS(t, dst)
	} else {
		VMOVD(t, dst)
	}
}

// rowAddr returns the address of row r (0..3) of a group at base+off, rows
// stride bytes apart (stride3 = 3*stride).
func rowAddr(base, stride, stride3 reg.Register, r int, disp int) Mem {
	switch r {
	case 0:
		return Mem{Base: base, Disp: disp}
	case 1:
		return Mem{Base: base, Index: stride, Scale: 1, Disp: disp}
	case 2:
		return Mem{Base: base, Index: stride, Scale: 2, Disp: disp}
	default:
		return Mem{Base: base, Index: stride3, Scale: 1, Disp: disp}
	}
}

// ternaryDot writes, for each of groups*nr rows (nr 1 or 2), the int32 sum
// of code*act over the row, codes packed 2 bits each: per 128 weights 32
// bytes, byte m holding weights m, m+32, m+64, m+96 at bit shifts 0, 2, 4,
// 6; a final 64-weight tail (tail != 0) in 16 bytes, byte m holding m,
// m+16, m+32, m+48.
//
// Per 32 codes: a mask (and one shift by 4 per byte of 4 codes), then
// VPMADDUBSW (codes unsigned, activations signed) into int16 lanes. Codes 1
// and 3 of a byte are taken in place (mask 0x0C: code*4) to save shifts;
// their sums, exact multiples of 4, are divided back with an arithmetic
// shift. The int16 lanes add up unroll 128-blocks before one VPMADDWD
// widens them: at most 8, since the x4 sums reach 4064 a block per lane
// with activations in [-127, 127].
//
// The four activation vectors of a block sit in registers, shared by the
// rows of a group; with two rows the 16 YMM registers are exactly enough.
// Two rows with register activations streamed from DRAM ~25% faster than
// four rows with activations as memory operands (Zen 3). prefetch > 0
// issues PREFETCHT0 that many bytes ahead in each row, once per line.
func ternaryDot(name string, nr, unroll, prefetch int) {
	if unroll > 8 || nr < 1 || nr > 2 {
		panic("ternaryDot: unroll at most 8 (int16 sums), 1 or 2 rows")
	}
	TEXT(name, NOSPLIT, "func(w *byte, stride int, act *int8, n128 int, tail int, dst *int32, groups int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s writes the code·act dot of %d rows per group; see ternaryDot in _gen.", name, nr))
	w := Load(Param("w"), GP64())
	stride := Load(Param("stride"), GP64())
	dst := Load(Param("dst"), GP64())
	groups := Load(Param("groups"), GP64())

	mask := broadcastConst(0x03030303)
	maskC := broadcastConst(0x0c0c0c0c)
	ones := broadcastConst(0x00010001)
	acc := make([]reg.VecVirtual, nr)
	sA := make([]reg.VecVirtual, nr)
	sB := make([]reg.VecVirtual, nr)
	for i := 0; i < nr; i++ {
		acc[i], sA[i], sB[i] = YMM(), YMM(), YMM()
	}
	a := []reg.VecVirtual{YMM(), YMM(), YMM(), YMM()}
	wv, hv, t := YMM(), YMM(), YMM()

	Label(name + "_group")
	CMPQ(groups, Imm(0))
	JE(LabelRef(name + "_done"))
	for i := range acc {
		VPXOR(acc[i], acc[i], acc[i])
	}
	p, wc, n := GP64(), GP64(), GP64()
	Load(Param("act"), p)
	MOVQ(w, wc)
	Load(Param("n128"), n)

	rowMem := func(r, disp int) Mem {
		if r == 0 {
			return Mem{Base: wc, Disp: disp}
		}
		return Mem{Base: wc, Index: stride, Scale: 1, Disp: disp}
	}
	// u 128-blocks (or, with x, the 64-weight tail) of every row of the
	// group, summed in int16 and then widened into acc.
	blocks := func(u int, x bool) {
		pick := func(v reg.VecVirtual) reg.Register {
			if x {
				return v.AsX()
			}
			return v
		}
		for k := 0; k < u; k++ {
			for l := 0; l < 4; l++ {
				if x {
					VMOVDQU(Mem{Base: p, Disp: 16 * l}, a[l].AsX())
				} else {
					VMOVDQU(Mem{Base: p, Disp: 128*k + 32*l}, a[l])
				}
			}
			for r := 0; r < nr; r++ {
				VMOVDQU(rowMem(r, 32*k), pick(wv))
				VPSRLW(U8(4), pick(wv), pick(hv))
				for l := 0; l < 4; l++ {
					src, m, d := wv, mask, sA[r]
					if l >= 2 {
						src = hv
					}
					if l%2 == 1 {
						m, d = maskC, sB[r]
					}
					VPAND(pick(m), pick(src), pick(t))
					if k == 0 && l < 2 {
						VPMADDUBSW(pick(a[l]), pick(t), pick(d))
						continue
					}
					VPMADDUBSW(pick(a[l]), pick(t), pick(t))
					VPADDW(pick(t), pick(d), pick(d))
				}
			}
		}
		for r := 0; r < nr; r++ {
			VPSRAW(U8(2), pick(sB[r]), pick(sB[r]))
			VPADDW(pick(sB[r]), pick(sA[r]), pick(sA[r]))
			VPMADDWD(pick(ones), pick(sA[r]), pick(sA[r]))
			// a VEX.128 op cleared the upper lane, so the full add is right
			VPADDD(sA[r], acc[r], acc[r])
		}
	}

	Label(name + "_blockU")
	CMPQ(n, Imm(uint64(unroll)))
	JB(LabelRef(name + "_block"))
	for r := 0; r < nr; r++ {
		for k := 0; prefetch > 0 && k < (32*unroll+63)/64; k++ {
			PREFETCHT0(rowMem(r, prefetch+64*k))
		}
	}
	blocks(unroll, false)
	ADDQ(U32(uint32(128*unroll)), p)
	ADDQ(U32(uint32(32*unroll)), wc)
	SUBQ(Imm(uint64(unroll)), n)
	JMP(LabelRef(name + "_blockU"))

	Label(name + "_block")
	CMPQ(n, Imm(0))
	JE(LabelRef(name + "_tail"))
	blocks(1, false)
	ADDQ(U32(128), p)
	ADDQ(Imm(32), wc)
	DECQ(n)
	JMP(LabelRef(name + "_block"))

	Label(name + "_tail")
	tl := GP64()
	Load(Param("tail"), tl)
	CMPQ(tl, Imm(0))
	JE(LabelRef(name + "_reduce"))
	blocks(1, true)

	Label(name + "_reduce")
	if nr == 2 {
		VPHADDD(acc[1], acc[0], acc[0]) // a01 a23 b01 b23 | a45 a67 b45 b67
		x := XMM()
		VEXTRACTI128(U8(1), acc[0], x)
		VPADDD(x, acc[0].AsX(), x)
		VPHADDD(x, x, x) // a b a b
		VMOVQ(x, Mem{Base: dst})
		LEAQ(Mem{Base: w, Index: stride, Scale: 2}, w)
	} else {
		reduce1(acc[0], Mem{Base: dst}, false)
		ADDQ(stride, w)
	}
	ADDQ(Imm(uint64(4*nr)), dst)
	DECQ(groups)
	JMP(LabelRef(name + "_group"))

	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// ternaryBlockDots writes the code·act dot of each 64-weight block of one
// row (layout as ternaryDot), for rows with per-block scales.
func ternaryBlockDots() {
	TEXT("ternaryBlockDots", NOSPLIT, "func(w *byte, act *int8, n128 int, tail int, dst *int32)")
	Pragma("noescape")
	Doc("ternaryBlockDots writes the code·act dot of every 64-weight block of one row.")
	w := Load(Param("w"), GP64())
	act := Load(Param("act"), GP64())
	n := Load(Param("n128"), GP64())
	tail := Load(Param("tail"), GP64())
	dst := Load(Param("dst"), GP64())
	mask := broadcastConst(0x03030303)
	ones := broadcastConst(0x00010001)
	wv, t, s0, s1 := YMM(), YMM(), YMM(), YMM()

	Label("tbd_block")
	CMPQ(n, Imm(0))
	JE(LabelRef("tbd_tail"))
	VMOVDQU(Mem{Base: w}, wv)
	// lanes l=0,1 are elements 0..63 of the 128 (block 2k), l=2,3 block 2k+1
	VPAND(mask, wv, t)
	VPMADDUBSW(Mem{Base: act}, t, s0)
	VPSRLW(U8(2), wv, t)
	VPAND(mask, t, t)
	VPMADDUBSW(Mem{Base: act, Disp: 32}, t, t)
	VPADDW(t, s0, s0)
	VPSRLW(U8(4), wv, t)
	VPAND(mask, t, t)
	VPMADDUBSW(Mem{Base: act, Disp: 64}, t, s1)
	VPSRLW(U8(6), wv, t)
	VPAND(mask, t, t)
	VPMADDUBSW(Mem{Base: act, Disp: 96}, t, t)
	VPADDW(t, s1, s1)
	VPMADDWD(ones, s0, s0)
	VPMADDWD(ones, s1, s1)
	VPHADDD(s1, s0, s0) // a01 a23 b01 b23 | a45 a67 b45 b67
	x := XMM()
	VEXTRACTI128(U8(1), s0, x)
	VPADDD(x, s0.AsX(), x)
	VPHADDD(x, x, x) // a b a b
	VMOVQ(x, Mem{Base: dst})
	ADDQ(Imm(32), w)
	ADDQ(Imm(128), act)
	ADDQ(Imm(8), dst)
	DECQ(n)
	JMP(LabelRef("tbd_block"))

	Label("tbd_tail")
	CMPQ(tail, Imm(0))
	JE(LabelRef("tbd_done"))
	VMOVDQU(Mem{Base: w}, wv.AsX())
	for l := 0; l < 4; l++ {
		if l == 0 {
			VPAND(mask.AsX(), wv.AsX(), t.AsX())
			VPMADDUBSW(Mem{Base: act}, t.AsX(), s0.AsX())
			continue
		}
		VPSRLW(U8(2*l), wv.AsX(), t.AsX())
		VPAND(mask.AsX(), t.AsX(), t.AsX())
		VPMADDUBSW(Mem{Base: act, Disp: 16 * l}, t.AsX(), t.AsX())
		VPADDW(t.AsX(), s0.AsX(), s0.AsX())
	}
	VPMADDWD(ones.AsX(), s0.AsX(), s0.AsX())
	reduce1(s0, Mem{Base: dst}, false)

	Label("tbd_done")
	VZEROUPPER()
	RET()
}

// int8Dot writes, for each of groups*nr rows of int8 weights with one
// float32 scale per `group` weights (32 or 16), sum over blocks of
// scale * (int8 w · int8 act). act must lie in [-127, 127].
//
// With half, the scales are float16 (Q8_0's and Q4_0's own, kept as they
// are: 0.5 bit per weight less to stream than float32).
func int8Dot(nr, group int, half bool) {
	name := fmt.Sprintf("int8Dot%dg%d", nr, group)
	scType := "float32"
	if half {
		name = fmt.Sprintf("int8Dot%dh%d", nr, group)
		scType = "uint16"
	}
	TEXT(name, NOSPLIT, "func(w *int8, stride int, sc *"+scType+", sstride int, act *int8, nblk int, dst *float32, groups int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s writes the scaled int8 dot of %d rows per group, one scale per %d weights; nblk counts 32-weight blocks.", name, nr, group))
	w := Load(Param("w"), GP64())
	stride := Load(Param("stride"), GP64())
	sc := Load(Param("sc"), GP64())
	sstride := Load(Param("sstride"), GP64())
	dst := Load(Param("dst"), GP64())
	groups := Load(Param("groups"), GP64())
	stride3, sstride3 := GP64(), GP64()
	LEAQ(Mem{Base: stride, Index: stride, Scale: 2}, stride3)
	LEAQ(Mem{Base: sstride, Index: sstride, Scale: 2}, sstride3)
	ones := broadcastConst(0x00010001)
	var perm reg.VecVirtual
	if group == 16 {
		// spreads two scales over the lanes vpmaddwd fills from each half
		perm = YMM()
		g := GP64()
		MOVQ(U64(0x0000000000000000), g)
		VMOVQ(g, perm.AsX())
		MOVQ(U64(0x0000000100000001), g)
		x := XMM()
		VMOVQ(g, x)
		VPUNPCKLQDQ(perm.AsX(), perm.AsX(), perm.AsX())
		VPUNPCKLQDQ(x, x, x)
		VINSERTI128(U8(1), x, perm, perm)
	}

	acc := make([]reg.VecVirtual, nr)
	for i := range acc {
		acc[i] = YMM()
	}
	a, aw, sa, t, f := YMM(), YMM(), YMM(), YMM(), YMM()

	Label(name + "_group")
	CMPQ(groups, Imm(0))
	JE(LabelRef(name + "_done"))
	for i := range acc {
		VXORPS(acc[i], acc[i], acc[i])
	}
	p, wc, scc, n := GP64(), GP64(), GP64(), GP64()
	Load(Param("act"), p)
	MOVQ(w, wc)
	MOVQ(sc, scc)
	Load(Param("nblk"), n)

	Label(name + "_block")
	CMPQ(n, Imm(0))
	JE(LabelRef(name + "_reduce"))
	VMOVDQU(Mem{Base: p}, a)
	for r := 0; r < nr; r++ {
		// every line twice (32 bytes a step): cheap, and simpler than
		// prefetching on alternate steps
		PREFETCHT0(rowAddr(wc, stride, stride3, r, prefetchAhead))
		VMOVDQU(rowAddr(wc, stride, stride3, r, 0), t)
		VPABSB(t, aw)
		VPSIGNB(t, a, sa)
		VPMADDUBSW(sa, aw, t)
		VPMADDWD(ones, t, t)
		VCVTDQ2PS(t, t)
		if half {
			VPBROADCASTW(rowAddr(scc, sstride, sstride3, r, 0), f.AsX())
			VCVTPH2PS(f.AsX(), f)
		} else if group == 32 {
			VBROADCASTSS(rowAddr(scc, sstride, sstride3, r, 0), f)
		} else {
			VMOVQ(rowAddr(scc, sstride, sstride3, r, 0), f.AsX())
			VPERMPS(f, perm, f)
		}
		VFMADD231PS(f, t, acc[r])
	}
	ADDQ(Imm(32), p)
	ADDQ(Imm(32), wc)
	if half {
		ADDQ(Imm(2), scc)
	} else {
		ADDQ(Imm(uint64(4*32/group)), scc)
	}
	DECQ(n)
	JMP(LabelRef(name + "_block"))

	Label(name + "_reduce")
	if nr == 4 {
		reduce4(acc, Mem{Base: dst}, true)
		LEAQ(Mem{Base: w, Index: stride, Scale: 4}, w)
		LEAQ(Mem{Base: sc, Index: sstride, Scale: 4}, sc)
	} else if nr == 2 {
		VHADDPS(acc[1], acc[0], acc[0])
		x := XMM()
		VEXTRACTF128(U8(1), acc[0], x)
		VADDPS(x, acc[0].AsX(), x)
		VHADDPS(x, x, x)
		VMOVQ(x, Mem{Base: dst})
		LEAQ(Mem{Base: w, Index: stride, Scale: 2}, w)
		LEAQ(Mem{Base: sc, Index: sstride, Scale: 2}, sc)
	} else {
		reduce1(acc[0], Mem{Base: dst}, true)
		ADDQ(stride, w)
		ADDQ(sstride, sc)
	}
	ADDQ(Imm(uint64(4*nr)), dst)
	DECQ(groups)
	JMP(LabelRef(name + "_group"))

	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// f16Dot writes, for each of groups*nr rows of float16 weights, the float32
// dot with x over n chunks of 16 elements.
func f16Dot(nr int) {
	name := fmt.Sprintf("f16Dot%d", nr)
	TEXT(name, NOSPLIT, "func(w *uint16, stride int, x *float32, n int, dst *float32, groups int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s writes the float16·float32 dot of %d rows per group over n chunks of 16.", name, nr))
	w := Load(Param("w"), GP64())
	stride := Load(Param("stride"), GP64())
	x := Load(Param("x"), GP64())
	nchunk := Load(Param("n"), GP64())
	dst := Load(Param("dst"), GP64())
	groups := Load(Param("groups"), GP64())
	stride3 := GP64()
	LEAQ(Mem{Base: stride, Index: stride, Scale: 2}, stride3)

	// two accumulators per row hide the FMA latency
	acc := make([]reg.VecVirtual, 2*nr)
	for i := range acc {
		acc[i] = YMM()
	}
	x0, x1, t := YMM(), YMM(), YMM()

	Label(name + "_group")
	CMPQ(groups, Imm(0))
	JE(LabelRef(name + "_done"))
	for i := range acc {
		VXORPS(acc[i], acc[i], acc[i])
	}
	p, wc, n := GP64(), GP64(), GP64()
	MOVQ(x, p)
	MOVQ(w, wc)
	MOVQ(nchunk, n)

	Label(name + "_chunk")
	CMPQ(n, Imm(0))
	JE(LabelRef(name + "_reduce"))
	VMOVUPS(Mem{Base: p}, x0)
	VMOVUPS(Mem{Base: p, Disp: 32}, x1)
	for r := 0; r < nr; r++ {
		PREFETCHT0(rowAddr(wc, stride, stride3, r, prefetchAhead))
		VCVTPH2PS(rowAddr(wc, stride, stride3, r, 0), t)
		VFMADD231PS(x0, t, acc[2*r])
		VCVTPH2PS(rowAddr(wc, stride, stride3, r, 16), t)
		VFMADD231PS(x1, t, acc[2*r+1])
	}
	ADDQ(Imm(64), p)
	ADDQ(Imm(32), wc)
	DECQ(n)
	JMP(LabelRef(name + "_chunk"))

	Label(name + "_reduce")
	for r := 0; r < nr; r++ {
		VADDPS(acc[2*r+1], acc[2*r], acc[2*r])
	}
	if nr == 4 {
		reduce4([]reg.VecVirtual{acc[0], acc[2], acc[4], acc[6]}, Mem{Base: dst}, true)
		LEAQ(Mem{Base: w, Index: stride, Scale: 4}, w)
	} else {
		reduce1(acc[0], Mem{Base: dst}, true)
		ADDQ(stride, w)
	}
	ADDQ(Imm(uint64(4*nr)), dst)
	DECQ(groups)
	JMP(LabelRef(name + "_group"))

	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// absMax returns max |x[i]| over n (a multiple of 32) floats, and nan != 0
// when some x[i] is NaN (VMAXPS would skip it silently).
func absMax() {
	TEXT("absMax", NOSPLIT, "func(x *float32, n int) (m float32, nan int)")
	Pragma("noescape")
	Doc("absMax returns max |x[i]| of n (a multiple of 32) floats and whether one is NaN.")
	x := Load(Param("x"), GP64())
	n := Load(Param("n"), GP64())
	abs := broadcastConst(0x7fffffff)
	acc := []reg.VecVirtual{YMM(), YMM()}
	bad, v, t := YMM(), YMM(), YMM()
	VXORPS(acc[0], acc[0], acc[0])
	VXORPS(acc[1], acc[1], acc[1])
	VXORPS(bad, bad, bad)
	Label("am_loop")
	CMPQ(n, Imm(0))
	JE(LabelRef("am_done"))
	for k := 0; k < 4; k++ {
		VANDPS(Mem{Base: x, Disp: 32 * k}, abs, v)
		VCMPPS(U8(3), v, v, t) // unordered: NaN
		VORPS(t, bad, bad)
		VMAXPS(acc[k%2], v, acc[k%2])
	}
	ADDQ(Imm(128), x)
	SUBQ(Imm(32), n)
	JMP(LabelRef("am_loop"))
	Label("am_done")
	VMAXPS(acc[1], acc[0], acc[0])
	h := XMM()
	VEXTRACTF128(U8(1), acc[0], h)
	VMAXPS(h, acc[0].AsX(), h)
	u := XMM()
	VPSHUFD(U8(0x4e), h, u)
	VMAXPS(u, h, h)
	VPSHUFD(U8(0xb1), h, u)
	VMAXPS(u, h, h)
	Store(h, ReturnIndex(0))
	rq := GP64()
	VMOVMSKPS(bad, rq.As32())
	Store(rq, ReturnIndex(1))
	VZEROUPPER()
	RET()
}

// quantI8 writes q[i] = round-half-even(x[i]*scale) for n (a multiple of
// 64) floats whose products lie in [-127, 127], and each 64's sum of q to
// bsum.
func quantI8() {
	TEXT("quantI8", NOSPLIT, "func(x *float32, n int, scale float32, q *int8, bsum *int32)")
	Pragma("noescape")
	Doc("quantI8 rounds x*scale to int8 (half to even) and writes each 64's sum.")
	x := Load(Param("x"), GP64())
	n := Load(Param("n"), GP64())
	q := Load(Param("q"), GP64())
	bs := Load(Param("bsum"), GP64())
	sc := YMM()
	scx := Load(Param("scale"), XMM())
	VBROADCASTSS(scx, sc)
	// packs interleave the lanes; this puts the dwords back in order
	idx := YMM()
	g := GP64()
	MOVQ(U64(0x0000000400000000), g)
	VMOVQ(g, idx.AsX())
	t := XMM()
	MOVQ(U64(0x0000000500000001), g)
	VMOVQ(g, t)
	VPUNPCKLQDQ(t, idx.AsX(), idx.AsX())
	t2 := XMM()
	MOVQ(U64(0x0000000600000002), g)
	VMOVQ(g, t2)
	MOVQ(U64(0x0000000700000003), g)
	VMOVQ(g, t)
	VPUNPCKLQDQ(t, t2, t2)
	VINSERTI128(U8(1), t2, idx, idx)

	iv := make([]reg.VecVirtual, 8)
	for i := range iv {
		iv[i] = YMM()
	}
	Label("qi_loop")
	CMPQ(n, Imm(0))
	JE(LabelRef("qi_done"))
	for i := range iv {
		VMULPS(Mem{Base: x, Disp: 32 * i}, sc, iv[i])
		VCVTPS2DQ(iv[i], iv[i]) // MXCSR's default: nearest, ties to even
	}
	s := YMM()
	VPADDD(iv[1], iv[0], s)
	for i := 2; i < 8; i++ {
		VPADDD(iv[i], s, s)
	}
	for h := 0; h < 2; h++ {
		a, b, c, d := iv[4*h], iv[4*h+1], iv[4*h+2], iv[4*h+3]
		VPACKSSDW(b, a, a)
		VPACKSSDW(d, c, c)
		VPACKSSWB(c, a, a)
		VPERMD(a, idx, a)
		VMOVDQU(a, Mem{Base: q, Disp: 32 * h})
	}
	reduce1(s, Mem{Base: bs}, false)
	ADDQ(U32(256), x)
	ADDQ(Imm(64), q)
	ADDQ(Imm(4), bs)
	SUBQ(Imm(64), n)
	JMP(LabelRef("qi_loop"))
	Label("qi_done")
	VZEROUPPER()
	RET()
}

// tlTiles computes, for tiles of 32 rows in LayoutTL, the signed dots
// sum(w*q) of each row by table lookup: per column couple j (4 columns), 32
// bytes, byte r holding row r's pair indices (w0+1)+3(w1+1) for pairs 2j
// (low nibble) and 2j+1 (high nibble); per pair 32 table bytes, the low
// then the high bytes of the 16 int16 sums w0*q0+w1*q1. VPSHUFB looks up 32
// rows at once; the two byte halves interleave back to int16, which take 64
// couples (|sum| <= 508 per couple) before widening to int32.
func tlTiles() {
	TEXT("tlTiles", NOSPLIT, "func(w *byte, tbl *byte, ncouple int, dst *int32, tiles int)")
	Pragma("noescape")
	Doc("tlTiles writes the table-lookup dots of tiles of 32 rows (LayoutTL).")
	w := Load(Param("w"), GP64())
	dst := Load(Param("dst"), GP64())
	tiles := Load(Param("tiles"), GP64())
	mask := broadcastConst(0x0f0f0f0f)
	a32 := []reg.VecVirtual{YMM(), YMM(), YMM(), YMM()}
	accA, accB := YMM(), YMM()
	v, i0, i1, tb, l, h := YMM(), YMM(), YMM(), YMM(), YMM(), YMM()

	Label("tl_tile")
	CMPQ(tiles, Imm(0))
	JE(LabelRef("tl_done"))
	for _, a := range a32 {
		VPXOR(a, a, a)
	}
	tp, rem, c := GP64(), GP64(), GP64()
	Load(Param("tbl"), tp)
	Load(Param("ncouple"), rem)

	Label("tl_chunk")
	CMPQ(rem, Imm(0))
	JE(LabelRef("tl_store"))
	VPXOR(accA, accA, accA)
	VPXOR(accB, accB, accB)
	MOVQ(rem, c)
	CMPQ(c, Imm(64))
	JBE(LabelRef("tl_min"))
	MOVQ(U32(64), c)
	Label("tl_min")
	SUBQ(c, rem)

	Label("tl_couple")
	VMOVDQU(Mem{Base: w}, v)
	VPAND(mask, v, i0)
	VPSRLW(U8(4), v, i1)
	VPAND(mask, i1, i1)
	for k, idx := range []reg.VecVirtual{i0, i1} {
		VBROADCASTI128(Mem{Base: tp, Disp: 32 * k}, tb)
		VPSHUFB(idx, tb, l)
		VBROADCASTI128(Mem{Base: tp, Disp: 32*k + 16}, tb)
		VPSHUFB(idx, tb, h)
		VPUNPCKLBW(h, l, v) // rows 0-7 | 16-23
		VPADDW(v, accA, accA)
		VPUNPCKHBW(h, l, v) // rows 8-15 | 24-31
		VPADDW(v, accB, accB)
	}
	ADDQ(Imm(32), w)
	ADDQ(Imm(64), tp)
	DECQ(c)
	JNE(LabelRef("tl_couple"))

	// widen: rows 0-7, 8-15, 16-23, 24-31 into a32[0..3]
	for k, src := range []reg.VecVirtual{accA, accB} {
		VPMOVSXWD(src.AsX(), v)
		VPADDD(v, a32[k], a32[k])
		x := XMM()
		VEXTRACTI128(U8(1), src, x)
		VPMOVSXWD(x, v)
		VPADDD(v, a32[k+2], a32[k+2])
	}
	JMP(LabelRef("tl_chunk"))

	Label("tl_store")
	for k, a := range a32 {
		VMOVDQU(a, Mem{Base: dst, Disp: 32 * k})
	}
	ADDQ(Imm(128), dst)
	DECQ(tiles)
	JMP(LabelRef("tl_tile"))

	Label("tl_done")
	VZEROUPPER()
	RET()
}

