//go:build !amd64 || noasm

package kernels

const (
	cpuAVX2    = false
	cpuAVXVNNI = false
)

// The assembly entry points do not exist in this build; useAVX2 is always
// false here, so these are never called.

func ternaryDot2(w *byte, stride int, act *int8, n128 int, tail int, dst *int32, groups int) {
	panic("kernels: no assembly in this build")
}

func ternaryDot1(w *byte, stride int, act *int8, n128 int, tail int, dst *int32, groups int) {
	panic("kernels: no assembly in this build")
}

func ternaryBlockDots(w *byte, act *int8, n128 int, tail int, dst *int32) {
	panic("kernels: no assembly in this build")
}

func int8Dot2g16(w *int8, stride int, sc *float32, sstride int, act *int8, nblk int, dst *float32, groups int) {
	panic("kernels: no assembly in this build")
}

func int8Dot1g16(w *int8, stride int, sc *float32, sstride int, act *int8, nblk int, dst *float32, groups int) {
	panic("kernels: no assembly in this build")
}

func f16Dot4(w *uint16, stride int, x *float32, n int, dst *float32, groups int) {
	panic("kernels: no assembly in this build")
}

func f16Dot1(w *uint16, stride int, x *float32, n int, dst *float32, groups int) {
	panic("kernels: no assembly in this build")
}

func absMax(x *float32, n int) (m float32, nan int) {
	panic("kernels: no assembly in this build")
}

func quantI8(x *float32, n int, scale float32, q *int8, bsum *int32) {
	panic("kernels: no assembly in this build")
}

func tlTiles(w *byte, tbl *byte, ncouple int, dst *int32, tiles int) {
	panic("kernels: no assembly in this build")
}

func ternaryDotT1(w *byte, stride int, act *int8, as int, n128 int, tail int, dst *int32, rows int) {
	panic("kernels: no assembly in this build")
}

func ternaryDotT2(w *byte, stride int, act *int8, as int, n128 int, tail int, dst *int32, rows int) {
	panic("kernels: no assembly in this build")
}

func ternaryDotT3(w *byte, stride int, act *int8, as int, n128 int, tail int, dst *int32, rows int) {
	panic("kernels: no assembly in this build")
}

func ternaryDotT4(w *byte, stride int, act *int8, as int, n128 int, tail int, dst *int32, rows int) {
	panic("kernels: no assembly in this build")
}

