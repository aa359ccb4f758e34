// Package cuda is EdgeLLM's NVIDIA GPU backend. It owns the CUDA driver API
// and NVRTC bindings (loaded at run time through purego, so the binary needs
// neither cgo nor a CUDA toolkit), the kernels (embedded .cu sources, one
// file an operation, compiled by NVRTC for the card found with the model's
// dimensions as compile-time constants, cached on disk), the repacking of
// weights into device layouts, and the decode step: one launch plan of
// separate kernels (Session.steps), captured once as a CUDA graph and
// replayed per token. Prefill and batched decode (Model.DecodeBatch,
// DecodeBatchSample) run the many-row step (Model.rowsPlan: a prompt's
// chunk of up to 512 rows, or a row for each of up to 64 sessions) in a
// workspace the Model's sessions share.
//
// It knows nothing of the CPU kernels, the CLI or HTTP: callers reach it
// through backend.Model / backend.Session, Available, Load, SelfTest and the
// bench helpers (DeviceInfo, CopyBandwidth, Session statistics). The kernel
// harness's experiment switches live in internal/knobs, not in Options; each
// kernel alone is checked and timed by TestKernel and BenchmarkKernel, the
// whole step by internal/devtest (docs/gpu-notes.md says how to run them).
package cuda
