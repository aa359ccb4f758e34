package quant

import "math"

// K-quants (ggml's "super-blocks" of 256 weights).
//
// Q6_K (block_q6_K, 210 bytes): ql[128] low 4 bits, qh[64] high 2 bits,
// scales[16] int8 (one per 16 weights), then fp16 d. Each 128-weight half
// uses 64 bytes of ql and 32 of qh: for l in 0..31, weights l, l+32, l+64,
// l+96 take ql[l]&15, ql[l+32]&15, ql[l]>>4, ql[l+32]>>4 as low bits and
// qh[l] bits 0-1, 2-3, 4-5, 6-7 as high bits; weight = d*scale*(q-32).
//
// Q4_K (block_q4_K, 144 bytes): fp16 d, fp16 dmin, scales[12] holding eight
// 6-bit scales and eight 6-bit mins, qs[128]. Each 64-weight chunk c uses
// 32 bytes of qs: low nibbles are weights 0..31 (sub-block 2c), high
// nibbles weights 32..63 (sub-block 2c+1); weight = d*sc*q - dmin*m.

const (
	q6kBlock = 210
	q4kBlock = 144
)

func dequantQ6_K(dst []float32, src []byte) {
	for i := 0; i < len(dst)/256; i++ {
		b := src[i*q6kBlock : (i+1)*q6kBlock]
		d := f16At(b, 208)
		y := dst[i*256 : i*256+256]
		for h := 0; h < 2; h++ {
			ql := b[64*h : 64*h+64]
			qh := b[128+32*h : 128+32*h+32]
			sc := b[192+8*h : 192+8*h+8]
			yh := y[128*h : 128*h+128]
			for l := 0; l < 32; l++ {
				is := l / 16
				q1 := int(ql[l]&0xf|(qh[l]&3)<<4) - 32
				q2 := int(ql[l+32]&0xf|(qh[l]>>2&3)<<4) - 32
				q3 := int(ql[l]>>4|(qh[l]>>4&3)<<4) - 32
				q4 := int(ql[l+32]>>4|(qh[l]>>6&3)<<4) - 32
				yh[l] = d * float32(int8(sc[is])) * float32(q1)
				yh[l+32] = d * float32(int8(sc[is+2])) * float32(q2)
				yh[l+64] = d * float32(int8(sc[is+4])) * float32(q3)
				yh[l+96] = d * float32(int8(sc[is+6])) * float32(q4)
			}
		}
	}
}

// nearestInt rounds half to even, as ggml's nearest_int float trick does.
func nearestInt(f float32) int { return int(math.RoundToEven(float64(f))) }

// makeQxQuants is ggml's make_qx_quants with rmse_type 1 and no importance
// weights: start from the absmax scale -nmax/max, then try 18 nearby scales
// and keep the one minimising the x²-weighted squared error. It writes codes
// L[i] in 0..2*nmax-1 and returns the scale.
func makeQxQuants(nmax int, x []float32, L []int8) float32 {
	var mx, amax float32
	for _, v := range x {
		if a := float32(math.Abs(float64(v))); a > amax {
			amax, mx = a, v
		}
	}
	if amax < 1e-15 {
		for i := range L[:len(x)] {
			L[i] = 0
		}
		return 0
	}
	fit := func(iscale float32, store bool) (sumlx, suml2 float32) {
		for i, v := range x {
			l := min(nmax-1, max(-nmax, nearestInt(iscale*v)))
			if store {
				L[i] = int8(l + nmax)
			}
			w := v * v
			sumlx += w * v * float32(l)
			suml2 += w * float32(l) * float32(l)
		}
		return
	}
	iscale := float32(-nmax) / mx
	sumlx, suml2 := fit(iscale, true)
	var scale float32
	if suml2 != 0 {
		scale = sumlx / suml2
	}
	best := scale * sumlx
	for is := -9; is <= 9; is++ {
		if is == 0 {
			continue
		}
		iscale = -(float32(nmax) + 0.1*float32(is)) / mx
		sumlx, suml2 = fit(iscale, false)
		if suml2 > 0 && sumlx*sumlx > best*suml2 {
			fit(iscale, true)
			scale = sumlx / suml2
			best = scale * sumlx
		}
	}
	return scale
}

