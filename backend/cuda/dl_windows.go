//go:build windows

package cuda

import "errors"

// The CUDA backend loads libcuda and libnvrtc the Unix way; on Windows it
// reports itself unavailable and the engine uses the CPU.
var errNoDL = errors.New("cuda: the CUDA backend is not supported on Windows yet")

func dlopen(string) (uintptr, error)         { return 0, errNoDL }
func dlsym(uintptr, string) (uintptr, error) { return 0, errNoDL }
