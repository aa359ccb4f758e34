package cuda

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// The driver API subset we call. Handles are opaque pointers (uintptr);
// device pointers are CUdeviceptr (unsigned long long). Each binding's C
// prototype is in its comment.
type cuResult int32

type driverAPI struct {
	lib uintptr

	// CUresult cuInit(unsigned int Flags);
	cuInit func(flags uint32) cuResult
	// CUresult cuDriverGetVersion(int *driverVersion);
	cuDriverGetVersion func(v *int32) cuResult
	// CUresult cuDeviceGetCount(int *count);
	cuDeviceGetCount func(n *int32) cuResult
	// CUresult cuDeviceGet(CUdevice *device, int ordinal);
	cuDeviceGet func(dev *int32, ordinal int32) cuResult
	// CUresult cuDeviceGetName(char *name, int len, CUdevice dev);
	cuDeviceGetName func(name *byte, n int32, dev int32) cuResult
	// CUresult cuDeviceGetAttribute(int *pi, CUdevice_attribute attrib, CUdevice dev);
	cuDeviceGetAttribute func(v *int32, attr int32, dev int32) cuResult
	// CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev);
	cuDeviceTotalMem func(bytes *uint64, dev int32) cuResult
	// CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev);
	cuDevicePrimaryCtxRetain func(ctx *uintptr, dev int32) cuResult
	// CUresult cuDevicePrimaryCtxSetFlags_v2(CUdevice dev, unsigned int flags);  (optional)
	cuDevicePrimaryCtxSetFlags func(dev int32, flags uint32) cuResult
	// CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev);
	cuDevicePrimaryCtxRelease func(dev int32) cuResult
	// CUresult cuCtxSetCurrent(CUcontext ctx);
	cuCtxSetCurrent func(ctx uintptr) cuResult
	// CUresult cuModuleLoadData(CUmodule *module, const void *image);
	cuModuleLoadData func(mod *uintptr, image unsafe.Pointer) cuResult
	// CUresult cuModuleUnload(CUmodule hmod);
	cuModuleUnload func(mod uintptr) cuResult
	// CUresult cuModuleGetFunction(CUfunction *hfunc, CUmodule hmod, const char *name);
	cuModuleGetFunction func(fn *uintptr, mod uintptr, name string) cuResult
	// CUresult cuFuncSetAttribute(CUfunction hfunc, CUfunction_attribute attrib, int value);
	cuFuncSetAttribute func(fn uintptr, attr int32, v int32) cuResult
	// CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize);
	cuMemAlloc func(p *uint64, n uint64) cuResult
	// CUresult cuMemGetInfo_v2(size_t *free, size_t *total);
	cuMemGetInfo func(free, total *uint64) cuResult
	// CUresult cuMemFree_v2(CUdeviceptr dptr);
	cuMemFree func(p uint64) cuResult
	// CUresult cuMemHostAlloc(void **pp, size_t bytesize, unsigned int Flags);
	cuMemHostAlloc func(pp *unsafe.Pointer, n uint64, flags uint32) cuResult
	// CUresult cuMemFreeHost(void *p);
	cuMemFreeHost func(p unsafe.Pointer) cuResult
	// CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n);
	cuMemcpyHtoD func(dst uint64, src unsafe.Pointer, n uint64) cuResult
	// CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n);
	cuMemcpyDtoH func(dst unsafe.Pointer, src uint64, n uint64) cuResult
	// CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, CUstream s);
	cuMemcpyHtoDAsync func(dst uint64, src unsafe.Pointer, n uint64, s uintptr) cuResult
	// CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, CUstream s);
	cuMemcpyDtoHAsync func(dst unsafe.Pointer, src uint64, n uint64, s uintptr) cuResult
	// CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s);
	cuMemcpyDtoDAsync func(dst, src uint64, n uint64, s uintptr) cuResult
	// CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char uc, size_t n, CUstream s);
	cuMemsetD8Async func(dst uint64, v uint8, n uint64, s uintptr) cuResult
	// CUresult cuStreamCreate(CUstream *phStream, unsigned int Flags);
	cuStreamCreate func(s *uintptr, flags uint32) cuResult
	// CUresult cuStreamDestroy_v2(CUstream hStream);
	cuStreamDestroy func(s uintptr) cuResult
	// CUresult cuStreamSynchronize(CUstream hStream);
	cuStreamSynchronize func(s uintptr) cuResult
	// CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz,
	//     unsigned bx, unsigned by, unsigned bz, unsigned sharedMemBytes,
	//     CUstream hStream, void **kernelParams, void **extra);
	cuLaunchKernel func(f uintptr, gx, gy, gz, bx, by, bz, smem uint32, s uintptr, params unsafe.Pointer, extra uintptr) cuResult
	// CUresult cuLaunchKernelEx(const CUlaunchConfig *config, CUfunction f,
	//     void **kernelParams, void **extra);   (CUDA 12+; nil when absent)
	cuLaunchKernelEx func(cfg unsafe.Pointer, f uintptr, params unsafe.Pointer, extra uintptr) cuResult
	// CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int *numBlocks, CUfunction func,
	//     int blockSize, size_t dynamicSMemSize);
	cuOccupancyMaxActiveBlocksPerMultiprocessor func(n *int32, f uintptr, block int32, smem uint64) cuResult
	// CUresult cuEventCreate(CUevent *phEvent, unsigned int Flags);
	cuEventCreate func(e *uintptr, flags uint32) cuResult
	// CUresult cuEventRecord(CUevent hEvent, CUstream hStream);
	cuEventRecord func(e uintptr, s uintptr) cuResult
	// CUresult cuEventSynchronize(CUevent hEvent);
	cuEventSynchronize func(e uintptr) cuResult
	// CUresult cuEventElapsedTime(float *pMilliseconds, CUevent hStart, CUevent hEnd);
	cuEventElapsedTime func(ms *float32, start, end uintptr) cuResult
	// CUresult cuEventDestroy_v2(CUevent hEvent);
	cuEventDestroy func(e uintptr) cuResult
	// CUresult cuStreamBeginCapture_v2(CUstream hStream, CUstreamCaptureMode mode);
	cuStreamBeginCapture func(s uintptr, mode int32) cuResult
	// CUresult cuStreamEndCapture(CUstream hStream, CUgraph *phGraph);
	cuStreamEndCapture func(s uintptr, g *uintptr) cuResult
	// CUresult cuGraphInstantiateWithFlags(CUgraphExec *phGraphExec, CUgraph hGraph, unsigned long long flags);
	cuGraphInstantiateWithFlags func(exec *uintptr, g uintptr, flags uint64) cuResult
	// CUresult cuGraphLaunch(CUgraphExec hGraphExec, CUstream hStream);
	cuGraphLaunch func(exec uintptr, s uintptr) cuResult
	// CUresult cuGraphExecDestroy(CUgraphExec hGraphExec);
	cuGraphExecDestroy func(exec uintptr) cuResult
	// CUresult cuGraphDestroy(CUgraph hGraph);
	cuGraphDestroy func(g uintptr) cuResult
	// CUresult cuGetErrorName(CUresult error, const char **pStr);
	cuGetErrorName func(r cuResult, s **byte) cuResult
}

