//go:build amd64 && !noasm

package kernels

import "golang.org/x/sys/cpu"

// cpuAVX2: the kernels use AVX2 integer ops, FMA and F16C conversions.
var cpuAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA && cpu.X86.HasF16C

// cpuAVXVNNI: VEX-encoded VPDPBUSD on 256-bit registers (Intel Alder Lake
// and later client cores, AMD Zen 5), beside the AVX2 set; GODEBUG=
// cpu.avxvnni=off turns it off.
var cpuAVXVNNI = cpuAVX2 && cpu.X86.HasAVXVNNI

// cpuAVX512: the AVX-512 kernels use 512-bit integer byte ops (F, BW),
// EVEX forms of 128/256-bit ops on all 32 registers (VL) and VPDPBUSD
// (VNNI), beside the AVX2 set. Each can be switched off with GODEBUG, e.g.
// GODEBUG=cpu.avx512f=off.
var cpuAVX512 = cpuAVX2 && cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW &&
	cpu.X86.HasAVX512VL && cpu.X86.HasAVX512VNNI
