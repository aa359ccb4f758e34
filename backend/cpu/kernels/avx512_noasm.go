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
