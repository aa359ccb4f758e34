package cuda

import (
	"fmt"
	"runtime"
	"unsafe"
)

// device is an opened GPU: its primary context and properties.
type device struct {
	d        *driverAPI
	n        *nvrtcAPI
	ordinal  int32
	ctx      uintptr
	info     DeviceInfo
	arch     string // "sm_90"
	sms      int
	maxSmem  int // opt-in shared memory per block
	released bool
}

// DeviceInfo describes the GPU a model runs on, for reports and benches.
type DeviceInfo struct {
	Name          string
	ComputeMajor  int
	ComputeMinor  int
	SMs           int
	TotalMemory   uint64
	DriverVersion int // e.g. 13000
	NVRTCVersion  int // e.g. 13000
	NVRTCPath     string
}

// Available reports whether the CUDA backend can run here: the driver and
// NVRTC are found and at least one device is present. The error says what
// was looked for and where.
func Available() error {
	d, err := loadDriver()
	if err != nil {
		return err
	}
	if err := d.check(d.cuInit(0), "cuInit"); err != nil {
		return err
	}
	var n int32
	if err := d.check(d.cuDeviceGetCount(&n), "cuDeviceGetCount"); err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("cuda: the driver reports no CUDA device")
	}
	if _, err := loadNVRTC(); err != nil {
		return err
	}
	return nil
}

// openDevice initialises the driver and retains device ordinal's primary
// context. The caller must hold its OS thread (runtime.LockOSThread).
func openDevice(ordinal int) (*device, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	d, _ := loadDriver()
	n, _ := loadNVRTC()
	var count int32
	if err := d.check(d.cuDeviceGetCount(&count), "cuDeviceGetCount"); err != nil {
		return nil, err
	}
	if ordinal < 0 || ordinal >= int(count) {
		return nil, fmt.Errorf("cuda: device %d requested, %d present", ordinal, count)
	}
	dev := &device{d: d, n: n}
	if err := d.check(d.cuDeviceGet(&dev.ordinal, int32(ordinal)), "cuDeviceGet"); err != nil {
		return nil, err
	}
	var name [256]byte
	if err := d.check(d.cuDeviceGetName(&name[0], int32(len(name)), dev.ordinal), "cuDeviceGetName"); err != nil {
		return nil, err
	}
	dev.info.Name = goString(&name[0])
	attr := func(a int32, what string) (int, error) {
		var v int32
		err := d.check(d.cuDeviceGetAttribute(&v, a, dev.ordinal), "cuDeviceGetAttribute("+what+")")
		return int(v), err
	}
	var err error
	if dev.info.ComputeMajor, err = attr(attrComputeCapMajor, "compute capability major"); err != nil {
		return nil, err
	}
	if dev.info.ComputeMinor, err = attr(attrComputeCapMinor, "compute capability minor"); err != nil {
		return nil, err
	}
	if dev.sms, err = attr(attrMultiprocessorCount, "multiprocessor count"); err != nil {
		return nil, err
	}
	if dev.maxSmem, err = attr(attrMaxSharedPerBlockOp, "max shared memory per block"); err != nil {
		return nil, err
	}
	dev.info.SMs = dev.sms
	if err := d.check(d.cuDeviceTotalMem(&dev.info.TotalMemory, dev.ordinal), "cuDeviceTotalMem"); err != nil {
		return nil, err
	}
	var dv int32
	if err := d.check(d.cuDriverGetVersion(&dv), "cuDriverGetVersion"); err != nil {
		return nil, err
	}
	dev.info.DriverVersion = int(dv)
	dev.info.NVRTCVersion = n.version()
	dev.info.NVRTCPath = n.path
	dev.arch = fmt.Sprintf("sm_%d%d", dev.info.ComputeMajor, dev.info.ComputeMinor)
	if dev.info.ComputeMajor < 7 || (dev.info.ComputeMajor == 7 && dev.info.ComputeMinor < 5) {
		return nil, fmt.Errorf("cuda: %s is compute capability %d.%d; EdgeLLM's kernels need 7.5 or newer", dev.info.Name, dev.info.ComputeMajor, dev.info.ComputeMinor)
	}
	// Spin while waiting for the GPU: a token takes well under a
	// millisecond, and a sleeping wait adds wake-up jitter to each. It only
	// applies if the primary context is not active yet; failing is harmless.
	if d.cuDevicePrimaryCtxSetFlags != nil {
		d.cuDevicePrimaryCtxSetFlags(dev.ordinal, ctxSchedSpin)
	}
	if err := d.check(d.cuDevicePrimaryCtxRetain(&dev.ctx, dev.ordinal), "cuDevicePrimaryCtxRetain"); err != nil {
		return nil, err
	}
	if err := dev.bind(); err != nil {
		d.cuDevicePrimaryCtxRelease(dev.ordinal)
		return nil, err
	}
	return dev, nil
}

