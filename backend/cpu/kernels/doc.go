// Package kernels owns the CPU compute kernels of the cpu backend: int8
// activation quantization, ternary weights repacked for AVX2 (2-bit codes, or
// a lookup-table layout), int8-repacked Q8_0/Q4_0/Q6_K matrices and F16
// matrices, each with a matrix-vector product over a row range (so the
// caller's workers split rows) and a batched product for prefill.
//
// It knows the layouts of its own packed data and the GGML block formats it
// repacks from; it must not know about models, files, threads or the forward
// pass. Nothing here allocates in MatVec/MatMat or Acts.Set.
//
// Assembly (AVX2+FMA+F16C, amd64) is generated with avo from ../../../_gen;
// every kernel has a pure-Go twin used under the noasm tag, on other
// architectures, and when SetAVX2(false) is called (tests do).
package kernels

//go:generate sh -c "cd ../../../_gen && go run . -out ../backend/cpu/kernels/kernels_amd64.s -stubs ../backend/cpu/kernels/kernels_amd64.go -pkg kernels"
