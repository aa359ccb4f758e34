// EdgeLLM decode kernels: what every kernel file shares (types, PTX
// wrappers, launch and memory helpers, matrix shapes). The files are
// compiled as one source, joined in compile.go's kernelFiles order:
//   common.cuh    this file
//   stage.cu      a product's input: RMSNorm and int8 quantization
//   products.cu   the matrix products' bodies (QKV with RoPE, output
//                 projection, FFN gate/up and down, LM head with argmax)
//   attention.cu  attention over the KV cache (k_attn) and QKV with
//                 attention in one kernel (k_qkv_attn)
//   step.cu       the other entry points of the decode step and prefill
//   sample.cu     sampling on the device (k_sample)
//
// Self-contained on purpose: no CUDA toolkit headers, so NVRTC alone (CI's
// 11.8 included) compiles it. Model dimensions arrive as -D constants (DIM,
// FFN, NH, NKV, HD, VOCAB, EPS) and so does what a layer does, from the
// model's description (compile.go kernelDims): ROPE_NEOX, ACT_RELU2 or
// ACT_GELU (else SiLU), SUBNORM (BitNet), QKV_BIAS and QK_NORM (the QKV
// products then go through k_qkv_post), POST_NORM (Gemma; k_postnorm),
// WIN (sliding-window layers, k_attn_w), ATT_SCALE, LOGIT_CAP; and the
// weight kinds of the layer matrices (WK), the LM head (HK) and the
// embedding (EK): 0 ternary, 1 f32, 2 f16, 3 q8_0. The host also passes the
// launch shapes and paths it chose (compile.go kernelDims.options); the
// #ifndef defaults left are the kernel harness's switches (PDL_EARLY,
// FASTM, FAST_EXP, FA_TRACE; internal/knobs).
//
// Device layouts (host side: pack.go), every row padded to KP = PADK(K):
//   ternary: KP/4 bytes per row; in each 16-byte chunk (64 weights) word j,
//            shift s, byte b hold the 2-bit code (w+1) of weight 16j+4s+b, so
//            (word >> 2s) & 0x03030303 is four codes for one dp4a.
//   q8_0:    int8 [M][KP] then f16 scales [M][KP/32].
//   f16/f32: [M][KP] values.
// Every matrix also has a float scale per row.

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

struct __attribute__((aligned(16))) U4 { u32 x, y, z, w; };
struct __attribute__((aligned(16))) F4 { float x, y, z, w; };

#define KT 0
#define KF32 1
#define KF16 2
#define KQ8 3

#define QD (NH * HD)
#define KVD (NKV * HD)
#if !defined(QKV_BIAS) || !defined(QK_NORM) || !defined(POST_NORM) || !defined(ACT_GELU) || !defined(LOGIT_CAP)
#error "the host passes QKV_BIAS, QK_NORM, POST_NORM, ACT_GELU and LOGIT_CAP"
#endif
// QKV_RAW: k_qkv writes its products as they are (QROW values a token) for
// k_qkv_post, which adds the biases and norms each head before RoPE.
#define QKV_RAW (QKV_BIAS || QK_NORM)
#define QROW (QKV_RAW ? QD + 2 * KVD : QD)
#define PADK(k) (((k) + 63) / 64 * 64)

// ---------------------------------------------------------------- helpers