// launchConfig mirrors CUlaunchConfig (56 bytes on 64-bit).
type launchConfig struct {
	gridX, gridY, gridZ    uint32
	blockX, blockY, blockZ uint32
	smem                   uint32
	_                      uint32
	stream                 uintptr
	attrs                  *launchAttr
	numAttrs               uint32
	_                      uint32
}

// launchAttr mirrors CUlaunchAttribute: an id, padding, a 64-byte union.
type launchAttr struct {
	id  uint32
	_   uint32
	val [64]byte
}

// CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION: the kernel may
// start before the previous one in the stream ends (it waits in
// griddepcontrol.wait), hiding launch latency.
const launchAttrProgrammaticSerialization = 6

// Device attribute ids (CUdevice_attribute).
const (
	attrMultiprocessorCount = 16
	attrComputeCapMajor     = 75
	attrComputeCapMinor     = 76
	attrMaxSharedPerBlockOp = 97 // opt-in maximum shared memory per block
)

const (
	funcAttrMaxDynamicShared = 8 // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
	captureModeThreadLocal   = 1 // CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
	streamNonBlocking        = 1 // CU_STREAM_NON_BLOCKING
	eventDefault             = 0
	hostAllocPortable        = 1 // CU_MEMHOSTALLOC_PORTABLE
	ctxSchedSpin             = 1 // CU_CTX_SCHED_SPIN
)

// driverLibName is found by the dynamic loader's own search: the driver
// installs it in the system library path, and only the driver's copy matches
// the kernel module, so we never look elsewhere.
const driverLibName = "libcuda.so.1"

var (
	drvOnce sync.Once
	drv     *driverAPI
	drvErr  error
)

