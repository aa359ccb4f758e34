package cuda

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unsafe"
)

type nvrtcResult int32

// nvrtcAPI is the NVRTC subset we call; prototypes in the comments.
type nvrtcAPI struct {
	path string // the library that was opened

	// nvrtcResult nvrtcVersion(int *major, int *minor);
	nvrtcVersion func(major, minor *int32) nvrtcResult
	// const char *nvrtcGetErrorString(nvrtcResult result);
	nvrtcGetErrorString func(r nvrtcResult) *byte
	// nvrtcResult nvrtcCreateProgram(nvrtcProgram *prog, const char *src, const char *name,
	//     int numHeaders, const char * const *headers, const char * const *includeNames);
	nvrtcCreateProgram func(prog *uintptr, src, name string, numHeaders int32, headers, includeNames uintptr) nvrtcResult
	// nvrtcResult nvrtcDestroyProgram(nvrtcProgram *prog);
	nvrtcDestroyProgram func(prog *uintptr) nvrtcResult
	// nvrtcResult nvrtcCompileProgram(nvrtcProgram prog, int numOptions, const char * const *options);
	nvrtcCompileProgram func(prog uintptr, numOptions int32, options unsafe.Pointer) nvrtcResult
	// nvrtcResult nvrtcGetProgramLogSize(nvrtcProgram prog, size_t *logSizeRet);
	nvrtcGetProgramLogSize func(prog uintptr, n *uint64) nvrtcResult
	// nvrtcResult nvrtcGetProgramLog(nvrtcProgram prog, char *log);
	nvrtcGetProgramLog func(prog uintptr, log *byte) nvrtcResult
	// nvrtcResult nvrtcGetCUBINSize(nvrtcProgram prog, size_t *cubinSizeRet);
	nvrtcGetCUBINSize func(prog uintptr, n *uint64) nvrtcResult
	// nvrtcResult nvrtcGetCUBIN(nvrtcProgram prog, char *cubin);
	nvrtcGetCUBIN func(prog uintptr, cubin *byte) nvrtcResult
	// nvrtcResult nvrtcGetPTXSize(nvrtcProgram prog, size_t *ptxSizeRet);
	nvrtcGetPTXSize func(prog uintptr, n *uint64) nvrtcResult
	// nvrtcResult nvrtcGetPTX(nvrtcProgram prog, char *ptx);
	nvrtcGetPTX func(prog uintptr, ptx *byte) nvrtcResult
}

// NVRTCEnv names the environment variable that gives libnvrtc's full path.
const NVRTCEnv = "EDGELLM_NVRTC"

// nvrtcCandidates lists where libnvrtc is looked for, in order: the
// environment variable, the loader's default search under the usual sonames,
// the usual CUDA install directories, and pip's nvidia-cuda-nvrtc wheels.
func nvrtcCandidates() []string {
	var c []string
	if p := os.Getenv(NVRTCEnv); p != "" {
		c = append(c, p)
	}
	names := []string{"libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2"}
	c = append(c, names...)
	dirs := []string{"/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib64"}
	for _, pat := range []string{
		"/usr/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib",
		"/usr/local/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib",
		"/usr/local/lib/python3*/dist-packages/nvidia/cuda_nvrtc/lib",
		"/usr/lib/python3/dist-packages/nvidia/cuda_nvrtc/lib",
	} {
		m, _ := filepath.Glob(pat)
		dirs = append(dirs, m...)
	}
	if home, err := os.UserHomeDir(); err == nil {
		m, _ := filepath.Glob(filepath.Join(home, ".local/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib"))
		dirs = append(dirs, m...)
	}
	for _, d := range dirs {
		for _, n := range names {
			c = append(c, filepath.Join(d, n))
		}
	}
	return c
}

var (
	nvrtcOnce sync.Once
	nvrtcLib  *nvrtcAPI
	nvrtcErr  error
)

