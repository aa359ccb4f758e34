// Package cuda is EdgeLLM's NVIDIA GPU backend. It owns the CUDA driver API
// and NVRTC bindings (loaded at run time through purego, so the binary needs
// neither cgo nor a CUDA toolkit), the kernels (embedded .cu source compiled
// by NVRTC for the card found, with the model's dimensions as compile-time
// constants, cached on disk), the repacking of weights into device layouts,
// and the decode step captured once as a CUDA graph and replayed per token.
//
// It knows nothing of the CPU kernels, the CLI or HTTP: callers reach it
// through backend.Model / backend.Session, Available, Load, SelfTest and the
// bench helpers (DeviceInfo, CopyBandwidth, Session statistics).
package cuda
