package kernels

// useAVX2 selects the assembly kernels; it starts as what the CPU offers.
var useAVX2 = cpuAVX2

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
