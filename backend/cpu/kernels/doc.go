// Package kernels owns the CPU compute kernels of the cpu backend: int8
// activation quantization (Acts), ternary weights repacked once at load
// (Ternary: 2-bit codes for VPMADDUBSW by default, or lookup-table layouts),
// int8-repacked Q8_0/Q5_0/Q4_0/Q6_K matrices (Int8Mat) and F16 matrices
// (F16Mat), each with a matrix-vector product over a row range (so the
// caller's workers split rows) and a batched product for prefill (ternary
// and 32-group int8 rows: each block of weights unpacked once for 4 tokens,
// results equal to the single-token kernels'). FromQuant picks the matrix
// for a GGML tensor type. It also has the float kernels of attention over a
// float32 or float16 KV cache (AttnScores, AttnMix, SoftmaxExp, ToF16; and
// AttnScoresF16G, AttnMixF16G for the query heads that share one KV head,
// reading each cached key and value once for the group) and the SwiGLU
// gate (SiLUMul).
//
// It knows the layouts of its own packed data and the GGML block formats it
// repacks from; it must not know about models, files, threads or the forward
// pass. Nothing here allocates in MatVec/MatMat or Acts.Set.
//
// Assembly (AVX2+FMA+F16C, amd64) is generated with avo from ../../../_gen
// (its own module; run go generate here after editing it); every kernel has
// a pure-Go twin used under the noasm tag, on other architectures, and when
// SetAVX2(false) is called (tests do). Benchmarks report MB/s of weight
// bytes streamed and, on a shared machine, cpu-MB/s (per CPU second).
//
// Paths, fastest first, chosen once from the CPU (golang.org/x/sys/cpu):
//
//   - AVX-512 VNNI (F, BW, VL and VNNI, e.g. Intel Ice Lake server and
//     later, AMD Zen 4 and later): the ternary kernels (ternaryVecT1Z and
//     ternaryVecS4Z for one token, scaled in the kernel; ternaryDotT2Z to
//     T4Z for prefill's groups of tokens) and the
//     group-32 int8 kernels (int8DotT*g32Z/h32Z: the Q8_0/Q4_0 LM head, decode
//     and prefill), with VPDPBUSD on 512-bit registers. They read the same
//     packed data as the AVX2 kernels and give the same results bit for bit.
//     Attention over the float16 cache too (attnScoresZG*, attnMixZG*,
//     softmaxExpZ: 16 floats a register): the mix and the exponentials
//     give the AVX2 bits, the scores add their lanes in another order.
//     Generated from _gen/avx512.go into kernels_avx512_amd64.s (the second
//     go:generate line: -avx512). SetAVX512(false) falls back to AVX2 (tests
//     and benchmarks do); GODEBUG=cpu.avx512f=off (or cpu.avx512vnni=off)
//     turns the path off for a whole binary.
//   - AVX-VNNI (VEX-encoded VPDPBUSD on 256-bit registers, without
//     AVX-512: Intel Alder Lake and later client cores; AMD Zen 5 has it
//     too): the ternary kernels (ternaryVecT1V, ternaryVecS4V for one
//     token, ternaryDotT2V to T4V for prefill), same data and same results
//     bit for bit. Generated from _gen/avxvnni.go into the AVX2 file, their
//     VPDPBUSD written as VEX bytes (_gen/vex.go: Go's assembler encodes
//     only the EVEX form). SetAVXVNNI(false) falls back to AVX2;
//     GODEBUG=cpu.avxvnni=off turns the path off for a whole binary.
//   - AVX2 (+FMA, F16C): every kernel, and the rest of the VNNI paths.
//   - pure Go: the noasm tag, other architectures, SetAVX2(false).
package kernels

//go:generate sh -c "cd ../../../_gen && go run . -out ../backend/cpu/kernels/kernels_amd64.s -stubs ../backend/cpu/kernels/kernels_amd64.go -pkg kernels"
//go:generate sh -c "cd ../../../_gen && go run . -avx512 -out ../backend/cpu/kernels/kernels_avx512_amd64.s -stubs ../backend/cpu/kernels/kernels_avx512_amd64.go -pkg kernels"
