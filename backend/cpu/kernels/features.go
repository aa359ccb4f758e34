package kernels

// useAVX2 selects the assembly kernels; it starts as what the CPU offers.
var useAVX2 = cpuAVX2

// useAVX512 selects, within the assembly kernels, the AVX-512 VNNI ones
// where they exist (batched ternary and int8 group-32 products, decode
// attention); it starts
// as what the CPU offers. x/sys/cpu reads GODEBUG, so
// GODEBUG=cpu.avx512f=off (or cpu.avx512vnni=off) turns it off for a whole
// binary.
var useAVX512 = cpuAVX512

// useAVXVNNI selects the AVX-VNNI kernels (ternaryVec*V, ternaryDotT*V
// and the group-32 int8Dot*V) where the AVX-512 ones do not serve; it
// starts as what the CPU offers (GODEBUG=cpu.avxvnni=off turns it off).
var useAVXVNNI = cpuAVXVNNI

// AVX2 reports whether the assembly kernels are in use.
func AVX2() bool { return useAVX2 }

// SetAVX2 turns the assembly kernels on or off (tests force the pure-Go
// paths) and returns the previous setting. Turning them on has no effect
// where the CPU or the build lacks them. Not safe to call while kernels run.
func SetAVX2(on bool) (prev bool) {
	prev = useAVX2
	useAVX2 = on && cpuAVX2
	return prev
}

// AVX512 reports whether the AVX-512 VNNI kernels are in use: set, and the
// assembly kernels on (SetAVX2(false) turns them off too).
func AVX512() bool { return useAVX512 && useAVX2 }

// SetAVX512 turns the AVX-512 VNNI kernels on or off (off: their AVX2
// twins run) and returns the previous setting. Turning them on has no
// effect where the CPU (AVX-512 F, BW, VL and VNNI) or the build lacks
// them. Not safe to call while kernels run.
func SetAVX512(on bool) (prev bool) {
	prev = useAVX512
	useAVX512 = on && cpuAVX512
	return prev
}

// AVXVNNI reports whether the AVX-VNNI kernels are in use: set, and the
// assembly kernels on. Where the AVX-512 kernels are on too, those serve.
func AVXVNNI() bool { return useAVXVNNI && useAVX2 }

// SetAVXVNNI turns the AVX-VNNI kernels on or off (off: their AVX2 twins
// run) and returns the previous setting. Turning them on has no effect
// where the CPU or the build lacks them. Not safe to call while kernels
// run.
func SetAVXVNNI(on bool) (prev bool) {
	prev = useAVXVNNI
	useAVXVNNI = on && cpuAVXVNNI
	return prev
}

// Path names the kernel set the products run on now, fastest first:
// "avx512-vnni", "avx-vnni" (the AVX2 set with the AVX-VNNI ternary and
// group-32 int8 products), "avx2", or "go" (the pure-Go fallbacks).
func Path() string {
	switch {
	case AVX512():
		return "avx512-vnni"
	case AVXVNNI():
		return "avx-vnni"
	case AVX2():
		return "avx2"
	}
	return "go"
}

// maxZCols is the longest row the AVX-512 and AVX-VNNI ternary kernels
// take: their int32 lanes gain up to 2^16 per 128 weights (see
// ternaryDotBatchZ in _gen).
const maxZCols = 1 << 21

// avxvnniOn reports whether the AVX-VNNI kernels serve rows of cols
// weights (their int32 lanes gain as fast as the AVX-512 kernel's).
func avxvnniOn(cols int) bool { return AVXVNNI() && !avx512On(cols) && cols <= maxZCols }

// vnniOn reports whether the AVX-512 or the AVX-VNNI kernels serve rows of
// cols weights.
func vnniOn(cols int) bool { return avx512On(cols) || avxvnniOn(cols) }

// avx512On reports whether the AVX-512 kernels serve rows of cols weights.
func avx512On(cols int) bool { return AVX512() && cols <= maxZCols }