// quantQ6_K follows ggml's quantize_row_q6_K_ref: a scale per 16 weights by
// makeQxQuants, the scales themselves quantized to int8 against the largest,
// then the codes recomputed against the rounded scales.
func quantQ6_K(dst []byte, src []float32) {
	var L [256]int8
	var scales [16]float32
	for i := 0; i < len(src)/256; i++ {
		x := src[i*256 : i*256+256]
		b := dst[i*q6kBlock : (i+1)*q6kBlock]
		var maxScale, maxAbs float32
		for ib := 0; ib < 16; ib++ {
			s := makeQxQuants(32, x[16*ib:16*ib+16], L[16*ib:16*ib+16])
			scales[ib] = s
			if a := float32(math.Abs(float64(s))); a > maxAbs {
				maxAbs, maxScale = a, s
			}
		}
		if maxAbs < 1e-15 {
			clear(b)
			continue
		}
		iscale := -128 / maxScale
		putF16(b, 208, 1/iscale)
		for ib := 0; ib < 16; ib++ {
			b[192+ib] = byte(int8(min(127, nearestInt(iscale*scales[ib]))))
		}
		dd := f16At(b, 208)
		for j := 0; j < 16; j++ {
			d := dd * float32(int8(b[192+j]))
			if d == 0 {
				continue
			}
			for ii := 0; ii < 16; ii++ {
				l := min(31, max(-32, nearestInt(x[16*j+ii]/d)))
				L[16*j+ii] = int8(l + 32)
			}
		}
		for h := 0; h < 2; h++ {
			ql := b[64*h : 64*h+64]
			qh := b[128+32*h : 128+32*h+32]
			Lh := L[128*h : 128*h+128]
			for l := 0; l < 32; l++ {
				q1, q2, q3, q4 := byte(Lh[l]), byte(Lh[l+32]), byte(Lh[l+64]), byte(Lh[l+96])
				ql[l] = q1&0xf | (q3&0xf)<<4
				ql[l+32] = q2&0xf | (q4&0xf)<<4
				qh[l] = q1>>4 | (q2>>4)<<2 | (q3>>4)<<4 | (q4>>4)<<6
			}
		}
	}
}

// q4kScaleMin unpacks the j-th 6-bit scale and min of a Q4_K block: the
// first four sit in the low 6 bits of bytes j and j+4; the last four take
// their low 4 bits from byte j+4 and their top 2 bits from the spare top
// bits of bytes j-4 (scale) and j (min).
func q4kScaleMin(j int, q []byte) (sc, m byte) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	return q[j+4]&0xf | (q[j-4]>>6)<<4, q[j+4]>>4 | (q[j]>>6)<<4
}

func dequantQ4_K(dst []float32, src []byte) {
	for i := 0; i < len(dst)/256; i++ {
		b := src[i*q4kBlock : (i+1)*q4kBlock]
		d, dmin := f16At(b, 0), f16At(b, 2)
		scales := b[4:16]
		for c := 0; c < 4; c++ {
			qs := b[16+32*c : 16+32*c+32]
			sc1, m1 := q4kScaleMin(2*c, scales)
			sc2, m2 := q4kScaleMin(2*c+1, scales)
			d1, o1 := d*float32(sc1), dmin*float32(m1)
			d2, o2 := d*float32(sc2), dmin*float32(m2)
			y := dst[i*256+64*c : i*256+64*c+64]
			for l := 0; l < 32; l++ {
				y[l] = d1*float32(qs[l]&0xf) - o1
				y[l+32] = d2*float32(qs[l]>>4) - o2
			}
		}
	}
}
