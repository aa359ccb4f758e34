//go:build !windows

package cuda

import "github.com/ebitengine/purego"

// dlopen and dlsym wrap the platform's dynamic loader (purego, no cgo).
func dlopen(name string) (uintptr, error) {
	return purego.Dlopen(name, purego.RTLD_NOW|purego.RTLD_GLOBAL)
}

func dlsym(h uintptr, name string) (uintptr, error) { return purego.Dlsym(h, name) }