// loadNVRTC opens the first libnvrtc found and binds its symbols.
func loadNVRTC() (*nvrtcAPI, error) {
	nvrtcOnce.Do(func() {
		var h uintptr
		var path string
		var errs []string
		for _, p := range nvrtcCandidates() {
			hh, err := dlopen(p)
			if err == nil {
				h, path = hh, p
				break
			}
			if len(errs) < 3 {
				errs = append(errs, err.Error())
			}
		}
		if h == 0 {
			nvrtcErr = fmt.Errorf("cuda: libnvrtc not found (set %s to its full path; looked for libnvrtc.so{,.13,.12,.11.2} through the loader, in /usr/local/cuda/lib64, /usr/lib/x86_64-linux-gnu and pip's nvidia/cuda_nvrtc/lib): %s",
				NVRTCEnv, strings.Join(errs, "; "))
			return
		}
		n := &nvrtcAPI{path: path}
		syms := []struct {
			name string
			fptr any
		}{
			{"nvrtcVersion", &n.nvrtcVersion},
			{"nvrtcGetErrorString", &n.nvrtcGetErrorString},
			{"nvrtcCreateProgram", &n.nvrtcCreateProgram},
			{"nvrtcDestroyProgram", &n.nvrtcDestroyProgram},
			{"nvrtcCompileProgram", &n.nvrtcCompileProgram},
			{"nvrtcGetProgramLogSize", &n.nvrtcGetProgramLogSize},
			{"nvrtcGetProgramLog", &n.nvrtcGetProgramLog},
			{"nvrtcGetCUBINSize", &n.nvrtcGetCUBINSize},
			{"nvrtcGetCUBIN", &n.nvrtcGetCUBIN},
			{"nvrtcGetPTXSize", &n.nvrtcGetPTXSize},
			{"nvrtcGetPTX", &n.nvrtcGetPTX},
		}
		for _, s := range syms {
			if err := bindSymbol(h, path, s.name, s.fptr); err != nil {
				nvrtcErr = err
				return
			}
		}
		nvrtcLib = n
	})
	return nvrtcLib, nvrtcErr
}

// version returns NVRTC's version as major*1000+minor*10 (CUDA's style).
func (n *nvrtcAPI) version() int {
	var maj, min int32
	if n.nvrtcVersion(&maj, &min) != 0 {
		return 0
	}
	return int(maj)*1000 + int(min)*10
}

func (n *nvrtcAPI) errString(r nvrtcResult) string {
	return goString(n.nvrtcGetErrorString(r))
}

// compile compiles src to a CUBIN with the given options. On a compile
// error the NVRTC log is part of the error.
func (n *nvrtcAPI) compile(src, name string, opts []string) ([]byte, error) {
	return n.build(src, name, opts, "CUBIN", n.nvrtcGetCUBINSize, n.nvrtcGetCUBIN)
}

// ptx compiles src as compile does and returns the PTX NVRTC made on the
// way, the text ptxas turns into the CUBIN (for checks that a change of
// the source leaves the kernels' code alone).
func (n *nvrtcAPI) ptx(src, name string, opts []string) (string, error) {
	b, err := n.build(src, name, opts, "PTX", n.nvrtcGetPTXSize, n.nvrtcGetPTX)
	return strings.TrimRight(string(b), "\x00"), err
}

// build compiles src and returns one of its outputs (what), read by the
// size and get functions of that output.
func (n *nvrtcAPI) build(src, name string, opts []string, what string,
	size func(prog uintptr, n *uint64) nvrtcResult, get func(prog uintptr, out *byte) nvrtcResult) ([]byte, error) {
	var prog uintptr
	if r := n.nvrtcCreateProgram(&prog, src, name, 0, 0, 0); r != 0 {
		return nil, fmt.Errorf("cuda: nvrtcCreateProgram(%s): %s", name, n.errString(r))
	}
	defer n.nvrtcDestroyProgram(&prog)
	// NVRTC wants a C array of C strings: keep NUL-terminated copies alive.
	cstrs := make([][]byte, len(opts))
	ptrs := make([]*byte, len(opts))
	for i, o := range opts {
		cstrs[i] = append([]byte(o), 0)
		ptrs[i] = &cstrs[i][0]
	}
	var optp unsafe.Pointer
	if len(ptrs) > 0 {
		optp = unsafe.Pointer(&ptrs[0])
	}
	r := n.nvrtcCompileProgram(prog, int32(len(opts)), optp)
	var logN uint64
	var log string
	if n.nvrtcGetProgramLogSize(prog, &logN) == 0 && logN > 1 && logN < 1<<24 {
		buf := make([]byte, logN)
		if n.nvrtcGetProgramLog(prog, &buf[0]) == 0 {
			log = strings.TrimRight(string(buf), "\x00\n ")
		}
	}
	if r != 0 {
		return nil, fmt.Errorf("cuda: NVRTC compiling %s (%s): %s\n%s", name, strings.Join(opts, " "), n.errString(r), log)
	}
	var sz uint64
	if r := size(prog, &sz); r != 0 || sz == 0 || sz > 1<<28 {
		return nil, fmt.Errorf("cuda: nvrtcGet%sSize(%s): %s (size %d)", what, name, n.errString(r), sz)
	}
	out := make([]byte, sz)
	if r := get(prog, &out[0]); r != 0 {
		return nil, fmt.Errorf("cuda: nvrtcGet%s(%s): %s", what, name, n.errString(r))
	}
	return out, nil
}