// loadDriver opens libcuda once and resolves every symbol we use. A missing
// library or symbol is an error naming what was looked for.
func loadDriver() (*driverAPI, error) {
	drvOnce.Do(func() {
		h, err := dlopen(driverLibName)
		if err != nil {
			drvErr = fmt.Errorf("cuda: NVIDIA driver library %s not found by the dynamic loader (is the NVIDIA driver installed?): %w", driverLibName, err)
			return
		}
		d := &driverAPI{lib: h}
		syms := []struct {
			name string
			fptr any
		}{
			{"cuInit", &d.cuInit},
			{"cuDriverGetVersion", &d.cuDriverGetVersion},
			{"cuDeviceGetCount", &d.cuDeviceGetCount},
			{"cuDeviceGet", &d.cuDeviceGet},
			{"cuDeviceGetName", &d.cuDeviceGetName},
			{"cuDeviceGetAttribute", &d.cuDeviceGetAttribute},
			{"cuDeviceTotalMem_v2", &d.cuDeviceTotalMem},
			{"cuDevicePrimaryCtxRetain", &d.cuDevicePrimaryCtxRetain},
			{"cuDevicePrimaryCtxRelease_v2", &d.cuDevicePrimaryCtxRelease},
			{"cuCtxSetCurrent", &d.cuCtxSetCurrent},
			{"cuModuleLoadData", &d.cuModuleLoadData},
			{"cuModuleUnload", &d.cuModuleUnload},
			{"cuModuleGetFunction", &d.cuModuleGetFunction},
			{"cuFuncSetAttribute", &d.cuFuncSetAttribute},
			{"cuMemAlloc_v2", &d.cuMemAlloc},
			{"cuMemFree_v2", &d.cuMemFree},
			{"cuMemGetInfo_v2", &d.cuMemGetInfo},
			{"cuMemHostAlloc", &d.cuMemHostAlloc},
			{"cuMemFreeHost", &d.cuMemFreeHost},
			{"cuMemcpyHtoD_v2", &d.cuMemcpyHtoD},
			{"cuMemcpyDtoH_v2", &d.cuMemcpyDtoH},
			{"cuMemcpyHtoDAsync_v2", &d.cuMemcpyHtoDAsync},
			{"cuMemcpyDtoHAsync_v2", &d.cuMemcpyDtoHAsync},
			{"cuMemcpyDtoDAsync_v2", &d.cuMemcpyDtoDAsync},
			{"cuMemsetD8Async", &d.cuMemsetD8Async},
			{"cuStreamCreate", &d.cuStreamCreate},
			{"cuStreamDestroy_v2", &d.cuStreamDestroy},
			{"cuStreamSynchronize", &d.cuStreamSynchronize},
			{"cuLaunchKernel", &d.cuLaunchKernel},
			{"cuOccupancyMaxActiveBlocksPerMultiprocessor", &d.cuOccupancyMaxActiveBlocksPerMultiprocessor},
			{"cuEventCreate", &d.cuEventCreate},
			{"cuEventRecord", &d.cuEventRecord},
			{"cuEventSynchronize", &d.cuEventSynchronize},
			{"cuEventElapsedTime", &d.cuEventElapsedTime},
			{"cuEventDestroy_v2", &d.cuEventDestroy},
			{"cuStreamBeginCapture_v2", &d.cuStreamBeginCapture},
			{"cuStreamEndCapture", &d.cuStreamEndCapture},
			{"cuGraphInstantiateWithFlags", &d.cuGraphInstantiateWithFlags},
			{"cuGraphLaunch", &d.cuGraphLaunch},
			{"cuGraphExecDestroy", &d.cuGraphExecDestroy},
			{"cuGraphDestroy", &d.cuGraphDestroy},
			{"cuGetErrorName", &d.cuGetErrorName},
		}
		for _, s := range syms {
			if err := bindSymbol(h, driverLibName, s.name, s.fptr); err != nil {
				drvErr = err
				return
			}
		}
		if addr, err := dlsym(h, "cuDevicePrimaryCtxSetFlags_v2"); err == nil && addr != 0 {
			purego.RegisterFunc(&d.cuDevicePrimaryCtxSetFlags, addr)
		}
		// Optional: without it (drivers before CUDA 12) launches are plain.
		if addr, err := dlsym(h, "cuLaunchKernelEx"); err == nil && addr != 0 {
			purego.RegisterFunc(&d.cuLaunchKernelEx, addr)
		}
		drv = d
	})
	return drv, drvErr
}

// bindSymbol resolves name in the library first, so a missing symbol is an
// error (purego.RegisterLibFunc would panic).
func bindSymbol(h uintptr, lib, name string, fptr any) error {
	addr, err := dlsym(h, name)
	if err != nil || addr == 0 {
		return fmt.Errorf("cuda: symbol %s not found in %s (driver or library too old?): %v", name, lib, err)
	}
	purego.RegisterFunc(fptr, addr)
	return nil
}

// errName returns the CUresult's symbolic name, e.g. CUDA_ERROR_OUT_OF_MEMORY.
func (d *driverAPI) errName(r cuResult) string {
	var p *byte
	if d.cuGetErrorName(r, &p) != 0 || p == nil {
		return fmt.Sprintf("CUresult(%d)", int32(r))
	}
	return goString(p)
}

// check wraps a failed CUresult with the operation's name.
func (d *driverAPI) check(r cuResult, op string) error {
	if r == 0 {
		return nil
	}
	return &Error{Op: op, Code: int32(r), Name: d.errName(r)}
}

// Error is a failed CUDA driver call.
type Error struct {
	Op   string // what we were doing, e.g. "cuMemAlloc(4096 bytes)"
	Code int32  // the CUresult
	Name string // its symbolic name
}

func (e *Error) Error() string { return fmt.Sprintf("cuda: %s: %s (%d)", e.Op, e.Name, e.Code) }

// errClosed is returned for calls made after Close.
var errClosed = errors.New("cuda: use after Close")

// goString copies a NUL-terminated C string (at most 64 KiB of it).
func goString(p *byte) string {
	if p == nil {
		return ""
	}
	n := 0
	for n < 1<<16 && *(*byte)(unsafe.Add(unsafe.Pointer(p), n)) != 0 {
		n++
	}
	return string(unsafe.Slice(p, n))
}
