//go:build !linux

package cpu

func threadCPU() float64 { return 0 }
