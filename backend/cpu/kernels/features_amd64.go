//go:build amd64 && !noasm

package kernels

import "golang.org/x/sys/cpu"

// cpuAVX2: the kernels use AVX2 integer ops, FMA and F16C conversions.
var cpuAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA && cpu.X86.HasF16C
