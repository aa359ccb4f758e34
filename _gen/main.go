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
	"flag"
	"fmt"
	"math"
	"os"

	. "github.com/mmcloughlin/avo/build"
	"github.com/mmcloughlin/avo/gotypes"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// prefetchAhead is how far ahead in each row the streaming kernels prefetch:
// the distance the ternary rows stream fastest at from memory; the int8 and
// F16 rows do as well at it as at 2 KiB (docs/cpu-notes.md).
const prefetchAhead = 4096

func main() {
	if avx512Only() { // -avx512: the AVX-512 file instead (avx512.go)
		return
	}
	ConstraintExpr("amd64,!noasm")

	// Unroll 8 and a prefetch prefetchAhead bytes ahead in every row: the
	// fastest from memory of the unrolls and distances tried
	// (docs/cpu-notes.md).
	ternaryDot("ternaryDot2", 2, 8, prefetchAhead)
	ternaryDot("ternaryDot1", 1, 8, prefetchAhead)
	ternaryBlockDots()
	ternaryDotShort("ternaryDotS4", 4, prefetchAhead)
	// Prefill: one row's codes unpacked once per 128 weights, applied to
	// up to 4 tokens (the 16 YMM registers hold 4 codes and 2 sums a token).
	for nt := 1; nt <= 4; nt++ {
		ternaryDotBatch(nt, prefetchAhead)
	}
	// The same with AVX-VNNI (avxvnni.go), where the CPU has it.
	ternaryDotBatchV("ternaryVecT1V", 1, 1)
	ternaryDotBatchV("ternaryVecS4V", 1, 4)
	for nt := 2; nt <= 4; nt++ {
		ternaryDotBatchV(fmt.Sprintf("ternaryDotT%dV", nt), nt, 1)
	}
	for _, vnni := range []bool{false, true} {
		for nt := 1; nt <= 4; nt++ {
			int8DotBatch(nt, false, vnni, false)
			int8DotBatch(nt, true, vnni, false)
		}
		// The q4 kernels keep four FMA chains a token (q4Chains): the 16
		// YMM registers hold them for two tokens.
		for nt := 1; nt <= 2; nt++ {
			int8DotBatch(nt, true, vnni, true)
		}
		int8DotVecH(vnni, false)
		int8DotVecH(vnni, true)
	}
	// Groups of 16 (Q6_K): two rows a group stream faster than four from
	// memory (docs/cpu-notes.md). Groups of 32 run the batched kernels
	// (int8DotT*, int8DotV1h32) at every token count.
	int8Dot16(2)
	int8Dot16(1)
	f16Dot(4) // two rows a group are no faster (docs/cpu-notes.md)
	f16Dot(1)
	attnScores(false)
	attnScores(true)
	attnMix(false)
	attnMix(true)
	// GQA: the query heads of one KV head read each key and value once.
	for g := 1; g <= 4; g++ {
		attnScoresG(g, avx2Attn)
		attnMixG(g, avx2Attn)
	}
	f32ToF16()
	ec = declareExpConsts("exp_", false)
	softmaxExp()
	siluMul()
	absMax()
	sumSquares()
	scaleMul()
	quantI8()
	nibbleBias()
	tlTiles()
	streamSum()

	Generate()
	if err := vexVNNIFile(flag.Lookup("out").Value.String()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// argAddr is the stack address of an argument or result. Float arguments
// and results are moved with VEX instructions (VMOVSS, VBROADCASTSS): avo's
// Load and Store use legacy SSE MOVSS, which beside dirty upper YMM halves
// cost most of a short call's time (docs/cpu-notes.md).
func argAddr(c gotypes.Component) Mem {
	b, err := c.Resolve()
	if err != nil {
		panic(err)
	}
	return b.Addr
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
	VMOVDQU(reduce4x(acc, fl), dst)
}

// reduce4x is reduce4 returning the XMM that holds the four sums instead
// of storing them.
func reduce4x(acc []reg.VecVirtual, fl bool) reg.VecVirtual {
	hadd, add, extract := VPHADDD, VPADDD, VEXTRACTI128
	if fl {
		hadd, add, extract = VHADDPS, VADDPS, VEXTRACTF128
	}
	hadd(acc[1], acc[0], acc[0])
	hadd(acc[3], acc[2], acc[2])
	hadd(acc[2], acc[0], acc[0])
	t := XMM()
	extract(U8(1), acc[0], t)
	add(t, acc[0].AsX(), t)
	return t
}

// reduce2f sums the eight float32 lanes of a and of b and stores the two
// sums at dst.
func reduce2f(a, b reg.VecVirtual, dst Mem) {
	VHADDPS(b, a, a) // a01 a23 b01 b23 | a45 a67 b45 b67
	x := XMM()
	VEXTRACTF128(U8(1), a, x)
	VADDPS(x, a.AsX(), x)
	VHADDPS(x, x, x) // a b a b
	VMOVQ(x, dst)
}

// reduce1 sums the eight lanes of acc and stores the sum at dst.
func reduce1(acc reg.VecVirtual, dst Mem, fl bool) {
	t := reduce1x(acc, fl)
	if fl {
		VMOVSS(t, dst)
	} else {
		VMOVD(t, dst)
	}
}

// reduce1x sums the eight int32 (or float32 with fl) lanes of acc into
// lane 0 of the XMM it returns.
func reduce1x(acc reg.VecVirtual, fl bool) reg.VecVirtual {
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
	return t
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
// Two rows with register activations stream from memory faster than four
// rows with activations as memory operands (docs/cpu-notes.md). prefetch > 0
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

	// Runs of 8, then 4, then single blocks: rows of a few blocks
	// (SmolLM's 576 is 4.5) still get the long int16 runs.
	stages := []int{unroll}
	for u := unroll / 2; u >= 1; u /= 2 {
		if u == 4 || u == 1 {
			stages = append(stages, u)
		}
	}
	for i, u := range stages {
		here := fmt.Sprintf("%s_b%d", name, u)
		next := name + "_tail"
		if i+1 < len(stages) {
			next = fmt.Sprintf("%s_b%d", name, stages[i+1])
		}
		Label(here)
		CMPQ(n, Imm(uint64(u)))
		JB(LabelRef(next))
		for r := 0; r < nr; r++ {
			for k := 0; prefetch > 0 && k < (32*u+63)/64; k++ {
				PREFETCHT0(rowMem(r, prefetch+64*k))
			}
		}
		blocks(u, false)
		ADDQ(U32(uint32(128*u)), p)
		ADDQ(U32(uint32(32*u)), wc)
		SUBQ(Imm(uint64(u)), n)
		JMP(LabelRef(here))
	}

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

// ternaryDotShort is ternaryDot for short rows (n128 >= 1 and n128 + tail
// <= 8, e.g. SmolLM's 576): every block of a row sums into the same two
// int16 accumulators (codes <= 2, so the x4 sums stay below 2^15 over 8
// blocks) and is widened once. The nr rows of a group share each block's
// four activation vectors (in registers: the code shift is done in place
// to make room), and four rows end in one horizontal reduction and one
// 16-byte store. The 64-weight tail of every row takes one YMM pass: its
// 16 code bytes and their shift by 4 side by side ([w | w>>4]) meet
// activations loaded as [q0..15 | q32..47] and [q16..31 | q48..63] once per
// group. prefetch > 0 issues PREFETCHT0 that many bytes ahead in every row
// each block.
func ternaryDotShort(name string, nr, prefetch int) {
	if nr != 4 {
		panic("ternaryDotShort: 4 rows")
	}
	TEXT(name, NOSPLIT, "func(w *byte, stride int, act *int8, n128 int, tail int, rs *float32, sum *int32, inv *float32, dst *float32, groups int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s writes (code·act - *sum) * rs[r] * *inv for %d rows per group, rows of 1 to 8 blocks; see ternaryDotShort in _gen.", name, nr))
	w := Load(Param("w"), GP64())
	rs := Load(Param("rs"), GP64())
	stride := Load(Param("stride"), GP64())
	act := Load(Param("act"), GP64())
	dst := Load(Param("dst"), GP64())
	groups := Load(Param("groups"), GP64())
	tl := Load(Param("tail"), GP64())
	stride3 := GP64()
	LEAQ(Mem{Base: stride, Index: stride, Scale: 2}, stride3)

	mask := broadcastConst(0x03030303)
	maskC := broadcastConst(0x0c0c0c0c)
	sA := make([]reg.VecVirtual, nr)
	sB := make([]reg.VecVirtual, nr)
	for i := range sA {
		sA[i], sB[i] = YMM(), YMM()
	}
	a := []reg.VecVirtual{YMM(), YMM(), YMM(), YMM()}
	wv, t := YMM(), YMM()

	Label(name + "_group")
	CMPQ(groups, Imm(0))
	JE(LabelRef(name + "_done"))
	p, wc, n := GP64(), GP64(), GP64()
	MOVQ(act, p)
	MOVQ(w, wc)
	Load(Param("n128"), n)

	// one 128-block of every row; first: the accumulators start here
	block := func(first bool) {
		for r := 0; prefetch > 0 && r < nr; r++ {
			PREFETCHT0(rowAddr(wc, stride, stride3, r, prefetch))
		}
		for l := 0; l < 4; l++ {
			VMOVDQU(Mem{Base: p, Disp: 32 * l}, a[l])
		}
		for r := 0; r < nr; r++ {
			VMOVDQU(rowAddr(wc, stride, stride3, r, 0), wv)
			for l := 0; l < 4; l++ {
				m, d := mask, sA[r]
				if l%2 == 1 {
					m, d = maskC, sB[r]
				}
				if l == 2 {
					VPSRLW(U8(4), wv, wv)
				}
				VPAND(m, wv, t)
				if first && l < 2 {
					VPMADDUBSW(a[l], t, d)
					continue
				}
				VPMADDUBSW(a[l], t, t)
				VPADDW(t, d, d)
			}
		}
		ADDQ(Imm(128), p)
		ADDQ(Imm(32), wc)
		DECQ(n)
	}
	block(true)
	Label(name + "_block")
	CMPQ(n, Imm(0))
	JE(LabelRef(name + "_tail"))
	block(false)
	JMP(LabelRef(name + "_block"))

	Label(name + "_tail")
	CMPQ(tl, Imm(0))
	JE(LabelRef(name + "_reduce"))
	// byte m of a tail holds weights m, m+16, m+32, m+48 at shifts 0..6
	VMOVDQU(Mem{Base: p}, a[0].AsX())
	VINSERTI128(U8(1), Mem{Base: p, Disp: 32}, a[0], a[0])
	VMOVDQU(Mem{Base: p, Disp: 16}, a[1].AsX())
	VINSERTI128(U8(1), Mem{Base: p, Disp: 48}, a[1], a[1])
	for r := 0; r < nr; r++ {
		VMOVDQU(rowAddr(wc, stride, stride3, r, 0), wv.AsX())
		VPSRLW(U8(4), wv.AsX(), t.AsX())
		VINSERTI128(U8(1), t.AsX(), wv, wv)
		VPAND(mask, wv, t)
		VPMADDUBSW(a[0], t, t)
		VPADDW(t, sA[r], sA[r])
		VPAND(maskC, wv, t)
		VPMADDUBSW(a[1], t, t)
		VPADDW(t, sB[r], sB[r])
	}

	Label(name + "_reduce")
	ones := broadcastConst(0x00010001)
	for r := 0; r < nr; r++ {
		VPSRAW(U8(2), sB[r], sB[r])
		VPADDW(sB[r], sA[r], sA[r])
		VPMADDWD(ones, sA[r], sA[r])
	}
	x := reduce4x(sA, false)
	// as the Go code: float32(d - sum) * rs[r] * inv, rounded at each step
	sb, ib := XMM(), XMM()
	Load(Param("sum"), p)
	VPBROADCASTD(Mem{Base: p}, sb)
	Load(Param("inv"), p)
	VBROADCASTSS(Mem{Base: p}, ib)
	VPSUBD(sb, x, x)
	VCVTDQ2PS(x, x)
	VMULPS(Mem{Base: rs}, x, x)
	VMULPS(ib, x, x)
	VMOVUPS(x, Mem{Base: dst})
	LEAQ(Mem{Base: w, Index: stride, Scale: 4}, w)
	ADDQ(Imm(16), rs)
	ADDQ(Imm(16), dst)
	DECQ(groups)
	JMP(LabelRef(name + "_group"))

	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// int8Dot16 writes, for each of groups*nr rows of int8 weights with one
// float32 scale per 16 weights (Q6_K's), sum over blocks of scale * (int8
// w · int8 act). act must lie in [-127, 127].
func int8Dot16(nr int) {
	name := fmt.Sprintf("int8Dot%dg16", nr)
	TEXT(name, NOSPLIT, "func(w *int8, stride int, sc *float32, sstride int, act *int8, nblk int, dst *float32, groups int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s writes the scaled int8 dot of %d rows per group, one scale per 16 weights; nblk counts 32-weight blocks.", name, nr))
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
	// spreads two scales over the lanes vpmaddwd fills from each half
	perm := YMM()
	{
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
		VMOVQ(rowAddr(scc, sstride, sstride3, r, 0), f.AsX())
		VPERMPS(f, perm, f)
		VFMADD231PS(f, t, acc[r])
	}
	ADDQ(Imm(32), p)
	ADDQ(Imm(32), wc)
	ADDQ(Imm(8), scc)
	DECQ(n)
	JMP(LabelRef(name + "_block"))

	Label(name + "_reduce")
	if nr == 2 {
		reduce2f(acc[0], acc[1], Mem{Base: dst})
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
	} else if nr == 2 {
		reduce2f(acc[0], acc[2], Mem{Base: dst})
		LEAQ(Mem{Base: w, Index: stride, Scale: 2}, w)
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
	VMOVSS(h, argAddr(ReturnIndex(0)))
	rq := GP64()
	VMOVMSKPS(bad, rq.As32())
	Store(rq, ReturnIndex(1))
	VZEROUPPER()
	RET()
}

// quantI8 writes q[i] = round-half-even(x[i]*scale) for n (a multiple of
// 64) floats whose products lie in [-127, 127], and each 64's sum of q to
// bsum.
// sumSquares adds float64(x[i]*x[i]) (the square rounded to float32, as
// the reference's RMSNorm) into lanes[i%16] for n (a multiple of 16)
// floats, element after element in each lane: the order kernels.RMSNorm's
// Go code sums in, so both give the same bits. Four YMM accumulators of
// four doubles are the 16 lanes; a lane's chain is one VADDPD per 16
// floats.
func sumSquares() {
	TEXT("sumSquares", NOSPLIT, "func(x *float32, n int, lanes *[16]float64)")
	Pragma("noescape")
	Doc("sumSquares adds float64(x[i]*x[i]) to lanes[i%16] for n (a multiple of 16) floats; see _gen.")
	x := Load(Param("x"), GP64())
	n := Load(Param("n"), GP64())
	l := Load(Param("lanes"), GP64())
	acc := []reg.VecVirtual{YMM(), YMM(), YMM(), YMM()}
	for k, a := range acc {
		VMOVUPD(Mem{Base: l, Disp: 32 * k}, a)
	}
	Label("ss_loop")
	CMPQ(n, Imm(0))
	JE(LabelRef("ss_done"))
	for h := 0; h < 2; h++ {
		v := YMM()
		VMOVUPS(Mem{Base: x, Disp: 32 * h}, v)
		VMULPS(v, v, v)
		d0, d1 := YMM(), YMM()
		VCVTPS2PD(v.AsX(), d0)
		hi := XMM()
		VEXTRACTF128(U8(1), v, hi)
		VCVTPS2PD(hi, d1)
		VADDPD(d0, acc[2*h], acc[2*h])
		VADDPD(d1, acc[2*h+1], acc[2*h+1])
	}
	ADDQ(Imm(64), x)
	SUBQ(Imm(16), n)
	JMP(LabelRef("ss_loop"))
	Label("ss_done")
	for k, a := range acc {
		VMOVUPD(a, Mem{Base: l, Disp: 32 * k})
	}
	VZEROUPPER()
	RET()
}

// scaleMul sets out[i] = (x[i]*scale)*w[i] for n (a multiple of 8) floats,
// two roundings as the reference's RMSNorm; out may be x.
func scaleMul() {
	TEXT("scaleMul", NOSPLIT, "func(out *float32, x *float32, w *float32, n int, scale float32)")
	Pragma("noescape")
	Doc("scaleMul sets out[i] = (x[i]*scale)*w[i] for n (a multiple of 8) floats; out may be x.")
	out := Load(Param("out"), GP64())
	x := Load(Param("x"), GP64())
	w := Load(Param("w"), GP64())
	n := Load(Param("n"), GP64())
	sc := YMM()
	VBROADCASTSS(argAddr(Param("scale")), sc)
	Label("sm_loop")
	CMPQ(n, Imm(0))
	JE(LabelRef("sm_done"))
	v := YMM()
	VMULPS(Mem{Base: x}, sc, v)
	VMULPS(Mem{Base: w}, v, v)
	VMOVUPS(v, Mem{Base: out})
	ADDQ(Imm(32), x)
	ADDQ(Imm(32), w)
	ADDQ(Imm(32), out)
	SUBQ(Imm(8), n)
	JMP(LabelRef("sm_loop"))
	Label("sm_done")
	VZEROUPPER()
	RET()
}

func quantI8() {
	TEXT("quantI8", NOSPLIT, "func(x *float32, n int, scale float32, q *int8, bsum *int32)")
	Pragma("noescape")
	Doc("quantI8 rounds x*scale to int8 (half to even) and writes each 64's sum.")
	x := Load(Param("x"), GP64())
	n := Load(Param("n"), GP64())
	q := Load(Param("q"), GP64())
	bs := Load(Param("bsum"), GP64())
	sc := YMM()
	VBROADCASTSS(argAddr(Param("scale")), sc)
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

// nibbleBias writes, for n (a multiple of 32) int8 activations q, the
// lane biases of the q4 kernels: bias[l] = -8 * (q[4l] + ... + q[4l+3]),
// the int32 lane that undoes the +8 of their unsigned nibbles (see
// nibbles).
func nibbleBias() {
	TEXT("nibbleBias", NOSPLIT, "func(q *int8, n int, bias *int32)")
	Pragma("noescape")
	Doc("nibbleBias writes bias[l] = -8 * (q[4l] + q[4l+1] + q[4l+2] + q[4l+3]) for n (a multiple of 32) activations.")
	q := Load(Param("q"), GP64())
	n := Load(Param("n"), GP64())
	b := Load(Param("bias"), GP64())
	eights := broadcastConst(0x08080808)
	negOnes := broadcastConst(0xffffffff)
	Label("nb_loop")
	CMPQ(n, Imm(0))
	JE(LabelRef("nb_done"))
	t := YMM()
	VPMADDUBSW(Mem{Base: q}, eights, t) // 8*q0 + 8*q1: at most 2032
	VPMADDWD(negOnes, t, t)
	VMOVDQU(t, Mem{Base: b})
	ADDQ(Imm(32), q)
	ADDQ(Imm(32), b)
	SUBQ(Imm(32), n)
	JMP(LabelRef("nb_loop"))
	Label("nb_done")
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

// tokAddr returns the address of token i's activations (i < 4) at base,
// tokens as bytes apart (as3 = 3*as).
func tokAddr(base, as, as3 reg.Register, i, disp int) Mem {
	return rowAddr(base, as, as3, i, disp)
}

// ternaryDotBatch writes, for each of rows rows (stride bytes apart, layout
// as ternaryDot) and nt tokens (as bytes apart), the int32 sum of code*act
// to dst[4*r+t]. A block's 32 bytes are unpacked once into four code
// vectors (codes taken with their shift undone, so one int16 sum a token
// serves: at most 2032 a lane per block, 8 blocks before widening), then
// multiplied with every token's activations, read from memory (L1: 4
// tokens of 6912 are 27 KB).
func ternaryDotBatch(nt, prefetch int) {
	name := fmt.Sprintf("ternaryDotT%d", nt)
	TEXT(name, NOSPLIT, "func(w *byte, stride int, act *int8, as int, n128 int, tail int, dst *int32, rows int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s writes the code·act dots of each row with %d tokens to dst[4*row+token]; see ternaryDotBatch in _gen.", name, nt))
	w := Load(Param("w"), GP64())
	stride := Load(Param("stride"), GP64())
	as := Load(Param("as"), GP64())
	as3 := GP64()
	LEAQ(Mem{Base: as, Index: as, Scale: 2}, as3)
	dst := Load(Param("dst"), GP64())
	rows := Load(Param("rows"), GP64())

	mask := broadcastConst(0x03030303)
	ones := broadcastConst(0x00010001)
	c := []reg.VecVirtual{YMM(), YMM(), YMM(), YMM()}
	t := YMM()
	s16 := make([]reg.VecVirtual, nt)
	s32 := make([]reg.VecVirtual, nt)
	for i := range s16 {
		s16[i], s32[i] = YMM(), YMM()
	}

	Label(name + "_row")
	CMPQ(rows, Imm(0))
	JE(LabelRef(name + "_done"))
	for i := range s32 {
		VPXOR(s32[i], s32[i], s32[i])
	}
	p, wc, n := GP64(), GP64(), GP64()
	Load(Param("act"), p)
	MOVQ(w, wc)
	Load(Param("n128"), n)

	blocks := func(u int, x bool) {
		pick := func(v reg.VecVirtual) reg.Register {
			if x {
				return v.AsX()
			}
			return v
		}
		for k := 0; k < u; k++ {
			VMOVDQU(Mem{Base: wc, Disp: 32 * k}, pick(c[3]))
			VPAND(pick(mask), pick(c[3]), pick(c[0]))
			for l := 1; l < 4; l++ {
				VPSRLW(U8(2*l), pick(c[3]), pick(c[l]))
				VPAND(pick(mask), pick(c[l]), pick(c[l]))
			}
			// c[3] was shifted in place last: the order above matters
			for i := 0; i < nt; i++ {
				for l := 0; l < 4; l++ {
					disp := 128*k + 32*l
					if x {
						disp = 16 * l
					}
					am := tokAddr(p, as, as3, i, disp)
					if k == 0 && l == 0 {
						VPMADDUBSW(am, pick(c[l]), pick(s16[i]))
						continue
					}
					VPMADDUBSW(am, pick(c[l]), pick(t))
					VPADDW(pick(t), pick(s16[i]), pick(s16[i]))
				}
			}
		}
		for i := 0; i < nt; i++ {
			VPMADDWD(pick(ones), pick(s16[i]), pick(s16[i]))
			// a VEX.128 op cleared the upper lane, so the full add is right
			VPADDD(s16[i], s32[i], s32[i])
		}
	}

	stages := []int{8, 4, 1}
	for i, u := range stages {
		here := fmt.Sprintf("%s_b%d", name, u)
		next := name + "_tail"
		if i+1 < len(stages) {
			next = fmt.Sprintf("%s_b%d", name, stages[i+1])
		}
		Label(here)
		CMPQ(n, Imm(uint64(u)))
		JB(LabelRef(next))
		for k := 0; prefetch > 0 && k < (32*u+63)/64; k++ {
			PREFETCHT0(Mem{Base: wc, Disp: prefetch + 64*k})
		}
		blocks(u, false)
		ADDQ(U32(uint32(128*u)), p)
		ADDQ(U32(uint32(32*u)), wc)
		SUBQ(Imm(uint64(u)), n)
		JMP(LabelRef(here))
	}

	Label(name + "_tail")
	tl := GP64()
	Load(Param("tail"), tl)
	CMPQ(tl, Imm(0))
	JE(LabelRef(name + "_reduce"))
	blocks(1, true)

	Label(name + "_reduce")
	if nt == 4 {
		reduce4(s32, Mem{Base: dst}, false)
	} else {
		for i := 0; i < nt; i++ {
			reduce1(s32[i], Mem{Base: dst, Disp: 4 * i}, false)
		}
	}
	ADDQ(stride, w)
	ADDQ(Imm(16), dst)
	DECQ(rows)
	JMP(LabelRef(name + "_row"))

	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// byFour emits the block loop of a group-32 int8 kernel over n (even)
// blocks: body(4) while four remain, then body(2) once if two do (body
// moves n on); it ends at label lbl_sum.
func byFour(lbl string, n reg.Register, body func(nb int)) {
	Label(lbl + "_quad")
	CMPQ(n, Imm(4))
	JB(LabelRef(lbl + "_pair"))
	body(4)
	JMP(LabelRef(lbl + "_quad"))
	Label(lbl + "_pair")
	CMPQ(n, Imm(0))
	JE(LabelRef(lbl + "_sum"))
	body(2)
	Label(lbl + "_sum")
}

// int8DotBatch writes, for each of rows rows of int8 weights (stride bytes
// apart) with one scale per 32 (float32, or float16 with half; sstride
// bytes apart), and nt tokens (as bytes apart), sum over blocks of scale *
// (w·act) to dst[4*r+t]. Each block's weights, their absolute values and
// its scale are loaded once for all the tokens; per token the order of
// operations is the same at every token count (int8Blocks), so each result
// equals the one-token kernel's. With vnni, the AVX-VNNI twin. With nib,
// the q4Dot twin: the weights are 4-bit (nibbles), its int32 lanes are the
// int8 kernel's for the same weights, and its four FMA chains a token
// (q4Chains) add them in another order.
func int8DotBatch(nt int, half, vnni, nib bool) {
	name := fmt.Sprintf("int8DotT%dg32", nt)
	scType := "float32"
	if half {
		name = fmt.Sprintf("int8DotT%dh32", nt)
		scType = "uint16"
	}
	if nib {
		name = "q4" + name[len("int8"):]
	}
	doc := fmt.Sprintf("%s writes the scaled int8 dots of each row with %d tokens to dst[4*row+token]; see int8DotBatch in _gen.", name, nt)
	if nib {
		doc = fmt.Sprintf("%s is int8DotT%dh32 for 4-bit weights (Q4 layout), with four FMA chains a token; see int8DotBatch in _gen.", name, nt)
	}
	if vnni {
		doc = fmt.Sprintf("%sV is %s with AVX-VNNI, the same results bit for bit; see int8DotBatch in _gen.", name, name)
		name += "V"
	}
	w, stride, sc, sstride, as, as3, dst, rows, _ := int8Header(name, scType, doc, nib, false)
	ones := int8Ones(vnni)
	nb := nibbleSet(nib)
	acc := int8Accs(nt, nb)

	Label(name + "_row")
	CMPQ(rows, Imm(0))
	JE(LabelRef(name + "_done"))
	p, wc, scc, n := int8RowStart(acc, w, sc, nb)
	int8Blocks(name, n, p, as, as3, wc, scc, half, ones, acc, nb)
	for i := 0; i < nt; i++ {
		reduce1(acc[i][0], Mem{Base: dst, Disp: 4 * i}, true)
	}
	ADDQ(stride, w)
	ADDQ(sstride, sc)
	ADDQ(Imm(16), dst)
	DECQ(rows)
	JMP(LabelRef(name + "_row"))

	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// int8Ones is VPMADDWD's int16 ones for int8Blocks, or nil with vnni.
func int8Ones(vnni bool) reg.VecVirtual {
	if vnni {
		return nil
	}
	return broadcastConst(0x00010001)
}

// int8Accs is a float accumulator per FMA chain (two: even and odd blocks;
// with nb, q4Chains) for each of nt tokens.
func int8Accs(nt int, nb *nibbles) [][]reg.VecVirtual {
	chains := 2
	if nb != nil {
		chains = q4Chains
	}
	acc := make([][]reg.VecVirtual, nt)
	for i := range acc {
		for range chains {
			acc[i] = append(acc[i], YMM())
		}
	}
	return acc
}

// q4Chains is the q4 kernels' FMA chains a token: block b goes to chain
// b%4, and the chains add as (0+2) + (1+3). A pair of 4-bit blocks is 36
// bytes, half an int8 pair's, so two chains would hold a kernel to half
// the bytes an FMA latency that the int8 kernels stream
// (docs/cpu-notes.md, "4-bit rows").
const q4Chains = 4

// nibbles makes int8Blocks read 4-bit weights in the Q4 layout (Int8Mat's
// nib): per pair of 32-blocks 32 bytes, byte j holding weight j of the
// even block in its low nibble and weight j of the odd block in its high
// one, each as w+8 (0..15). The unsigned nibbles multiply the activations
// as they are, and each token's lane biases (Acts: -8 times the sum of
// the 4 activations of each int32 lane) take the +8 back out, so every
// int32 lane is the int8 kernel's exactly.
type nibbles struct {
	mask reg.VecVirtual // 0x0f in every byte
	bias reg.Register   // token 0's lane biases, moving on with the activations
}

// nibbleSet returns the nibbles of a q4 kernel (nil for an int8 one).
func nibbleSet(nib bool) *nibbles {
	if !nib {
		return nil
	}
	return &nibbles{mask: broadcastConst(0x0f0f0f0f)}
}

// int8RowStart clears the accumulators and loads a row's block pointers
// and count (and with nb, its bias pointer) for int8Blocks.
func int8RowStart(acc [][]reg.VecVirtual, w, sc reg.Register, nb *nibbles) (p, wc, scc, n reg.Register) {
	for i := range acc {
		for _, a := range acc[i] {
			VXORPS(a, a, a)
		}
	}
	p, wc, scc, n = GP64(), GP64(), GP64(), GP64()
	Load(Param("act"), p)
	if nb != nil {
		nb.bias = GP64()
		Load(Param("bias"), nb.bias)
	}
	MOVQ(w, wc)
	MOVQ(sc, scc)
	Load(Param("nblk"), n)
	return
}

// int8Header declares an int8 kernel and loads its arguments: a batched
// one (int8DotBatch, int8DotBatchZ: scales of type scType, tokens as bytes
// apart, as3 = 3*as) or, with vec, a one-token one that scales and stores
// its rows (int8DotVecH, int8DotBatchZ's vec form: float16 scales, *inv
// into ib). With nib, the q4 kernels' signature, which adds the
// activations' lane biases.
func int8Header(name, scType, doc string, nib, vec bool) (w, stride, sc, sstride, as, as3, dst, rows reg.Register, ib reg.VecVirtual) {
	wType, bias, toks := "*int8", "", "as int, "
	if nib {
		wType, bias = "*byte", "bias *int32, "
	}
	tail := "nblk int, dst *float32, rows int)"
	if vec {
		scType, toks, tail = "uint16", "", "nblk int, inv *float32, dst *float32, rows int)"
	}
	TEXT(name, NOSPLIT, "func(w "+wType+", stride int, sc *"+scType+", sstride int, act *int8, "+bias+toks+tail)
	Pragma("noescape")
	Doc(doc)
	w = Load(Param("w"), GP64())
	stride = Load(Param("stride"), GP64())
	sc = Load(Param("sc"), GP64())
	sstride = Load(Param("sstride"), GP64())
	if !vec {
		as = Load(Param("as"), GP64())
		as3 = GP64()
		LEAQ(Mem{Base: as, Index: as, Scale: 2}, as3)
	}
	dst = Load(Param("dst"), GP64())
	rows = Load(Param("rows"), GP64())
	if vec {
		ib = XMM()
		ip := Load(Param("inv"), GP64())
		VMOVSS(Mem{Base: ip}, ib)
	}
	return
}

// int8Blocks emits the block loop of int8DotBatch and int8DotVecH over n
// (even) 32-weight blocks: per block at wc (sign and magnitude split) and
// its scale at scc (float16 when half), token i's activations at
// tokAddr(p, as, as3, i, 0) multiply in, their int32 lane sums are
// converted, scaled and added to acc[i][0] for even blocks and acc[i][1]
// for odd ones (two FMA chains a token: one chain held a 2560-wide row to
// its FMA latency), and at the end acc[i][1] is added into acc[i][0]
// (with nb, four chains: see q4Chains).
// Without ones (int16 ones for VPMADDWD) the lane sums come from one VPDPBUSD (the same int32s as
// VPMADDUBSW+VPMADDWD: no pair sum saturates, as |w| <= 128 and |act| <=
// 127). Blocks go four at a time (one load and one conversion for four
// float16 scales) while four remain, then one pair; p, wc and scc advance.
// With nb the weights are nibbles (see nibbles): a pair of blocks is one
// 32-byte load, and token i's lane biases (at tokAddr(nb.bias, ...), laid
// out as its activations) start its lane sums.
func int8Blocks(name string, n, p, as, as3, wc, scc reg.Register, half bool, ones reg.VecVirtual, acc [][]reg.VecVirtual, nb *nibbles) {
	vnni := ones == nil
	scSize := 4
	if half {
		scSize = 2
	}
	wBytes := 32 // weight bytes a block
	if nb != nil {
		wBytes = 16
	}
	blocks := func(nblk int) {
		// h holds the nblk scales in each 128-bit lane (a pair twice)
		h := YMM()
		sm := Mem{Base: scc}
		switch {
		case half && nblk == 4:
			VPBROADCASTQ(sm, h.AsX())
			VCVTPH2PS(h.AsX(), h)
		case half:
			VPBROADCASTD(sm, h.AsX())
			VCVTPH2PS(h.AsX(), h)
		case nblk == 4:
			VBROADCASTF128(sm, h)
		default:
			VBROADCASTSD(sm, h)
		}
		for j := 0; j < nblk; j++ {
			if (j*wBytes)%64 == 0 {
				PREFETCHT0(Mem{Base: wc, Disp: prefetchAhead + wBytes*j})
			}
			f := YMM()
			var wv, aw reg.VecVirtual
			VSHUFPS(U8(0x55*j), h, h, f)
			if nb != nil {
				// the pair's 32 bytes: the even block's nibbles low, the odd's high
				aw = YMM()
				VMOVDQU(Mem{Base: wc, Disp: 32 * (j / 2)}, aw)
				if j%2 == 1 {
					VPSRLW(U8(4), aw, aw)
				}
				VPAND(nb.mask, aw, aw)
			} else {
				wv, aw = YMM(), YMM()
				VMOVDQU(Mem{Base: wc, Disp: 32 * j}, wv)
				VPABSB(wv, aw)
			}
			for i := range acc {
				t := YMM()
				switch {
				case nb != nil && vnni:
					d := YMM()
					VMOVDQU(tokAddr(nb.bias, as, as3, i, 32*j), d)
					VMOVDQU(tokAddr(p, as, as3, i, 32*j), t)
					VPDPBUSD(t, aw, d)
					t = d
				case nb != nil:
					VPMADDUBSW(tokAddr(p, as, as3, i, 32*j), aw, t)
					VPMADDWD(ones, t, t)
					VPADDD(tokAddr(nb.bias, as, as3, i, 32*j), t, t)
				default:
					VMOVDQU(tokAddr(p, as, as3, i, 32*j), t)
					VPSIGNB(wv, t, t)
					if vnni {
						d := YMM()
						VPXOR(d, d, d)
						VPDPBUSD(t, aw, d)
						t = d
					} else {
						VPMADDUBSW(t, aw, t)
						VPMADDWD(ones, t, t)
					}
				}
				VCVTDQ2PS(t, t)
				VFMADD231PS(f, t, acc[i][j%len(acc[i])])
			}
		}
		ADDQ(U32(uint32(32*nblk)), p)
		if nb != nil {
			ADDQ(U32(uint32(32*nblk)), nb.bias)
		}
		ADDQ(U32(uint32(wBytes*nblk)), wc)
		ADDQ(U32(uint32(nblk*scSize)), scc)
		SUBQ(U32(uint32(nblk)), n)
	}
	byFour(name, n, blocks)
	for i := range acc {
		if len(acc[i]) == 4 {
			VADDPS(acc[i][2], acc[i][0], acc[i][0])
			VADDPS(acc[i][3], acc[i][1], acc[i][1])
		}
		VADDPS(acc[i][1], acc[i][0], acc[i][0])
	}
}

// int8DotVecH is int8DotBatch for one token with float16 scales (a Q8_0
// or Q4_0 matrix-vector product: the LM head) that also scales each row's
// sum by *inv and stores it at dst[r]: the same operations in the same
// order as int8DotT1h32 followed by the Go loop it replaces. With nib, the
// q4 twin (q4DotV1h32).
func int8DotVecH(vnni, nib bool) {
	name := "int8DotV1h32"
	doc := name + " writes (row r · act, scaled per 32 by float16 scales) * *inv to dst[r] for each row; see int8DotVecH in _gen."
	if nib {
		name = "q4DotV1h32"
		doc = name + " is int8DotV1h32 for 4-bit weights (Q4 layout); see int8DotVecH in _gen."
	}
	if vnni {
		doc = name + "V is " + name + " with AVX-VNNI, the same results bit for bit; see int8DotVecH in _gen."
		name += "V"
	}
	w, stride, sc, sstride, _, _, dst, rows, ib := int8Header(name, "uint16", doc, nib, true)
	ones := int8Ones(vnni)
	nb := nibbleSet(nib)
	acc := int8Accs(1, nb)

	Label(name + "_row")
	CMPQ(rows, Imm(0))
	JE(LabelRef(name + "_done"))
	p, wc, scc, n := int8RowStart(acc, w, sc, nb)
	int8Blocks(name, n, p, nil, nil, wc, scc, true, ones, acc, nb)
	x := reduce1x(acc[0][0], true)
	VMULSS(ib, x, x)
	VMOVSS(x, Mem{Base: dst})
	ADDQ(stride, w)
	ADDQ(sstride, sc)
	ADDQ(Imm(4), dst)
	DECQ(rows)
	JMP(LabelRef(name + "_row"))

	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// attnScores writes out[p] = q·k_p for npos positions, k_p at k+p*kstride
// bytes, over n (a multiple of 8) floats, and returns the largest. Eight
// positions at a time, each its own accumulator (eight FMA chains hide the
// FMA latency), q read from L1 once per 8 floats for the eight; then four,
// then one at a time.
func attnScores(half bool) {
	name, kt, esz := "attnScores", "float32", 4
	if half {
		name, kt, esz = "attnScoresH", "uint16", 2
	}
	lp := func(l string) string { return name + "_" + l }
	TEXT(name, NOSPLIT, "func(q *float32, k *"+kt+", kstride int, n int, npos int, out *float32) float32")
	Pragma("noescape")
	Doc(name + " writes out[p] = q·k_p for npos positions (" + kt + ") kstride bytes apart, over n (a multiple of 8) floats, and returns the largest.")
	fma := func(m Mem, qv, acc, t reg.VecVirtual) {
		if half {
			VCVTPH2PS(m, t)
			VFMADD231PS(t, qv, acc)
			return
		}
		VFMADD231PS(m, qv, acc)
	}
	q := Load(Param("q"), GP64())
	k := Load(Param("k"), GP64())
	ks := Load(Param("kstride"), GP64())
	n := Load(Param("n"), GP64())
	npos := Load(Param("npos"), GP64())
	out := Load(Param("out"), GP64())
	ks3 := GP64()
	LEAQ(Mem{Base: ks, Index: ks, Scale: 2}, ks3)
	acc := make([]reg.VecVirtual, 8)
	for i := range acc {
		acc[i] = YMM()
	}
	qv, mx, t := YMM(), YMM(), YMM()
	ninf := GP32()
	MOVL(U32(0xff800000), ninf) // -Inf
	VMOVD(ninf, mx.AsX())
	VPBROADCASTD(mx.AsX(), mx)
	j, qp, kp, k4 := GP64(), GP64(), GP64(), GP64()

	for _, u := range []int{8, 4} {
		lbl := lp(fmt.Sprintf("as%d", u))
		Label(lbl)
		CMPQ(npos, Imm(uint64(u)))
		JB(LabelRef(map[int]string{8: lp("as4"), 4: lp("as_one")}[u]))
		for _, a := range acc[:u] {
			VXORPS(a, a, a)
		}
		MOVQ(q, qp)
		MOVQ(k, kp)
		LEAQ(Mem{Base: k, Index: ks, Scale: 4}, k4)
		MOVQ(n, j)
		Label(lbl + "_loop")
		VMOVUPS(Mem{Base: qp}, qv)
		for r := 0; r < u; r++ {
			base := kp
			if r >= 4 {
				base = k4
			}
			fma(rowAddr(base, ks, ks3, r%4, 0), qv, acc[r], t)
		}
		ADDQ(Imm(32), qp)
		ADDQ(Imm(uint64(8*esz)), kp)
		if u == 8 {
			ADDQ(Imm(uint64(8*esz)), k4)
		}
		SUBQ(Imm(8), j)
		JNE(LabelRef(lbl + "_loop"))
		for h := 0; h < u/4; h++ {
			t := reduce4x(acc[4*h:4*h+4], true)
			VMOVUPS(t, Mem{Base: out, Disp: 16 * h})
			VMAXPS(t.AsY(), mx, mx) // upper lane: zero from the VEX.128 ops
		}
		LEAQ(Mem{Base: k, Index: ks, Scale: 4}, k)
		if u == 8 {
			LEAQ(Mem{Base: k, Index: ks, Scale: 4}, k)
		}
		ADDQ(Imm(uint64(4*u)), out)
		SUBQ(Imm(uint64(u)), npos)
		JMP(LabelRef(lbl))
	}

	Label(lp("as_one"))
	CMPQ(npos, Imm(0))
	JE(LabelRef(lp("as_done")))
	VXORPS(acc[0], acc[0], acc[0])
	MOVQ(q, qp)
	MOVQ(k, kp)
	MOVQ(n, j)
	Label(lp("as_one_loop"))
	VMOVUPS(Mem{Base: qp}, qv)
	fma(Mem{Base: kp}, qv, acc[0], t)
	ADDQ(Imm(32), qp)
	ADDQ(Imm(uint64(8*esz)), kp)
	SUBQ(Imm(8), j)
	JNE(LabelRef(lp("as_one_loop")))
	reduce1(acc[0], Mem{Base: out}, true)
	VBROADCASTSS(Mem{Base: out}, qv)
	VMAXPS(qv, mx, mx)
	ADDQ(ks, k)
	ADDQ(Imm(4), out)
	DECQ(npos)
	JMP(LabelRef(lp("as_one")))

	Label(lp("as_done"))
	// the max of the lanes; lanes 4-7 hold -Inf or 0 from the
	// four-at-a-time stores, so only the low lane's four count
	h := XMM()
	VPSHUFD(U8(0x4e), mx.AsX(), h)
	VMAXPS(h, mx.AsX(), h)
	u := XMM()
	VPSHUFD(U8(0xb1), h, u)
	VMAXPS(u, h, h)
	VMOVSS(h, argAddr(ReturnIndex(0)))
	VZEROUPPER()
	RET()
}

// attnMix adds sum over npos positions of w[p]*v_p to y (n floats, a
// multiple of 8; v_p at v+p*vstride bytes): 64 columns at a time in eight
// accumulators (eight FMA chains hide the latency), then 8 at a time.
func attnMix(half bool) {
	name, vt, esz := "attnMix", "float32", 4
	if half {
		name, vt, esz = "attnMixH", "uint16", 2
	}
	TEXT(name, NOSPLIT, "func(y *float32, w *float32, v *"+vt+", vstride int, n int, npos int)")
	Pragma("noescape")
	Doc(name + " adds sum of w[p]*v_p over npos positions (" + vt + ") vstride bytes apart to y (n floats, a multiple of 8).")
	y := Load(Param("y"), GP64())
	w := Load(Param("w"), GP64())
	v := Load(Param("v"), GP64())
	vs := Load(Param("vstride"), GP64())
	n := Load(Param("n"), GP64())
	acc := make([]reg.VecVirtual, 8)
	for i := range acc {
		acc[i] = YMM()
	}
	wv, t := YMM(), YMM()
	p, wp, vp := GP64(), GP64(), GP64()
	for _, u := range []int{8, 1} {
		lbl := fmt.Sprintf("%s_am%d", name, u)
		Label(lbl + "_chunk")
		CMPQ(n, Imm(uint64(8*u)))
		JB(LabelRef(map[int]string{8: name + "_am1_chunk", 1: name + "_done"}[u]))
		for i := 0; i < u; i++ {
			VMOVUPS(Mem{Base: y, Disp: 32 * i}, acc[i])
		}
		Load(Param("npos"), p)
		MOVQ(w, wp)
		MOVQ(v, vp)
		Label(lbl + "_pos")
		CMPQ(p, Imm(0))
		JE(LabelRef(lbl + "_store"))
		VBROADCASTSS(Mem{Base: wp}, wv)
		if u == 8 {
			// the value row 8 positions ahead (see attnScores)
			pf := GP64()
			LEAQ(Mem{Base: vp, Index: vs, Scale: 8}, pf)
			for l := 0; l < esz; l++ { // a head of 64
				PREFETCHT0(Mem{Base: pf, Disp: 64 * l})
			}
		}
		for i := 0; i < u; i++ {
			if half {
				VCVTPH2PS(Mem{Base: vp, Disp: 16 * i}, t)
				VFMADD231PS(t, wv, acc[i])
			} else {
				VFMADD231PS(Mem{Base: vp, Disp: 32 * i}, wv, acc[i])
			}
		}
		ADDQ(Imm(4), wp)
		ADDQ(vs, vp)
		DECQ(p)
		JMP(LabelRef(lbl + "_pos"))
		Label(lbl + "_store")
		for i := 0; i < u; i++ {
			VMOVUPS(acc[i], Mem{Base: y, Disp: 32 * i})
		}
		ADDQ(U32(uint32(32*u)), y)
		ADDQ(U32(uint32(8*esz*u)), v)
		SUBQ(Imm(uint64(8*u)), n)
		JMP(LabelRef(lbl + "_chunk"))
	}
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// expConsts are expPS's read-only constants in one assembly file (a
// file's constants are its own symbols).
type expConsts struct {
	hi, lo, log2e, c1, c2, one, bias, flush Mem
	p                                       [6]Mem
	// evex: the AVX-512 file's, read by EVEX broadcast (with VRNDSCALEPS
	// for VROUNDPS), so that any of the 32 registers may be used.
	evex bool
}

// ec and zec are the AVX2 file's and the AVX-512 file's.
var ec, zec expConsts

// vconst declares a read-only 32-byte vector of v in every dword.
func vconst(name string, v uint32) Mem {
	m := GLOBL(name, RODATA|NOPTR)
	for i := 0; i < 8; i++ {
		DATA(4*i, U32(v))
	}
	return m
}

// declareExpConsts declares the constants, named with prefix: 32-byte
// vectors, or with evex single floats to broadcast.
func declareExpConsts(prefix string, evex bool) expConsts {
	c := expConsts{evex: evex}
	u := func(name string, v uint32) Mem {
		if evex {
			m := GLOBL(prefix+name, RODATA|NOPTR)
			DATA(0, U32(v))
			return m
		}
		return vconst(prefix+name, v)
	}
	f := func(name string, v float32) Mem { return u(name, math.Float32bits(v)) }
	// the normal range of float32 results: 2^n stays a normal number
	c.hi, c.lo = f("hi", 88.3762626647949), f("lo", -87.3365447504)
	c.log2e = f("log2e", 1.44269504088896341)
	c.c1, c.c2 = f("c1", 0.693359375), f("c2", -2.12194440e-4) // ln 2 = c1 + c2
	c.one, c.bias = f("one", 1), u("bias", 127)
	c.flush = f("flush", -64)
	for i, v := range []float32{1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1} {
		c.p[i] = f(fmt.Sprintf("p%d", i), v)
	}
	return c
}

// expPS sets x = e^x for 8 (or, with c.evex, 8 or 16) floats the Cephes
// expf way: x clamped to the normal range, n = round(x*log2 e), r = x -
// n*ln 2 (ln 2 in two parts so r is exact), e^r = 1 + r + r^2*P(r), times
// 2^n built in the exponent bits. Relative error about 2 ulp. t, u, w are
// scratch. Both files' forms take the same operations in the same order,
// so each lane gets the same bits.
func expPS(c *expConsts, x, t, u, w reg.VecVirtual) {
	op := func(plain, bcst func(...Op), args ...Op) {
		if c.evex {
			bcst(args...)
		} else {
			plain(args...)
		}
	}
	op(VMINPS, VMINPS_BCST, c.hi, x, x)
	op(VMAXPS, VMAXPS_BCST, c.lo, x, x)
	op(VMULPS, VMULPS_BCST, c.log2e, x, t)
	if c.evex {
		VRNDSCALEPS(U8(0), t, t) // to nearest
	} else {
		VROUNDPS(U8(0), t, t)
	}
	op(VFNMADD231PS, VFNMADD231PS_BCST, c.c1, t, x) // x -= n*c1
	op(VFNMADD231PS, VFNMADD231PS_BCST, c.c2, t, x)
	op(VMOVUPS, VBROADCASTSS, c.p[0], u)
	for _, p := range c.p[1:] {
		op(VFMADD213PS, VFMADD213PS_BCST, p, x, u) // u = u*x + p
	}
	VMULPS(x, x, w)
	VFMADD213PS(x, w, u) // u = u*x^2 + x
	op(VADDPS, VADDPS_BCST, c.one, u, u)
	VCVTPS2DQ(t, t)
	op(VPADDD, VPADDD_BCST, c.bias, t, t)
	VPSLLD(U8(23), t, t)
	VMULPS(t, u, x)
}

// softmaxExp sets x[i] = e^(x[i]*scale - m) for n (a multiple of 8) floats
// and returns their sum.
func softmaxExp() {
	TEXT("softmaxExp", NOSPLIT, "func(x *float32, n int, scale float32, m float32) float32")
	Pragma("noescape")
	Doc("softmaxExp sets x[i] = exp(x[i]*scale - m) (0 below e^-64) for n (a multiple of 8) floats and returns their sum.")
	x := Load(Param("x"), GP64())
	n := Load(Param("n"), GP64())
	sc, m := YMM(), YMM()
	VBROADCASTSS(argAddr(Param("scale")), sc)
	VBROADCASTSS(argAddr(Param("m")), m)
	// Two vectors an iteration, each with its own registers and sum: one
	// exp is a long dependent chain, and two in flight hide its latency
	// (docs/cpu-notes.md).
	sum := [2]reg.VecVirtual{YMM(), YMM()}
	for _, r := range sum {
		VXORPS(r, r, r)
	}
	type regs struct{ v, t, u, w, keep reg.VecVirtual }
	var rs [2]regs
	for i := range rs {
		rs[i] = regs{YMM(), YMM(), YMM(), YMM(), YMM()}
	}
	body := func(i int) {
		r := rs[i]
		VMOVUPS(Mem{Base: x, Disp: 32 * i}, r.v)
		// rounded product, then difference, as the Go tail computes it
		VMULPS(sc, r.v, r.v)
		VSUBPS(m, r.v, r.v)
		// weights below e^-64 of the largest are flushed to exactly 0: they
		// change no sum, and their products with the values would be
		// denormals, which cost the FMAs of attnMix dearly
		VCMPPS(U8(13), ec.flush, r.v, r.keep) // v >= -64 (ordered)
		expPS(&ec, r.v, r.t, r.u, r.w)
		VANDPS(r.keep, r.v, r.v)
		VMOVUPS(r.v, Mem{Base: x, Disp: 32 * i})
		VADDPS(r.v, sum[i], sum[i])
	}
	Label("se_loop2")
	CMPQ(n, Imm(16))
	JB(LabelRef("se_loop"))
	body(0)
	body(1)
	ADDQ(Imm(64), x)
	SUBQ(Imm(16), n)
	JMP(LabelRef("se_loop2"))
	Label("se_loop")
	CMPQ(n, Imm(0))
	JE(LabelRef("se_done"))
	body(0)
	ADDQ(Imm(32), x)
	SUBQ(Imm(8), n)
	JMP(LabelRef("se_loop"))
	Label("se_done")
	VADDPS(sum[1], sum[0], sum[0])
	h := XMM()
	VEXTRACTF128(U8(1), sum[0], h)
	VADDPS(h, sum[0].AsX(), h)
	VHADDPS(h, h, h)
	VHADDPS(h, h, h)
	VMOVSS(h, argAddr(ReturnIndex(0)))
	VZEROUPPER()
	RET()
}

// siluMul sets g[i] = g[i]/(1+e^-g[i]) * u[i] (SwiGLU) for n (a multiple
// of 8) floats.
func siluMul() {
	TEXT("siluMul", NOSPLIT, "func(x *float32, u *float32, n int)")
	Pragma("noescape")
	Doc("siluMul sets x[i] = silu(x[i]) * u[i] for n (a multiple of 8) floats.")
	g := Load(Param("x"), GP64())
	up := Load(Param("u"), GP64())
	n := Load(Param("n"), GP64())
	zero, x, v, t, u, w := YMM(), YMM(), YMM(), YMM(), YMM(), YMM()
	VXORPS(zero, zero, zero)
	Label("sm_loop")
	CMPQ(n, Imm(0))
	JE(LabelRef("sm_done"))
	VMOVUPS(Mem{Base: g}, x)
	VSUBPS(x, zero, v) // -g
	expPS(&ec, v, t, u, w)
	VADDPS(ec.one, v, v)
	VMULPS(Mem{Base: up}, x, x)
	VDIVPS(v, x, x)
	VMOVUPS(x, Mem{Base: g})
	ADDQ(Imm(32), g)
	ADDQ(Imm(32), up)
	SUBQ(Imm(8), n)
	JMP(LabelRef("sm_loop"))
	Label("sm_done")
	VZEROUPPER()
	RET()
}

// f32ToF16 converts n (a multiple of 8) floats to float16, rounding to
// nearest even (VCVTPS2PH mode 0), as quant.F32ToF16 does.
func f32ToF16() {
	TEXT("f32ToF16", NOSPLIT, "func(dst *uint16, src *float32, n int)")
	Pragma("noescape")
	Doc("f32ToF16 converts n (a multiple of 8) floats to float16, rounding to nearest even.")
	d := Load(Param("dst"), GP64())
	x := Load(Param("src"), GP64())
	n := Load(Param("n"), GP64())
	v := YMM()
	Label("fh_loop")
	CMPQ(n, Imm(0))
	JE(LabelRef("fh_done"))
	VMOVUPS(Mem{Base: x}, v)
	VCVTPS2PH(U8(0), v, Mem{Base: d})
	ADDQ(Imm(32), x)
	ADDQ(Imm(16), d)
	SUBQ(Imm(8), n)
	JMP(LabelRef("fh_loop"))
	Label("fh_done")
	VZEROUPPER()
	RET()
}

// attnAhead is how many positions ahead the grouped attention kernels
// prefetch keys and values: in decode the cache comes from DRAM (the
// weights streamed since the layer's last use evicted it). 32 is the
// distance that gave the least attention time (docs/cpu-notes.md).
const attnAhead = 32

// attnWidth is what the grouped attention kernels' generator needs of a
// register width: AVX2's 8 floats (attnScoresHG*, attnMixHG*) or AVX-512's
// 16 (attnScoresZG*, attnMixZG*, in attnz.go).
type attnWidth struct {
	suffix string // the kernels' names: attnScores<suffix>G<g>
	floats int    // floats a register
	vec    func() reg.VecVirtual
	// P and C are, per group size g (query heads sharing one KV head), the
	// positions attnScoresG keeps in flight (g*P accumulators + g query
	// chunks + 1 key chunk fit the registers) and the column chunks
	// attnMixG keeps per head (g*C accumulators + g weights + 1 value
	// chunk).
	P, C [5]int
	// mixUs are the chunk counts attnMixG takes a pass, widest first.
	mixUs func(C int) []int
	// sums reduces one head's u accumulators (one a position) and calls
	// store with each register of sums (lanes in position order) and its
	// byte offset in the head's scores.
	sums func(acc []reg.VecVirtual, store func(s reg.VecVirtual, off int))
	// maxInit fills the head's running-max slot (maxBytes at m) with
	// -Inf; maxFinal reduces it to the float it stores at dst.
	maxBytes int
	maxInit  func(m []Mem)
	maxFinal func(m, dst Mem)
}

// avx2Attn is attnWidth for AVX2's YMM registers.
var avx2Attn = attnWidth{
	suffix: "H", floats: 8, vec: YMM,
	P:     [5]int{0, 8, 4, 4, 2},
	C:     [5]int{0, 8, 4, 4, 2},
	mixUs: func(C int) []int { return []int{C, 1} },
	sums: func(acc []reg.VecVirtual, store func(s reg.VecVirtual, off int)) {
		switch len(acc) {
		case 1:
			s := XMM()
			VEXTRACTF128(U8(1), acc[0], s)
			VADDPS(s, acc[0].AsX(), s)
			VHADDPS(s, s, s)
			VHADDPS(s, s, s) // the sum in every lane
			store(s, 0)
		case 2:
			a, b := acc[0], acc[1]
			VHADDPS(b, a, a) // a01 a23 b01 b23 | a45 a67 b45 b67
			s := XMM()
			VEXTRACTF128(U8(1), a, s)
			VADDPS(s, a.AsX(), s)
			VHADDPS(s, s, s) // a b a b
			store(s, 0)
		default:
			for b := 0; b < len(acc)/4; b++ {
				store(reduce4x(acc[4*b:4*b+4], true), 16*b)
			}
		}
	},
	maxBytes: 16,
	maxInit: func(m []Mem) {
		ninf := GP32()
		MOVL(U32(0xff800000), ninf) // -Inf
		x := XMM()
		VMOVD(ninf, x)
		VPBROADCASTD(x, x)
		for _, a := range m {
			VMOVUPS(x, a)
		}
	},
	maxFinal: func(m, dst Mem) {
		x, y := XMM(), XMM()
		VMOVUPS(m, x)
		VPSHUFD(U8(0x4e), x, y)
		VMAXPS(y, x, x)
		VPSHUFD(U8(0xb1), x, y)
		VMAXPS(y, x, x)
		VMOVSS(x, dst)
	},
}

// attnScoresG writes, for the g query heads of one KV head (GQA), out_h[p]
// = q_h·k_p over npos float16 keys and mx[h] = max_p out_h[p] (q_h at
// q+h*n floats, out_h at out+h*ostride bytes): each key chunk is
// converted once and used by the g heads, so the keys are read and
// converted once per group, not once per head. P positions at a time (a
// head's P sums reduced together: w.sums), then one; each head's running
// max is kept in a stack slot. Keys attnAhead positions on, and the
// values (at v) of the positions being scored, are prefetched once per
// line as one run each, so that the values arrive during the scores and
// the softmax (a run rather than each row's lines, so that all P rows in
// flight are covered, not only the first 4 that rowAddr reaches:
// docs/cpu-notes.md).
func attnScoresG(g int, w attnWidth) {
	P, F := w.P[g], w.floats
	name := fmt.Sprintf("attnScores%sG%d", w.suffix, g)
	lp := func(l string) string { return name + "_" + l }
	TEXT(name, NOSPLIT, "func(q *float32, k *uint16, kstride int, n int, npos int, out *float32, ostride int, mx *float32, v *uint16)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s writes out_h[p] = q_h·k_p for the %d query heads of one KV head (q_h at q+h*n floats, out_h at out+h*ostride bytes), npos float16 keys kstride bytes apart, n a multiple of %d, and mx[h] = max_p out_h[p], prefetching the values of the same positions at v; see attnScoresG in _gen.", name, g, F))
	q := Load(Param("q"), GP64())
	k := Load(Param("k"), GP64())
	ks := Load(Param("kstride"), GP64())
	npos := Load(Param("npos"), GP64())
	out := Load(Param("out"), GP64())
	// pk and pv run through the keys attnAhead positions on and the
	// values of the positions being scored as one run each (the cache's
	// rows of one KV head are kstride = 2n bytes apart, back to back).
	pk := GP64()
	IMUL3Q(Imm(attnAhead), ks, pk)
	ADDQ(k, pk)
	pv := Load(Param("v"), GP64())
	nb := Load(Param("n"), GP64())
	SHLQ(U8(2), nb) // bytes of one head's query
	ks3, nb3 := GP64(), GP64()
	LEAQ(Mem{Base: ks, Index: ks, Scale: 2}, ks3)
	if g == 4 {
		LEAQ(Mem{Base: nb, Index: nb, Scale: 2}, nb3)
	}
	mloc := AllocLocal(w.maxBytes * g)
	mslot := func(h int) Mem { return mloc.Offset(w.maxBytes * h) }
	{
		slots := make([]Mem, g)
		for h := range slots {
			slots[h] = mslot(h)
		}
		w.maxInit(slots)
	}
	// outAddr puts out+h*ostride in a register.
	outAddr := func(h int) reg.GPVirtual {
		a := GP64()
		MOVQ(out, a)
		if h > 0 {
			s := Load(Param("ostride"), GP64())
			if h > 1 {
				IMUL3Q(Imm(uint64(h)), s, s)
			}
			ADDQ(s, a)
		}
		return a
	}
	U := 32 / F // chunks a line of float16 (32 floats)
	j, qp, kp := GP64(), GP64(), GP64()
	for _, u := range []int{P, 1} {
		acc := make([][]reg.VecVirtual, u) // [position][head]
		for r := range acc {
			acc[r] = make([]reg.VecVirtual, g)
			for h := range acc[r] {
				acc[r][h] = w.vec()
			}
		}
		qv := make([]reg.VecVirtual, g)
		for h := range qv {
			qv[h] = w.vec()
		}
		t := w.vec()
		lbl := lp(fmt.Sprintf("p%d", u))
		next := lp("p1")
		if u == 1 {
			next = lp("done")
		}
		Label(lbl)
		CMPQ(npos, Imm(uint64(u)))
		JB(LabelRef(next))
		for r := range acc {
			for _, a := range acc[r] {
				VXORPS(a, a, a)
			}
		}
		MOVQ(q, qp)
		MOVQ(k, kp)
		Load(Param("n"), j)
		var k4 reg.GPVirtual
		if u > 4 {
			k4 = GP64()
			LEAQ(Mem{Base: k, Index: ks, Scale: 4}, k4)
		}
		// A line of each row (32 floats) an iteration, then F at a time.
		for _, c := range []int{U, 1} {
			ul := fmt.Sprintf("%s_u%d", lbl, c)
			Label(ul)
			CMPQ(j, Imm(uint64(F*c)))
			JB(LabelRef(map[bool]string{true: lbl + "_u1", false: lbl + "_sums"}[c == U && U > 1]))
			if c == U {
				// a line of each for each row in flight
				for r := 0; r < u; r++ {
					PREFETCHT0(Mem{Base: pk, Disp: 64 * r})
					PREFETCHT0(Mem{Base: pv, Disp: 64 * r})
				}
				ADDQ(U32(uint32(64*u)), pk)
				ADDQ(U32(uint32(64*u)), pv)
			}
			for d := 0; d < c; d++ {
				for h := range qv {
					VMOVUPS(rowAddr(qp, nb, nb3, h, 4*F*d), qv[h])
				}
				for r := 0; r < u; r++ {
					base := kp
					if r >= 4 {
						base = k4
					}
					VCVTPH2PS(rowAddr(base, ks, ks3, r%4, 2*F*d), t)
					for h := range qv {
						VFMADD231PS(t, qv[h], acc[r][h])
					}
				}
			}
			ADDQ(Imm(uint64(4*F*c)), qp)
			ADDQ(Imm(uint64(2*F*c)), kp)
			if u > 4 {
				ADDQ(Imm(uint64(2*F*c)), k4)
			}
			SUBQ(Imm(uint64(F*c)), j)
			JMP(LabelRef(ul))
		}
		Label(lbl + "_sums")
		for h := 0; h < g; h++ {
			oa := outAddr(h)
			col := make([]reg.VecVirtual, u)
			for r := range col {
				col[r] = acc[r][h]
			}
			w.sums(col, func(s reg.VecVirtual, off int) {
				switch s.Size() {
				case 16:
					if u == 1 {
						VMOVSS(s, Mem{Base: oa, Disp: off})
					} else if u == 2 {
						VMOVQ(s, Mem{Base: oa, Disp: off})
					} else {
						VMOVUPS(s, Mem{Base: oa, Disp: off})
					}
				default:
					VMOVUPS(s, Mem{Base: oa, Disp: off})
				}
				VMAXPS(mslot(h), s, s)
				VMOVUPS(s, mslot(h))
			})
		}
		for r := 0; r < u; r++ {
			ADDQ(ks, k)
		}
		ADDQ(Imm(uint64(4*u)), out)
		SUBQ(Imm(uint64(u)), npos)
		JMP(LabelRef(lbl))
	}
	Label(lp("done"))
	mx := Load(Param("mx"), GP64())
	for h := 0; h < g; h++ {
		w.maxFinal(mslot(h), Mem{Base: mx, Disp: 4 * h})
	}
	VZEROUPPER()
	RET()
}

// attnMixG adds, for the g query heads of one KV head, y_h (n floats at
// y+h*n floats) += sum over npos positions of w_h[p]*v_p, w_h at
// w+h*wstride bytes, float16 values vstride bytes apart. Each value chunk
// is converted once for the g heads; w.mixUs column chunks a pass (C for
// AVX2: one cache line of values a position for C = 4), then fewer. Each
// output lane takes the same FMAs in the same order at every width.
func attnMixG(g int, aw attnWidth) {
	F := aw.floats
	name := fmt.Sprintf("attnMix%sG%d", aw.suffix, g)
	TEXT(name, NOSPLIT, "func(y *float32, w *float32, wstride int, v *uint16, vstride int, n int, npos int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s adds sum of w_h[p]*v_p over npos float16 positions vstride bytes apart to y_h for the %d query heads of one KV head (y_h at y+h*n floats, w_h at w+h*wstride bytes, n a multiple of %d); see attnMixG in _gen.", name, g, F))
	y := Load(Param("y"), GP64())
	v := Load(Param("v"), GP64())
	vs := Load(Param("vstride"), GP64())
	ws := Load(Param("wstride"), GP64())
	n := Load(Param("n"), GP64())
	nb, nb3, ws3 := GP64(), GP64(), GP64()
	MOVQ(n, nb)
	SHLQ(U8(2), nb)
	if g == 4 {
		LEAQ(Mem{Base: nb, Index: nb, Scale: 2}, nb3)
		LEAQ(Mem{Base: ws, Index: ws, Scale: 2}, ws3)
	}
	us := aw.mixUs(aw.C[g])
	p, wp, vp := GP64(), GP64(), GP64()
	for i, u := range us {
		acc := make([][]reg.VecVirtual, g) // [head][chunk]
		for h := range acc {
			acc[h] = make([]reg.VecVirtual, u)
			for c := range acc[h] {
				acc[h][c] = aw.vec()
			}
		}
		bc := make([]reg.VecVirtual, g)
		for h := range bc {
			bc[h] = aw.vec()
		}
		t := aw.vec()
		lbl := fmt.Sprintf("%s_c%d", name, u)
		next := name + "_done"
		if i+1 < len(us) {
			next = fmt.Sprintf("%s_c%d_chunk", name, us[i+1])
		}
		Label(lbl + "_chunk")
		CMPQ(n, Imm(uint64(F*u)))
		JB(LabelRef(next))
		for h := range acc {
			for c, a := range acc[h] {
				VMOVUPS(rowAddr(y, nb, nb3, h, 4*F*c), a)
			}
		}
		Load(Param("npos"), p)
		Load(Param("w"), wp)
		MOVQ(v, vp)
		pv := GP64() // the row attnAhead positions on
		IMUL3Q(Imm(attnAhead), vs, pv)
		ADDQ(v, pv)
		Label(lbl + "_pos")
		CMPQ(p, Imm(0))
		JE(LabelRef(lbl + "_store"))
		for l := 0; l < (2*F*u+63)/64; l++ {
			PREFETCHT0(Mem{Base: pv, Disp: 64 * l})
		}
		for h := range bc {
			VBROADCASTSS(rowAddr(wp, ws, ws3, h, 0), bc[h])
		}
		for c := 0; c < u; c++ {
			VCVTPH2PS(Mem{Base: vp, Disp: 2 * F * c}, t)
			for h := range bc {
				VFMADD231PS(t, bc[h], acc[h][c])
			}
		}
		ADDQ(Imm(4), wp)
		ADDQ(vs, vp)
		ADDQ(vs, pv)
		DECQ(p)
		JMP(LabelRef(lbl + "_pos"))
		Label(lbl + "_store")
		for h := range acc {
			for c, a := range acc[h] {
				VMOVUPS(a, rowAddr(y, nb, nb3, h, 4*F*c))
			}
		}
		ADDQ(U32(uint32(4*F*u)), y)
		ADDQ(U32(uint32(2*F*u)), v)
		SUBQ(Imm(uint64(F*u)), n)
		JMP(LabelRef(lbl + "_chunk"))
	}
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// streamAhead is how far ahead streamSum prefetches: as far as the
// AVX-512 kernels read ahead in their weights (prefetchAheadZ), so that
// bench's stream loop reads memory as the kernels do, not only as fast as
// a core's demand misses allow (docs/cpu-notes.md).
const streamAhead = 8192

// streamSum adds the 8-byte words of n128*128 bytes at p, mod 2^64: four
// YMM chains of VPADDQ, one line prefetched streamAhead bytes ahead per
// line read. It is the machine's stream loop in bench (kernels.StreamSum).
func streamSum() {
	TEXT("streamSum", NOSPLIT, "func(p *byte, n128 int) uint64")
	Pragma("noescape")
	Doc("streamSum adds the 8-byte words of n128*128 bytes at p; see _gen.")
	p := Load(Param("p"), GP64())
	n := Load(Param("n128"), GP64())
	acc := []reg.VecVirtual{YMM(), YMM(), YMM(), YMM()}
	for _, a := range acc {
		VPXOR(a, a, a)
	}
	Label("ss_loop")
	CMPQ(n, Imm(0))
	JE(LabelRef("ss_done"))
	PREFETCHT0(Mem{Base: p, Disp: streamAhead})
	PREFETCHT0(Mem{Base: p, Disp: streamAhead + 64})
	for k, a := range acc {
		VPADDQ(Mem{Base: p, Disp: 32 * k}, a, a)
	}
	ADDQ(Imm(128), p)
	DECQ(n)
	JMP(LabelRef("ss_loop"))
	Label("ss_done")
	VPADDQ(acc[1], acc[0], acc[0])
	VPADDQ(acc[3], acc[2], acc[2])
	VPADDQ(acc[2], acc[0], acc[0])
	h := XMM()
	VEXTRACTI128(U8(1), acc[0], h)
	VPADDQ(h, acc[0].AsX(), h)
	lo, hi := GP64(), GP64()
	VMOVQ(h, lo)
	VPEXTRQ(U8(1), h, hi)
	ADDQ(hi, lo)
	Store(lo, ReturnIndex(0))
	VZEROUPPER()
	RET()
}
