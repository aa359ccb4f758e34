package main

// The AVX-512 attention kernels: decode's scores, softmax and mix over the
// float16 KV cache, 16 floats a register instead of 8 (the grouped
// kernels are main.go's attnScoresG and attnMixG at this width). At
// SmolLM-135M's shapes the AVX2 ones spend most of a layer's attention on
// arithmetic, not on reading the cache (docs/cpu-notes.md).
//
// The mix and the exponentials give the AVX2 kernels' results bit for bit
// (each output lane takes the same operations in the same order); the
// scores and the softmax sum do not, as their horizontal sums add in
// another order (within the tests' float64 bounds).

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// softmaxExpZ is softmaxExp with 16 floats a register and four in flight
// (one exp is a long dependent chain; softmaxExp's two leave the AVX2 one
// waiting on it), then 16, then a last 8.
func softmaxExpZ() {
	TEXT("softmaxExpZ", NOSPLIT, "func(x *float32, n int, scale float32, m float32) float32")
	Pragma("noescape")
	Doc("softmaxExpZ is softmaxExp with AVX-512; see softmaxExpZ in _gen.")
	x := Load(Param("x"), GP64())
	n := Load(Param("n"), GP64())
	sc, m := ZMM(), ZMM()
	VBROADCASTSS(argAddr(Param("scale")), sc)
	VBROADCASTSS(argAddr(Param("m")), m)
	sum := []reg.VecVirtual{ZMM(), ZMM(), ZMM(), ZMM()}
	for _, r := range sum {
		VXORPS(r, r, r)
	}
	// the last 8's sum: a YMM write zeroes its register's upper half, so
	// it has its own, added whole at the end
	st := YMM()
	VXORPS(st, st, st)
	// body takes the vector at x+disp into v (a YMM or ZMM), as softmaxExp.
	body := func(v, sum reg.VecVirtual, disp int) {
		t, u, w, keep := ZMM(), ZMM(), ZMM(), K()
		if v.Size() == 32 {
			t, u, w = YMM(), YMM(), YMM()
		}
		VMOVUPS(Mem{Base: x, Disp: disp}, v)
		if v.Size() == 32 {
			VMULPS(sc.AsY(), v, v)
			VSUBPS(m.AsY(), v, v)
		} else {
			VMULPS(sc, v, v)
			VSUBPS(m, v, v)
		}
		VCMPPS_BCST(U8(13), zec.flush, v, keep) // v >= -64 (ordered)
		expPS(&zec, v, t, u, w)
		VMOVAPS_Z(v, keep, v) // flushed to exactly 0, as softmaxExp
		VMOVUPS(v, Mem{Base: x, Disp: disp})
		VADDPS(v, sum, sum)
	}
	// four vectors a pass while 64 floats remain, then one
	for _, k := range []int{4, 1} {
		next := map[int]string{4: "sez_loop1", 1: "sez_tail"}[k]
		Label(fmt.Sprintf("sez_loop%d", k))
		CMPQ(n, Imm(uint64(16*k)))
		JB(LabelRef(next))
		for i := range k {
			body(ZMM(), sum[i], 64*i)
		}
		ADDQ(U32(uint32(64*k)), x)
		SUBQ(Imm(uint64(16*k)), n)
		JMP(LabelRef(fmt.Sprintf("sez_loop%d", k)))
	}
	Label("sez_tail")
	CMPQ(n, Imm(0))
	JE(LabelRef("sez_done"))
	body(YMM(), st, 0)
	Label("sez_done")
	VADDPS(st.AsZ(), sum[0], sum[0])
	VADDPS(sum[1], sum[0], sum[0])
	VADDPS(sum[3], sum[2], sum[2])
	VADDPS(sum[2], sum[0], sum[0])
	VMOVSS(hsumZx(sum[0], true), argAddr(ReturnIndex(0)))
	VZEROUPPER()
	RET()
}