func int8DotT1g32(w *int8, stride int, sc *float32, sstride int, act *int8, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func int8DotT2g32(w *int8, stride int, sc *float32, sstride int, act *int8, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func int8DotT3g32(w *int8, stride int, sc *float32, sstride int, act *int8, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func int8DotT4g32(w *int8, stride int, sc *float32, sstride int, act *int8, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func int8DotT1h32(w *int8, stride int, sc *uint16, sstride int, act *int8, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func int8DotT2h32(w *int8, stride int, sc *uint16, sstride int, act *int8, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func int8DotT3h32(w *int8, stride int, sc *uint16, sstride int, act *int8, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func int8DotT4h32(w *int8, stride int, sc *uint16, sstride int, act *int8, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func attnScores(q *float32, k *float32, kstride int, n int, npos int, out *float32) float32 {
	panic("kernels: no assembly in this build")
}

func attnMix(y *float32, w *float32, v *float32, vstride int, n int, npos int) {
	panic("kernels: no assembly in this build")
}

func softmaxExp(x *float32, n int, scale float32, m float32) float32 {
	panic("kernels: no assembly in this build")
}

func siluMul(x *float32, u *float32, n int) {
	panic("kernels: no assembly in this build")
}

func attnScoresH(q *float32, k *uint16, kstride int, n int, npos int, out *float32) float32 {
	panic("kernels: no assembly in this build")
}

func attnMixH(y *float32, w *float32, v *uint16, vstride int, n int, npos int) {
	panic("kernels: no assembly in this build")
}

func f32ToF16(dst *uint16, src *float32, n int) {
	panic("kernels: no assembly in this build")
}

func attnScoresHG1(q *float32, k *uint16, kstride int, n int, npos int, out *float32, ostride int, mx *float32, v *uint16) {
	panic("kernels: no assembly in this build")
}

func attnScoresHG2(q *float32, k *uint16, kstride int, n int, npos int, out *float32, ostride int, mx *float32, v *uint16) {
	panic("kernels: no assembly in this build")
}

func attnScoresHG3(q *float32, k *uint16, kstride int, n int, npos int, out *float32, ostride int, mx *float32, v *uint16) {
	panic("kernels: no assembly in this build")
}

func attnScoresHG4(q *float32, k *uint16, kstride int, n int, npos int, out *float32, ostride int, mx *float32, v *uint16) {
	panic("kernels: no assembly in this build")
}

func attnMixHG1(y *float32, w *float32, wstride int, v *uint16, vstride int, n int, npos int) {
	panic("kernels: no assembly in this build")
}

func attnMixHG2(y *float32, w *float32, wstride int, v *uint16, vstride int, n int, npos int) {
	panic("kernels: no assembly in this build")
}

func attnMixHG3(y *float32, w *float32, wstride int, v *uint16, vstride int, n int, npos int) {
	panic("kernels: no assembly in this build")
}

func attnMixHG4(y *float32, w *float32, wstride int, v *uint16, vstride int, n int, npos int) {
	panic("kernels: no assembly in this build")
}

func ternaryDotS4(w *byte, stride int, act *int8, n128 int, tail int, rs *float32, sum *int32, inv *float32, dst *float32, groups int) {
	panic("kernels: no assembly in this build")
}

func int8DotV1h32(w *int8, stride int, sc *uint16, sstride int, act *int8, nblk int, inv *float32, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func int8DotT1g32V(w *int8, stride int, sc *float32, sstride int, act *int8, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func int8DotT1h32V(w *int8, stride int, sc *uint16, sstride int, act *int8, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func int8DotT2g32V(w *int8, stride int, sc *float32, sstride int, act *int8, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func int8DotT2h32V(w *int8, stride int, sc *uint16, sstride int, act *int8, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func int8DotT3g32V(w *int8, stride int, sc *float32, sstride int, act *int8, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func int8DotT3h32V(w *int8, stride int, sc *uint16, sstride int, act *int8, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func int8DotT4g32V(w *int8, stride int, sc *float32, sstride int, act *int8, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func int8DotT4h32V(w *int8, stride int, sc *uint16, sstride int, act *int8, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func int8DotV1h32V(w *int8, stride int, sc *uint16, sstride int, act *int8, nblk int, inv *float32, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func sumSquares(x *float32, n int, lanes *[16]float64) {
	panic("kernels: no assembly in this build")
}

func scaleMul(out *float32, x *float32, w *float32, n int, scale float32) {
	panic("kernels: no assembly in this build")
}

func streamSum(p *byte, n128 int) uint64 {
	panic("kernels: no assembly in this build")
}

func ternaryVecT1V(w *byte, stride int, act *int8, n128 int, tail int, rs *float32, sum *int32, inv *float32, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func ternaryVecS4V(w *byte, stride int, act *int8, n128 int, tail int, rs *float32, sum *int32, inv *float32, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func ternaryDotT2V(w *byte, stride int, act *int8, as int, n128 int, tail int, dst *int32, rows int) {
	panic("kernels: no assembly in this build")
}

func ternaryDotT3V(w *byte, stride int, act *int8, as int, n128 int, tail int, dst *int32, rows int) {
	panic("kernels: no assembly in this build")
}

func ternaryDotT4V(w *byte, stride int, act *int8, as int, n128 int, tail int, dst *int32, rows int) {
	panic("kernels: no assembly in this build")
}

func q4DotT1h32(w *byte, stride int, sc *uint16, sstride int, act *int8, bias *int32, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func q4DotT2h32(w *byte, stride int, sc *uint16, sstride int, act *int8, bias *int32, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func q4DotV1h32(w *byte, stride int, sc *uint16, sstride int, act *int8, bias *int32, nblk int, inv *float32, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func q4DotT1h32V(w *byte, stride int, sc *uint16, sstride int, act *int8, bias *int32, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func q4DotT2h32V(w *byte, stride int, sc *uint16, sstride int, act *int8, bias *int32, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func q4DotV1h32V(w *byte, stride int, sc *uint16, sstride int, act *int8, bias *int32, nblk int, inv *float32, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func nibbleBias(q *int8, n int, bias *int32) {
	panic("kernels: no assembly in this build")
}
