//go:build !amd64 || noasm

package kernels

const cpuAVX512 = false

// The AVX-512 entry points do not exist in this build; useAVX512 is always
// false here, so these are never called.

func ternaryVecT1Z(w *byte, stride int, act *int8, n128 int, tail int, rs *float32, sum *int32, inv *float32, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func ternaryVecS4Z(w *byte, stride int, act *int8, n128 int, tail int, rs *float32, sum *int32, inv *float32, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func ternaryDotT2Z(w *byte, stride int, act *int8, as int, n128 int, tail int, dst *int32, rows int) {
	panic("kernels: no assembly in this build")
}

func ternaryDotT3Z(w *byte, stride int, act *int8, as int, n128 int, tail int, dst *int32, rows int) {
	panic("kernels: no assembly in this build")
}

func ternaryDotT4Z(w *byte, stride int, act *int8, as int, n128 int, tail int, dst *int32, rows int) {
	panic("kernels: no assembly in this build")
}

func int8DotT1g32Z(w *int8, stride int, sc *float32, sstride int, act *int8, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func int8DotT1h32Z(w *int8, stride int, sc *uint16, sstride int, act *int8, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func int8DotT2g32Z(w *int8, stride int, sc *float32, sstride int, act *int8, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func int8DotT2h32Z(w *int8, stride int, sc *uint16, sstride int, act *int8, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func int8DotT3g32Z(w *int8, stride int, sc *float32, sstride int, act *int8, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func int8DotT3h32Z(w *int8, stride int, sc *uint16, sstride int, act *int8, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func int8DotT4g32Z(w *int8, stride int, sc *float32, sstride int, act *int8, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func int8DotT4h32Z(w *int8, stride int, sc *uint16, sstride int, act *int8, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func softmaxExpZ(x *float32, n int, scale float32, m float32) float32 {
	panic("kernels: no assembly in this build")
}

func attnScoresZG1(q *float32, k *uint16, kstride int, n int, npos int, out *float32, ostride int, mx *float32, v *uint16) {
	panic("kernels: no assembly in this build")
}

func attnMixZG1(y *float32, w *float32, wstride int, v *uint16, vstride int, n int, npos int) {
	panic("kernels: no assembly in this build")
}

func attnScoresZG2(q *float32, k *uint16, kstride int, n int, npos int, out *float32, ostride int, mx *float32, v *uint16) {
	panic("kernels: no assembly in this build")
}

func attnMixZG2(y *float32, w *float32, wstride int, v *uint16, vstride int, n int, npos int) {
	panic("kernels: no assembly in this build")
}

func attnScoresZG3(q *float32, k *uint16, kstride int, n int, npos int, out *float32, ostride int, mx *float32, v *uint16) {
	panic("kernels: no assembly in this build")
}

func attnMixZG3(y *float32, w *float32, wstride int, v *uint16, vstride int, n int, npos int) {
	panic("kernels: no assembly in this build")
}

func attnScoresZG4(q *float32, k *uint16, kstride int, n int, npos int, out *float32, ostride int, mx *float32, v *uint16) {
	panic("kernels: no assembly in this build")
}

func attnMixZG4(y *float32, w *float32, wstride int, v *uint16, vstride int, n int, npos int) {
	panic("kernels: no assembly in this build")
}

func q4DotT1h32Z(w *byte, stride int, sc *uint16, sstride int, act *int8, bias *int32, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func q4DotT2h32Z(w *byte, stride int, sc *uint16, sstride int, act *int8, bias *int32, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func q4DotT3h32Z(w *byte, stride int, sc *uint16, sstride int, act *int8, bias *int32, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func q4DotT4h32Z(w *byte, stride int, sc *uint16, sstride int, act *int8, bias *int32, as int, nblk int, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func int8DotV1h32Z(w *int8, stride int, sc *uint16, sstride int, act *int8, nblk int, inv *float32, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func q4DotV1h32Z(w *byte, stride int, sc *uint16, sstride int, act *int8, bias *int32, nblk int, inv *float32, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}

func q4DotV1h32S2Z(w *byte, stride int, sc *uint16, sstride int, act *int8, bias *int32, nblk int, inv *float32, dst *float32, rows int) {
	panic("kernels: no assembly in this build")
}
