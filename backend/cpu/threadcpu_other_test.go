//go:build !linux

package cpu

func threadCPU() float64 { return 0 }

func threadFaults() (minor, major, invol int64) { return 0, 0, 0 }