// bind makes the context current on this OS thread; every entry point
// calls it after runtime.LockOSThread, since goroutines move between threads.
func (dev *device) bind() error {
	if dev.released {
		return errClosed
	}
	return dev.d.check(dev.d.cuCtxSetCurrent(dev.ctx), "cuCtxSetCurrent")
}

func (dev *device) release() {
	if !dev.released {
		dev.d.cuDevicePrimaryCtxRelease(dev.ordinal)
		dev.released = true
	}
}

// alloc allocates n bytes of device memory (at least 1), with what in errors.
func (dev *device) alloc(n int, what string) (uint64, error) {
	var p uint64
	if n <= 0 {
		n = 1
	}
	if err := dev.d.check(dev.d.cuMemAlloc(&p, uint64(n)), fmt.Sprintf("cuMemAlloc(%s, %d bytes)", what, n)); err != nil {
		return 0, err
	}
	return p, nil
}

// upload copies b to a new device buffer.
func (dev *device) upload(b []byte, what string) (uint64, error) {
	p, err := dev.alloc(len(b), what)
	if err != nil {
		return 0, err
	}
	if len(b) > 0 {
		if err := dev.d.check(dev.d.cuMemcpyHtoD(p, unsafe.Pointer(&b[0]), uint64(len(b))), "cuMemcpyHtoD("+what+")"); err != nil {
			dev.d.cuMemFree(p)
			return 0, err
		}
	}
	return p, nil
}

func f32Bytes(f []float32) []byte {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), 4*len(f))
}

// CopyBandwidth measures the device's device-to-device copy bandwidth in
// GB/s (bytes read plus bytes written per second) with copies of n bytes,
// timed with events over iters repetitions after a warm-up.
func CopyBandwidth(ordinal, n, iters int) (float64, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if n <= 0 || iters <= 0 {
		return 0, fmt.Errorf("cuda: CopyBandwidth: size %d and iterations %d must be positive", n, iters)
	}
	dev, err := openDevice(ordinal)
	if err != nil {
		return 0, err
	}
	defer dev.release()
	d := dev.d
	a, err := dev.alloc(n, "copy source")
	if err != nil {
		return 0, err
	}
	defer d.cuMemFree(a)
	b, err := dev.alloc(n, "copy destination")
	if err != nil {
		return 0, err
	}
	defer d.cuMemFree(b)
	var s, e0, e1 uintptr
	if err := d.check(d.cuStreamCreate(&s, streamNonBlocking), "cuStreamCreate"); err != nil {
		return 0, err
	}
	defer d.cuStreamDestroy(s)
	if err := d.check(d.cuMemsetD8Async(a, 0x5a, uint64(n), s), "cuMemsetD8Async"); err != nil {
		return 0, err
	}
	for _, e := range []*uintptr{&e0, &e1} {
		if err := d.check(d.cuEventCreate(e, eventDefault), "cuEventCreate"); err != nil {
			return 0, err
		}
		defer d.cuEventDestroy(*e)
	}
	for i := 0; i < 3; i++ {
		if err := d.check(d.cuMemcpyDtoDAsync(b, a, uint64(n), s), "cuMemcpyDtoDAsync"); err != nil {
			return 0, err
		}
	}
	d.cuEventRecord(e0, s)
	for i := 0; i < iters; i++ {
		if err := d.check(d.cuMemcpyDtoDAsync(b, a, uint64(n), s), "cuMemcpyDtoDAsync"); err != nil {
			return 0, err
		}
	}
	d.cuEventRecord(e1, s)
	if err := d.check(d.cuEventSynchronize(e1), "cuEventSynchronize"); err != nil {
		return 0, err
	}
	var ms float32
	if err := d.check(d.cuEventElapsedTime(&ms, e0, e1), "cuEventElapsedTime"); err != nil {
		return 0, err
	}
	return 2 * float64(n) * float64(iters) / (float64(ms) * 1e-3) / 1e9, nil
}

func unsafePtr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

func u64Bytes(v []uint64) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 8*len(v))
}

// checkFree refuses, before allocating, need bytes of device memory that
// the device's free memory (cuMemGetInfo) cannot hold; what names the
// allocation in the error.
func (dev *device) checkFree(need uint64, what string) error {
	var free, total uint64
	if err := dev.d.check(dev.d.cuMemGetInfo(&free, &total), "cuMemGetInfo"); err != nil {
		return err
	}
	return fitsFree(need, free, total, what, dev.info.Name)
}

// fitsFree is checkFree's rule: need must fit in free.
func fitsFree(need, free, total uint64, what, device string) error {
	if need > free {
		return fmt.Errorf("cuda: %s needs %d bytes (%.1f MiB) of device memory, %s has %d free (%.1f MiB) of %d",
			what, need, float64(need)/(1<<20), device, free, float64(free)/(1<<20), total)
	}
	return nil
}