__device__ __forceinline__ int dp4a(int a, int b, int c) {
    int d;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

__device__ __forceinline__ float h2f(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// 16-byte read-only load of streamed weights.
__device__ __forceinline__ U4 ldw(const void *p) {
    U4 v;
    asm volatile("ld.global.nc.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}

// Loads of activations, partials and the KV cache go through L2 only (.cg):
// some were written by other blocks of the same launch (attention's
// partials, the LM head's candidates), and neither L1 nor the read-only
// path is coherent across multiprocessors.
__device__ __forceinline__ float ldcg(const float *p) {
    float v;
    asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p));
    return v;
}

__device__ __forceinline__ int ldcg_i(const int *p) {
    int v;
    asm volatile("ld.global.cg.s32 %0, [%1];" : "=r"(v) : "l"(p));
    return v;
}

// KVH (host-set, Options.KVHalf): the KV cache holds float16, half the
// bytes a row, for lossy layers (ternary, q8_0); else float32.
#ifndef KVH
#error "the host passes KVH"
#endif
#if KVH
typedef u16 kv_t;
#else
typedef float kv_t;
#endif

// kv_ld loads a cached key or value as stored (through L2, as ldcg) and
// kv_f converts it: loads are issued in a batch and converted at their
// use, since a warp issues in order and a conversion right after each load
// would wait for it before the next load could go.
__device__ __forceinline__ kv_t kv_ld(const kv_t *p) {
#if KVH
    u16 h;
    asm volatile("ld.global.cg.u16 %0, [%1];" : "=h"(h) : "l"(p));
    return h;
#else
    return ldcg(p);
#endif
}

__device__ __forceinline__ float kv_f(kv_t v) {
#if KVH
    return h2f(v);
#else
    return v;
#endif
}

// kv_of is v in the cache's type (round to nearest).
__device__ __forceinline__ kv_t kv_of(float v) {
#if KVH
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    return h;
#else
    return v;
#endif
}

// Programmatic dependent launch (sm_90): wait here until the previous
// kernel's results are visible. A no-op when the launch did not ask for it.
__device__ __forceinline__ void grid_dep_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// grid_dep_launch lets the next kernel start once every block of this one
// has called it or exited: called after a block's work, so waiting blocks
// of the next kernel never take the place of this kernel's later blocks.
__device__ __forceinline__ void grid_dep_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Where a kernel lets its dependent start (griddepcontrol.launch_dependents):
// the kernels whose bit is in PDL_EARLY right after their own wait, the
// others once their block's work is done. Every grid is one resident pass,
// so an early start only parks the next kernel's blocks (prefetching their
// weights into L2) beside this one's; the dependent's wait still waits for
// all of this kernel's results. The FFN products and the LM head stream
// most of a token's bytes: a successor started during them would compete
// for HBM with its prefetch, so they start it after their work, except on
// SmolLM-sized layers (PRE_LOAD), whose FFN products stream little.
// PDL_EARLY is a harness switch (docs/gpu-notes.md v9, v10, v12).
#ifndef PRE_LOAD
#error "the host passes PRE_LOAD (compile.go preLoad: SmolLM-sized layer rows; Pre, products.cu)"
#endif
#ifndef PDL_EARLY
#define PDL_EARLY (P_EMBED | P_QKV | P_ATTN | P_WO | (PRE_LOAD ? P_GATEUP | P_DOWN : 0))
#endif
#define P_EMBED 1
#define P_QKV 2
#define P_ATTN 4
#define P_WO 8
#define P_GATEUP 16
#define P_DOWN 32
#define P_LMHEAD 64
#define P_POST 128
__device__ __forceinline__ void pdl_after_wait(int k) {
    if (PDL_EARLY & k) grid_dep_launch();
}
__device__ __forceinline__ void pdl_after_work(int k) {
    if (!(PDL_EARLY & k)) grid_dep_launch();
}

// Warm L2 with bytes [p, p+n): weights do not depend on earlier kernels, so
// this runs before grid_dep_wait, overlapping the previous kernel.
__device__ __forceinline__ void prefetch_l2(const u8 *p, size_t n) {
    for (size_t off = (size_t)threadIdx.x * 128; off < n; off += (size_t)blockDim.x * 128)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(p + off));
}

// prefetch_norm warms L2 with the K weights of a norm (nw, possibly null)
// that a product's staging reads right after its wait: read once a token,
// they are evicted by the weights streamed since. ON as Pre's (decode
// steps of short-row models): on long rows and in prefill the extra loads
// cost more than they saved.
template <int K, bool ON> __device__ __forceinline__ void prefetch_norm(const float *nw) {
    if (ON && nw) prefetch_l2((const u8 *)nw, (size_t)K * 4);
}

// fence_acq_rel orders this thread's memory operations at GPU scope, for
// the fence-plus-relaxed-atomic flag pattern (lighter than __threadfence,
// a sequentially consistent fence).
__device__ __forceinline__ void fence_acq_rel() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
    asm volatile("fence.acq_rel.gpu;" ::: "memory");
#else
    __threadfence();
#endif
}

// Fast math on the decode's latency path (FASTM): RMSNorm's 1/sqrt and the
// divisions of the int8 scales and the softmax merges as IEEE-exact
// sequences are chains of dependent instructions on every product's
// staging; rsqrtf and __fdividef are within 2 ulp. FAST_EXP does the same
// for the softmax exponentials and SiLU. Both are harness switches (0: the
// exact sequences, for accuracy checks; docs/gpu-notes.md v12).
#ifndef FASTM
#define FASTM 1
#endif
#ifndef FAST_EXP
#define FAST_EXP 1
#endif
__device__ __forceinline__ float f_rsqrt(float x) { return FASTM ? rsqrtf(x) : 1.f / sqrtf(x); }
__device__ __forceinline__ float f_div(float a, float b) { return FASTM ? __fdividef(a, b) : a / b; }
__device__ __forceinline__ float f_exp(float x) { return FAST_EXP ? __expf(x) : expf(x); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// --------------------------------------------------- matrix shape helpers

// Elements per 16-byte weight chunk of each kind.
template <int KIND> struct Kind;
template <> struct Kind<KT> { static constexpr int E = 64; };
template <> struct Kind<KF32> { static constexpr int E = 4; };
template <> struct Kind<KF16> { static constexpr int E = 8; };
template <> struct Kind<KQ8> { static constexpr int E = 16; };

// Threads that share one row of nc 16-byte chunks: the fewest (a power of
// two) that leave each lane one chunk, at most a warp (a longer row gives
// each lane several). Fewer lanes per row put more rows in each block's
// single pass (pack.go threadsPerRow mirrors it).
__host__ __device__ constexpr int tpr_for(int nc) {
    return nc > 16 ? 32 : nc > 8 ? 16 : nc > 4 ? 8 : nc > 2 ? 4 : nc > 1 ? 2 : 1;
}

template <int KIND, int K> struct Mat {
    static constexpr int KP = PADK(K);
    static constexpr int NC = KP / Kind<KIND>::E; // chunks per row
    static constexpr int TPR = tpr_for(NC);
    // Shared bytes for the staged input: int8 for ternary and q8_0 (q8_0 also
    // keeps a scale per 32 values), float for f32 and f16.
    static constexpr int SMEM = KIND == KT ? KP : KIND == KQ8 ? KP + KP / 32 * 4 : KP * 4;
};