// reduceZ sums each of the ZMM registers a (4 or 8 of them) and returns
// the register whose lanes 0..len(a)-1 hold the sums in order (an XMM for
// 4, a YMM for 8): four levels of shuffles and adds, each pairing two
// registers' halves (128-bit lanes, then floats within them), and a final
// permutation. The generator follows every lane's source to find that
// permutation and to check that each sum has all 16 of its lanes.
func reduceZ(a []reg.VecVirtual) reg.VecVirtual {
	type lane struct{ src, parts int }
	type vec struct {
		r reg.VecVirtual
		l [16]lane
	}
	vs := make([]vec, len(a))
	for i, r := range a {
		vs[i].r = r
		for j := range vs[i].l {
			vs[i].l[j] = lane{i, 1}
		}
	}
	// pick returns the source lane of dst lane j for a shuffle of x and y
	// by imm: 128-bit lanes (wide) or floats within each 128-bit lane.
	pick := func(x, y *vec, imm uint8, wide bool, j int) lane {
		if wide {
			q, e := j/4, j%4
			from := x
			if q >= 2 {
				from = y
			}
			return from.l[4*int(imm>>(2*q)&3)+e]
		}
		q, e := j/4, j%4
		from := x
		if e >= 2 {
			from = y
		}
		return from.l[4*q+int(imm>>(2*e)&3)]
	}
	levels := []struct {
		lo, hi uint8
		wide   bool
	}{{0x44, 0xee, true}, {0x88, 0xdd, true}, {0x44, 0xee, false}, {0x88, 0xdd, false}}
	for _, lv := range levels {
		var next []vec
		for i := 0; i < len(vs); i += 2 {
			x, y := &vs[i], &vs[i]
			if i+1 < len(vs) {
				y = &vs[i+1]
			}
			lo, hi := ZMM(), ZMM()
			if lv.wide {
				VSHUFF32X4(U8(lv.lo), y.r, x.r, lo)
				VSHUFF32X4(U8(lv.hi), y.r, x.r, hi)
			} else {
				VSHUFPS(U8(lv.lo), y.r, x.r, lo)
				VSHUFPS(U8(lv.hi), y.r, x.r, hi)
			}
			VADDPS(hi, lo, lo)
			var nv vec
			nv.r = lo
			for j := range nv.l {
				p, q := pick(x, y, lv.lo, lv.wide, j), pick(x, y, lv.hi, lv.wide, j)
				if p.src != q.src {
					panic("reduceZ: lanes of two sources added")
				}
				nv.l[j] = lane{p.src, p.parts + q.parts}
			}
			next = append(next, nv)
		}
		vs = next
	}
	if len(vs) != 1 {
		panic("reduceZ: more than 8 registers")
	}
	var idx [16]uint32
	for s := range a {
		found := false
		for j, l := range vs[0].l {
			if l.src == s {
				if l.parts != 16 {
					panic("reduceZ: a sum short of its lanes")
				}
				idx[s], found = uint32(j), true
				break
			}
		}
		if !found {
			panic("reduceZ: a sum lost")
		}
	}
	r := vs[0].r
	name := fmt.Sprintf("z_reduce%d", len(a))
	c, ok := reducePerms[name]
	if !ok {
		c = zconst(name, idx)
		reducePerms[name] = c
	}
	perm := ZMM()
	VMOVDQU32(c, perm)
	VPERMPS(r, perm, r)
	if len(a) == 4 {
		return r.AsX().(reg.VecVirtual)
	}
	return r.AsY().(reg.VecVirtual)
}

// reducePerms holds reduceZ's permutations, declared once each.
var reducePerms = map[string]Mem{}

// avx512Attn is attnWidth for AVX-512's ZMM registers: 32 of them hold
// 8 positions of 3 heads in flight (SmolLM's grouping), and a 64-float head
// goes through attnMixG in one pass.
var avx512Attn = attnWidth{
	suffix: "Z", floats: 16, vec: ZMM,
	P: [5]int{0, 8, 8, 8, 4},
	C: [5]int{0, 8, 8, 8, 4},
	mixUs: func(C int) []int {
		us := []int{C}
		for _, u := range []int{4, 2, 1} {
			if u < C {
				us = append(us, u)
			}
		}
		return us
	},
	sums: func(acc []reg.VecVirtual, store func(s reg.VecVirtual, off int)) {
		if len(acc) == 1 {
			s := hsumZx(acc[0], true)
			VBROADCASTSS(s, s) // the sum in every lane, for the running max
			store(s, 0)
			return
		}
		store(reduceZ(acc), 0)
	},
	maxBytes: 64,
	maxInit: func(m []Mem) {
		ninf := GP32()
		MOVL(U32(0xff800000), ninf) // -Inf
		z := ZMM()
		VPBROADCASTD(ninf, z)
		for _, a := range m {
			VMOVUPS(z, a)
		}
	},
	maxFinal: func(m, dst Mem) {
		z := ZMM()
		VMOVUPS(m, z)
		VMOVSS(foldZx(z, true, VMAXPS), dst)
	},
}
