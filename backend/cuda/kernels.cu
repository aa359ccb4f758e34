// EdgeLLM decode kernels, by part:
//   common.cuh    types, PTX wrappers, launch and memory helpers, shapes
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
// FFN, NH, NKV, HD, VOCAB, EPS, ROPE_NEOX, ACT_RELU2, SUBNORM) and so do the
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

// A product's input, staged once a block in shared memory: the vector
// (an activation row, or attention's partials merged as they load), times
// its RMSNorm where the product has one, in the format of the weights'
// kind (int8 per token for ternary, int8 per block of 32 for q8_0, float
// for f32 and f16).

// The staged input of one product: the normed, possibly quantized vector.
struct Staged {
    float ascale; // ternary: 1/s of the per-token int8 quantization
};

// Word index in shared memory of int8 word w (4 values) when chunks hold
// `wpc` words: words 4g..4g+3 of chunk c sit together at (g*NC + c)*4, so
// the lanes of a row group, which read chunks c = lane, lane+TPR, ..., load
// four words with one conflict-free 16-byte load.
template <int WPC, int NC> __device__ __forceinline__ int xw_index(int w) {
    return ((w % WPC) / 4 * NC + w / WPC) * 4 + w % 4;
}

// block_sum_max reduces (sum a, max b >= 0) over a block of BT threads
// with one barrier: each warp's totals go to red, then every thread adds
// them up itself, instead of a second barrier and warp reduction. red is
// free again after the barrier that ends stage.
template <int BT> __device__ __forceinline__ void block_sum_max(float &a, float &b, float *red) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    a = warp_sum(a);
    b = warp_max(b);
    if (lane == 0) { red[w] = a; red[32 + w] = b; }
    __syncthreads();
    // four chains, not one of BT/32 dependent additions (a full tree held
    // too many registers beside big products' staged values)
    constexpr int NW = BT / 32, NA = NW < 4 ? NW : 4;
    float sa[NA], sb[NA];
#pragma unroll
    for (int i = 0; i < NA; i++) {
        sa[i] = red[i];
        sb[i] = red[32 + i];
    }
#pragma unroll
    for (int i = NA; i < NW; i++) {
        sa[i % NA] += red[i];
        sb[i % NA] = fmaxf(sb[i % NA], red[32 + i]);
    }
#pragma unroll
    for (int n = NA; n > 1; n = (n + 1) / 2)
#pragma unroll
        for (int i = 0; i < n / 2; i++) {
            sa[i] += sa[i + (n + 1) / 2];
            sb[i] = fmaxf(sb[i], sb[i + (n + 1) / 2]);
        }
    a = sa[0];
    b = sb[0];
}

// A Load gives stage its input: fetch(i) issues the loads of element i
// (their raw values), value turns them into the element. stage fetches all
// of a thread's elements before it uses any, so they take one round trip.
// VecLoad reads a vector that an earlier step (or block) wrote.
struct VecLoad {
    const float *p;
    typedef float Raw;
    __device__ __forceinline__ Raw fetch(int i) const { return ldcg(p + i); }
    __device__ __forceinline__ float value(Raw r) const { return r; }
};

// NoMark is stage's default phase clock: none (k_qkv_attn passes FA_MARK's).
struct NoMark {
    __device__ __forceinline__ void operator()(int) const {}
};

// stage reads in(0..K-1) once into registers, applies RMSNorm with weight nw
// when nw != 0, and writes the product's input into sm in the kind's
// format. All BT threads of the block call it; red holds 64 floats. mark(k)
// clocks its phases for the harness (marks 8-11).
template <int KIND, int K, int BT, class Load, class Mark = NoMark>
__device__ Staged stage(Load in, const float *__restrict__ nw, char *sm, float *red, Mark mark = Mark()) {
    typedef Mat<KIND, K> M;
    constexpr int PER = (K + BT - 1) / BT;
    const int tid = threadIdx.x;
    Staged st;
    st.ascale = 1.f;
    float v[PER];
    float ss = 0.f, am = 0.f;
    typename Load::Raw raw[PER];
#pragma unroll
    for (int j = 0; j < PER; j++)
        if (tid + j * BT < K) raw[j] = in.fetch(tid + j * BT);
    mark(8);
#pragma unroll
    for (int j = 0; j < PER; j++) {
        int i = tid + j * BT;
        float x = i < K ? in.value(raw[j]) : 0.f;
        float w = (nw && i < K) ? nw[i] : 1.f;
        ss += x * x;
        v[j] = x * w;
        am = fmaxf(am, fabsf(v[j]));
    }
    mark(9);
    // One reduction gives both the norm and the int8 scale: the normed
    // values are v*r with r > 0, so their absmax is am*r.
    if (nw || KIND == KT) block_sum_max<BT>(ss, am, red);
    mark(10);
    float r = nw ? f_rsqrt((FASTM ? ss * (1.f / (float)K) : ss / (float)K) + EPS) : 1.f;
#pragma unroll
    for (int j = 0; j < PER; j++) v[j] *= r;
    if (KIND == KT) {
        am *= r;
        am = fmaxf(am, 1e-5f);
        float s = f_div(127.f, am);
#pragma unroll
        for (int j = 0; j < PER; j++) {
            int i = tid + j * BT;
            if (i < K) {
                int q = (int)rintf(fminf(fmaxf(v[j] * s, -128.f), 127.f));
                sm[xw_index<16, M::NC>(i >> 2) * 4 + (i & 3)] = (char)q;
            }
        }
        for (int i = K + tid; i < M::KP; i += BT) sm[xw_index<16, M::NC>(i >> 2) * 4 + (i & 3)] = 0;
        st.ascale = FASTM ? am * (1.f / 127.f) : 1.f / s;
    } else if (KIND == KQ8) {
        // int8 per block of 32 with its own scale, as llama.cpp's q8 dot
        // does. Element tid + j*BT: a warp's j-th slice is one whole block.
        float *bs = (float *)(sm + M::KP);
        const int lane = tid & 31;
#pragma unroll
        for (int j = 0; j < PER; j++) {
            int i = tid + j * BT;
            if (j * BT + (tid & ~31) < M::KP) { // warp-uniform
                float bm = warp_max(fabsf(v[j]));
                float d = FASTM ? bm * (1.f / 127.f) : bm / 127.f;
                int q = d > 0.f ? (int)rintf(f_div(v[j], d)) : 0;
                sm[xw_index<4, M::NC>(i >> 2) * 4 + (i & 3)] = (char)q;
                if (lane == 0) bs[i >> 5] = d;
            }
        }
        for (int i = PER * BT + tid; i < M::KP; i += BT) {
            sm[xw_index<4, M::NC>(i >> 2) * 4 + (i & 3)] = 0;
            if ((i & 31) == 0) bs[i >> 5] = 0.f;
        }
    } else {
        float *ys = (float *)sm;
#pragma unroll
        for (int j = 0; j < PER; j++) {
            int i = tid + j * BT;
            if (i < K) ys[i] = v[j];
        }
        for (int i = K + tid; i < M::KP; i += BT) ys[i] = 0.f;
    }
    mark(11);
    __syncthreads();
    return st;
}
// The matrix products of the decode step and prefill: the weight row
// batches and dot products of every kind, and each product's body over the
// grid (QKV with RoPE and the KV-cache write, output projection, FFN
// gate/up with the activation, FFN down, LM head with the argmax). The
// entry points that run them are in step.cu and attention.cu.

// tern_word adds the dot products of weight word w's four code groups
// (codes c = weight+1 in {0,1,2}, two bits of each byte) with four words of
// int8 activations: an unsigned-by-signed dp4a takes the codes as they
// are, and the caller subtracts the activations' sum once a chunk, which
// makes it the sum of (c-1)*x. Group s is masked in place, not shifted
// down, so it adds 4^s times its dot product to its own accumulator
// acc[s], which tern_sum scales back exactly: two instructions per four
// weights (shifting each group down first takes three, turning the codes
// into signed c-1 five). A weight adds at most 64 * 2 * 128 to
// acc[3], a quarter of a lane's weights go there: no overflow below 2^19
// weights a lane.
__device__ __forceinline__ int dp4a_us(u32 a, int b, int c) {
    int d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

__device__ __forceinline__ void tern_word(u32 w, int x0, int x1, int x2, int x3, int *acc) {
    acc[0] = dp4a_us(w & 0x03030303u, x0, acc[0]);
    acc[1] = dp4a_us(w & 0x0c0c0c0cu, x1, acc[1]);
    acc[2] = dp4a_us(w & 0x30303030u, x2, acc[2]);
    acc[3] = dp4a_us(w & 0xc0c0c0c0u, x3, acc[3]);
}

// tern_sum is the dot product of tern_word's four accumulators (each a
// multiple of its scale 4^s: the shifts are exact).
__device__ __forceinline__ int tern_sum(const int *acc) {
    return acc[0] + (acc[1] >> 2) + (acc[2] >> 4) + (acc[3] >> 6);
}

// Device bytes of one row of a matrix of kind KIND and width K.
template <int KIND, int K> __device__ constexpr size_t row_bytes() {
    return KIND == KT ? PADK(K) / 4 : KIND == KQ8 ? PADK(K) : KIND == KF16 ? PADK(K) * 2 : PADK(K) * 4;
}

// A row batch: the 16-byte chunks of R rows that lane l (0..TPR-1) of a
// row group loads at once, batches of up to BMAX chunks a row, so each lane
// keeps several loads in flight before any arithmetic. rdot runs them all;
// k_qkv_attn loads its first batch before its wait, ahead of the input.
template <int KIND, int K, int R, int BMAX = 4> struct RowBatch {
    typedef Mat<KIND, K> M;
    static constexpr int KP = M::KP, NC = M::NC, TPR = M::TPR;
    static constexpr int NIT = (NC + TPR - 1) / TPR;
    static constexpr int B = NIT < BMAX ? NIT : BMAX;
    static constexpr size_t RB = row_bytes<KIND, K>();
    U4 w[B][R];
    u16 dq[B][R];

    // load issues the loads of the batch of chunks from it0 on.
    __device__ __forceinline__ void load(const u8 *__restrict__ W, const u16 *__restrict__ D, const int *rows, int l,
                                         int it0) {
#pragma unroll
        for (int b = 0; b < B; b++) {
            const int c = l + (it0 + b) * TPR;
            const bool ok = it0 + b < NIT && c < NC;
#pragma unroll
            for (int r = 0; r < R; r++) {
                if (ok) {
                    w[b][r] = ldw(W + (size_t)rows[r] * RB + (size_t)c * 16);
                    if (KIND == KQ8) dq[b][r] = D[(size_t)rows[r] * (KP / 32) + (c >> 1)];
                }
            }
        }
    }

    // dot adds the batch from it0 on, times the staged input sm, to the
    // rows' sums: for ternary tern_word's four accumulators a row (iacc,
    // 4R), for the others facc.
    __device__ __forceinline__ void dot(int l, int it0, const char *sm, int *iacc, float *facc) const {
#pragma unroll
        for (int b = 0; b < B; b++) {
            const int c = l + (it0 + b) * TPR;
            if (!(it0 + b < NIT && c < NC)) continue;
            if (KIND == KT) {
                const int4 *xs = (const int4 *)sm;
                int x[16];
#pragma unroll
                for (int g = 0; g < 4; g++) {
                    const int4 v = xs[g * NC + c];
                    x[4 * g] = v.x;
                    x[4 * g + 1] = v.y;
                    x[4 * g + 2] = v.z;
                    x[4 * g + 3] = v.w;
                }
                int xsum = 0; // the chunk's activations summed, for all R rows
#pragma unroll
                for (int m = 0; m < 16; m++) xsum = dp4a(x[m], 0x01010101, xsum);
#pragma unroll
                for (int r = 0; r < R; r++) {
                    int *a = iacc + 4 * r;
                    a[0] -= xsum;
                    tern_word(w[b][r].x, x[0], x[1], x[2], x[3], a);
                    tern_word(w[b][r].y, x[4], x[5], x[6], x[7], a);
                    tern_word(w[b][r].z, x[8], x[9], x[10], x[11], a);
                    tern_word(w[b][r].w, x[12], x[13], x[14], x[15], a);
                }
            } else if (KIND == KQ8) {
                const int4 xv = ((const int4 *)sm)[c];
                const float *bs = (const float *)(sm + KP);
                const int x0 = xv.x, x1 = xv.y, x2 = xv.z, x3 = xv.w;
                float xb = bs[c >> 1];
#pragma unroll
                for (int r = 0; r < R; r++) {
                    int t = dp4a((int)w[b][r].x, x0, 0);
                    t = dp4a((int)w[b][r].y, x1, t);
                    t = dp4a((int)w[b][r].z, x2, t);
                    t = dp4a((int)w[b][r].w, x3, t);
                    facc[r] += (float)t * h2f(dq[b][r]) * xb;
                }
            } else if (KIND == KF32) {
                F4 x = ((const F4 *)sm)[c];
#pragma unroll
                for (int r = 0; r < R; r++) {
                    U4 q = w[b][r];
                    facc[r] += __uint_as_float(q.x) * x.x + __uint_as_float(q.y) * x.y +
                               __uint_as_float(q.z) * x.z + __uint_as_float(q.w) * x.w;
                }
            } else { // KF16
                F4 xa = ((const F4 *)sm)[2 * c], xb = ((const F4 *)sm)[2 * c + 1];
#pragma unroll
                for (int r = 0; r < R; r++) {
                    U4 q = w[b][r];
                    facc[r] += h2f((u16)(q.x & 0xffff)) * xa.x + h2f((u16)(q.x >> 16)) * xa.y +
                               h2f((u16)(q.y & 0xffff)) * xa.z + h2f((u16)(q.y >> 16)) * xa.w +
                               h2f((u16)(q.z & 0xffff)) * xb.x + h2f((u16)(q.z >> 16)) * xb.y +
                               h2f((u16)(q.w & 0xffff)) * xb.z + h2f((u16)(q.w >> 16)) * xb.w;
                }
            }
        }
    }

};

// rdot computes R rows' partial dot products for lane l (0..TPR-1) of a row
// group; the caller reduces over the group. D is the q8_0 scale array.
// With first (k_qkv_attn), the first batch is already loaded.
template <int KIND, int K, int R, int BMAX = 4>
__device__ __forceinline__ void rdot(const u8 *__restrict__ W, const u16 *__restrict__ D, const int *rows,
                                     int l, const char *sm, float *out,
                                     const RowBatch<KIND, K, R, BMAX> *first = nullptr) {
    typedef RowBatch<KIND, K, R, BMAX> RB;
    float facc[R];
    int iacc[4 * R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        facc[r] = 0.f;
#pragma unroll
        for (int s = 0; s < 4; s++) iacc[4 * r + s] = 0;
    }
    for (int it0 = 0; it0 < RB::NIT; it0 += RB::B) {
        if (first && it0 == 0) {
            first->dot(l, 0, sm, iacc, facc);
            continue;
        }
        RB batch;
        batch.load(W, D, rows, l, it0);
        batch.dot(l, it0, sm, iacc, facc);
    }
#pragma unroll
    for (int r = 0; r < R; r++) out[r] = KIND == KT ? (float)tern_sum(iacc + 4 * r) : facc[r];
}

// prefetch_rows warms L2 with the rows [r0, r0+n) this block reads first.
template <int KIND, int K> __device__ __forceinline__ void prefetch_rows(const u8 *W, int r0, int n, int nrows) {
    if (r0 >= nrows) return;
    n = r0 + n > nrows ? nrows - r0 : n;
    prefetch_l2(W + (size_t)r0 * row_bytes<KIND, K>(), (size_t)n * row_bytes<KIND, K>());
}

// group_sum reduces v over the TPR lanes of a row group (aligned lanes).
template <int TPR> __device__ __forceinline__ float group_sum(float v) {
#pragma unroll
    for (int o = TPR / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// finish turns a reduced raw dot into the product's value for a row of
// scale `scale` (the matrix's rs).
template <int KIND>
__device__ __forceinline__ float finish(float raw, const Staged &st, float scale) {
    if (KIND == KT) return raw * st.ascale * scale;
    return raw * scale;
}

// Loop over items (each R rows) in warp-uniform steps: every lane of a warp
// runs the same iterations, so the group shuffles never see exited lanes.
#define FOR_ITEMS(M, NITEMS)                                                                     \
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;                                  \
    const int gpw = 32 / M::TPR; /* groups per warp */                                           \
    const int l = lane % M::TPR;                                                                 \
    for (int base = (blockIdx.x * (BT / 32) + warp) * gpw; base < (NITEMS);                      \
         base += gridDim.x * (BT / 32) * gpw)                                                    \
        for (int item = base + lane / M::TPR, valid = item < (NITEMS), once = 1; once; once = 0)

// ---------------------------------------------------------------- bodies
//
// Each product is a device function over the whole grid (blockIdx.x and
// gridDim.x), called by its entry points. A block with no rows returns
// before staging its input.

// Block sizes of the separate kernels' products: chosen by the host
// (compile.go kernelDims.products), which launches them.
#if !defined(BT_QKV) || !defined(BT_WO) || !defined(BT_GATEUP) || !defined(BT_DOWN) || !defined(BT_LMHEAD)
#error "the host passes the products' block sizes"
#endif
// Rows a work item of the output projection, FFN down and FFN gate/up (row
// pairs) takes, also the host's choice: big matrices take more.
#if !defined(R_WO) || !defined(R_GU) || !defined(R_DOWN)
#error "the host passes the products' rows per item"
#endif

// has_items tells whether this block owns any of n items of BT/TPR per block.
template <int BT, int TPR> __device__ __forceinline__ bool has_items(int n) {
    return blockIdx.x * (BT / TPR) < n;
}

// Pre holds what a thread's first work item needs besides its product,
// loaded before the kernel waits for its predecessor (row scales and RoPE
// angles are constants of the step, known before it) or, for the residual,
// right after the wait together with the input: loaded in the epilogue,
// each would be one more dependent round trip at the end of every product.
// Other items load their own. ON is false in the batch kernels (prefill)
// and where the host turns it off (PRE_LOAD, compile.go preLoad: long
// rows): the values held take registers, which prefill's many waves and
// big models' products want.
template <int N, bool ON> struct Pre {
    int item = -1;
    float s[N];               // the rows' scales
    float x[N];               // residual products: the rows of x before the add
    float sn = 0.f, cs = 1.f; // QKV: the pair's RoPE rotation
    // first tells whether item is the one these values are for: a constant
    // false without them, so no register is kept for them.
    __device__ __forceinline__ bool first(int it) const { return ON && it == item; }
};
template <int N> using NoPre = Pre<N, false>;

// first_item is the first item FOR_ITEMS gives this thread if it is the
// lane that finishes it (lane 0 of the row group), else -1 (as when it has
// none of n): the other lanes need nothing in Pre.
template <int BT, int TPR> __device__ __forceinline__ int first_item(int n) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int item = (blockIdx.x * (BT / 32) + warp) * (32 / TPR) + lane / TPR;
    return item < n && lane % TPR == 0 ? item : -1;
}

// pre_rows is the Pre of a product of n items with N rows an item: the
// thread's first item and the scales of its rows row(item, r).
template <int BT, int TPR, int N, bool ON, class Row>
__device__ __forceinline__ Pre<N, ON> pre_rows(int n, const float *__restrict__ rs, Row row) {
    Pre<N, ON> pre;
    if (!ON) return pre;
    pre.item = first_item<BT, TPR>(n);
    if (pre.item >= 0)
#pragma unroll
        for (int r = 0; r < N; r++) pre.s[r] = rs[row(pre.item, r)];
    return pre;
}

// rope_at is the rotation (cos, sin) of pair i of a head at position pos,
// from the session's table (model.RopeTable).
__device__ __forceinline__ float2 rope_at(const float2 *__restrict__ rope, int pos, int i) {
    return rope[(size_t)pos * (HD / 2) + i];
}

// rotate turns the pair (v0, v1) by the rotation (cs, sn), as RoPE does.
__device__ __forceinline__ void rotate(float &v0, float &v1, float cs, float sn) {
    const float r0 = v0 * cs - v1 * sn, r1 = v0 * sn + v1 * cs;
    v0 = r0;
    v1 = r1;
}

// QKVPair is rotation pair p of the stacked Q|K|V matrix: region 0 q, 1 k,
// 2 v; its head, its index i in the head, and its two rows (dims a and b of
// the head).
struct QKVPair {
    int region, head, i, a, b, rows[2];
    __device__ explicit QKVPair(int p) {
        region = p < QD / 2 ? 0 : p < (QD + KVD) / 2 ? 1 : 2;
        const int lp = region == 0 ? p : region == 1 ? p - QD / 2 : p - (QD + KVD) / 2;
        head = lp / (HD / 2);
        i = lp % (HD / 2);
        a = ROPE_NEOX ? i : 2 * i;
        b = ROPE_NEOX ? i + HD / 2 : 2 * i + 1;
        const int rbase = region == 0 ? 0 : region == 1 ? QD : QD + KVD;
        rows[0] = rbase + head * HD + a;
        rows[1] = rbase + head * HD + b;
    }
};

// pre_qkv loads the first pair's row scales and RoPE rotation at pos.
template <int BT, bool ON>
__device__ __forceinline__ Pre<2, ON> pre_qkv(int pos, const float *__restrict__ rs, const float2 *__restrict__ rope) {
    Pre<2, ON> pre = pre_rows<BT, Mat<WK, DIM>::TPR, 2, ON>((QD + 2 * KVD) / 2, rs,
                                                         [](int p, int r) { return QKVPair(p).rows[r]; });
    if (pre.item >= 0) {
        const QKVPair it(pre.item);
        if (it.region < 2) {
            const float2 r = rope_at(rope, pos, it.i);
            pre.cs = r.x;
            pre.sn = r.y;
        }
    }
    return pre;
}

// q, k, v = (Wq|Wk|Wv) RMSNorm(x); RoPE on q and k; k and v written into the
// layer's cache at the position. One item is a rotation pair (two rows).
template <int BT, class PreT>
__device__ void qkv_body(int pos, const float *x, const float *__restrict__ nw, const u8 *__restrict__ W,
                         const u16 *__restrict__ D, const float *__restrict__ rs, const float2 *__restrict__ rope,
                         float *q, kv_t *kc, kv_t *vc, char *sm, float *red, const PreT &pre) {
    typedef Mat<WK, DIM> M;
    constexpr int NP = (QD + 2 * KVD) / 2;
    if (!has_items<BT, M::TPR>(NP)) return;
    Staged st = stage<WK, DIM, BT>(VecLoad{x}, nw, sm, red);
    FOR_ITEMS(M, NP) {
        const QKVPair it(valid ? item : 0);
        const int region = it.region, head = it.head, i = it.i, a = it.a, b = it.b;
        int rows[2] = {it.rows[0], it.rows[1]};
        float v[2] = {0.f, 0.f};
        const bool first = pre.first(item);
        if (valid) rdot<WK, DIM, 2>(W, D, rows, l, sm, v);
        v[0] = group_sum<M::TPR>(v[0]);
        v[1] = group_sum<M::TPR>(v[1]);
        if (valid && l == 0) {
            float v0 = finish<WK>(v[0], st, first ? pre.s[0] : rs[rows[0]]);
            float v1 = finish<WK>(v[1], st, first ? pre.s[1] : rs[rows[1]]);
            if (region < 2) {
                float sn = pre.sn, cs = pre.cs;
                if (!first) {
                    const float2 r = rope_at(rope, pos, i);
                    cs = r.x;
                    sn = r.y;
                }
                rotate(v0, v1, cs, sn);
            }
            if (region == 0) {
                q[head * HD + a] = v0;
                q[head * HD + b] = v1;
            } else {
                kv_t *c = (region == 1 ? kc : vc) + (size_t)pos * KVD + head * HD;
                c[a] = kv_of(v0);
                c[b] = kv_of(v1);
            }
        }
    }
}

// x += W (norm(in) with weight nw, or in when nw is null): the residual
// products (output projection, FFN down), R rows an item.
template <int BT, int K, int R, class Load, class PreT>
__device__ void residual_body(Load in, const float *__restrict__ nw, const u8 *__restrict__ W, const u16 *__restrict__ D,
                              const float *__restrict__ rs, float *x, char *sm, float *red, const PreT &pre) {
    typedef Mat<WK, K> M;
    constexpr int NI = DIM / R;
    if (!has_items<BT, M::TPR>(NI)) return;
    Staged st = stage<WK, K, BT>(in, nw, sm, red);
    FOR_ITEMS(M, NI) {
        int rows[R];
#pragma unroll
        for (int r = 0; r < R; r++) rows[r] = (valid ? item : 0) * R + r;
        float v[R];
#pragma unroll
        for (int r = 0; r < R; r++) v[r] = 0.f;
        const bool first = pre.first(item);
        if (valid) rdot<WK, K, R>(W, D, rows, l, sm, v);
#pragma unroll
        for (int r = 0; r < R; r++) v[r] = group_sum<M::TPR>(v[r]);
        if (valid && l == 0) {
#pragma unroll
            for (int r = 0; r < R; r++)
                x[rows[r]] = (first ? pre.x[r] : ldcg(x + rows[r])) + finish<WK>(v[r], st, first ? pre.s[r] : rs[rows[r]]);
        }
    }
}

// x += Wo (attn_sub_norm(att) or att); an item is R rows. att is read
// through a Load: VecLoad, or MergeLoad where k_qkv_attn left partials.
template <int BT, int R, class Load, class PreT = NoPre<R>>
__device__ void wo_body(Load att, const float *__restrict__ nw, const u8 *__restrict__ W,
                        const u16 *__restrict__ D, const float *__restrict__ rs, float *x, char *sm, float *red,
                        const PreT &pre = PreT()) {
    residual_body<BT, QD, R>(att, SUBNORM ? nw : (const float *)0, W, D, rs, x, sm, red, pre);
}

// hb = act(Wgate u) * (Wup u), u = RMSNorm(x). W holds the FFN gate rows
// then the FFN up rows; an item is rows i..i+R-1 of each.
template <int BT, int R, class PreT = NoPre<2 * R>>
__device__ void gateup_body(const float *x, const float *__restrict__ nw, const u8 *__restrict__ W,
                            const u16 *__restrict__ D, const float *__restrict__ rs, float *hb, char *sm, float *red,
                            const PreT &pre = PreT()) {
    typedef Mat<WK, DIM> M;
    constexpr int NI = FFN / R;
    if (!has_items<BT, M::TPR>(NI)) return;
    Staged st = stage<WK, DIM, BT>(VecLoad{x}, nw, sm, red);
    FOR_ITEMS(M, NI) {
        const int i0 = (valid ? item : 0) * R;
        int rows[2 * R];
#pragma unroll
        for (int r = 0; r < R; r++) {
            rows[r] = i0 + r;
            rows[R + r] = FFN + i0 + r;
        }
        float v[2 * R];
#pragma unroll
        for (int r = 0; r < 2 * R; r++) v[r] = 0.f;
        const bool first = pre.first(item);
        if (valid) rdot<WK, DIM, 2 * R>(W, D, rows, l, sm, v);
#pragma unroll
        for (int r = 0; r < 2 * R; r++) v[r] = group_sum<M::TPR>(v[r]);
        if (valid && l == 0) {
#pragma unroll
            for (int r = 0; r < R; r++) {
                float g = finish<WK>(v[r], st, first ? pre.s[r] : rs[rows[r]]);
                float u = finish<WK>(v[R + r], st, first ? pre.s[R + r] : rs[rows[R + r]]);
                float a;
                if (ACT_RELU2) { float q = fmaxf(g, 0.f); a = q * q; }
                else a = f_div(g, 1.f + f_exp(-g));
                hb[i0 + r] = a * u;
            }
        }
    }
}

// x += Wdown (ffn_sub_norm(hb) or hb); an item is R rows.
template <int BT, int R, class Load, class PreT = NoPre<R>>
__device__ void down_body(Load hb, const float *__restrict__ nw, const u8 *__restrict__ W,
                          const u16 *__restrict__ D, const float *__restrict__ rs, float *x, char *sm, float *red,
                          const PreT &pre = PreT()) {
    residual_body<BT, FFN, R>(hb, SUBNORM ? nw : (const float *)0, W, D, rs, x, sm, red, pre);
}

// block_argmax reduces the threads' (value, id) pairs, the lowest id on
// ties; thread 0 ends with the block's. wv and wi hold BT/32 entries.
template <int BT> __device__ __forceinline__ void block_argmax(float &bv, int &bi, float *wv, int *wi) {
    const int tid = threadIdx.x;
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
    }
    if ((tid & 31) == 0) { wv[tid >> 5] = bv; wi[tid >> 5] = bi; }
    __syncthreads();
    if (tid == 0)
        for (int w = 1; w < BT / 32; w++)
            if (wv[w] > bv || (wv[w] == bv && wi[w] < bi)) { bv = wv[w]; bi = wi[w]; }
}

// The LM head's rows a work item (compile.go lmHeadItems) and most 16-byte
// chunks a lane loads at once (the other products: 4).
#define R_HEAD 4
#define HEAD_B 4

// logits = Output RMSNorm(x); each block's best (value, id) goes to best[],
// and the last block to finish writes the argmax into tp[0] (the next
// token) and tok_out[0]. Blocks without rows take part with no candidate.
template <int BT, class PreT = NoPre<R_HEAD>>
__device__ void lmhead_body(const float *x, const float *__restrict__ nw, const u8 *__restrict__ W,
                            const u16 *__restrict__ D, const float *__restrict__ rs, float *logits, float *bestv,
                            int *besti, u32 *counter, int *tp, int *tok_out, char *sm, float *red,
                            const PreT &pre = PreT()) {
    typedef Mat<HK, DIM> M;
    __shared__ float wv[BT / 32];
    __shared__ int wi[BT / 32];
    __shared__ int last;
    float bv = -3.0e38f;
    int bi = 0x7fffffff;
    constexpr int NI = (VOCAB + R_HEAD - 1) / R_HEAD; // items of R_HEAD rows: more loads in flight per lane
    if (has_items<BT, M::TPR>(NI)) {
        Staged st = stage<HK, DIM, BT>(VecLoad{x}, nw, sm, red);
        FOR_ITEMS(M, NI) {
            int rows[R_HEAD];
#pragma unroll
            for (int r = 0; r < R_HEAD; r++) rows[r] = min(R_HEAD * (valid ? item : 0) + r, VOCAB - 1);
            float v[R_HEAD];
#pragma unroll
            for (int r = 0; r < R_HEAD; r++) v[r] = 0.f;
            if (valid) rdot<HK, DIM, R_HEAD, HEAD_B>(W, D, rows, l, sm, v);
#pragma unroll
            for (int r = 0; r < R_HEAD; r++) v[r] = group_sum<M::TPR>(v[r]);
            if (valid && l == 0) {
                const bool first = pre.first(item);
#pragma unroll
                for (int r = 0; r < R_HEAD; r++) {
                    int row = R_HEAD * item + r;
                    if (row >= VOCAB) break;
                    float y = finish<HK>(v[r], st, first ? pre.s[r] : rs[row]);
                    logits[row] = y;
                    if (y > bv || (y == bv && row < bi)) { bv = y; bi = row; }
                }
            }
        }
    }
    const int tid = threadIdx.x;
    block_argmax<BT>(bv, bi, wv, wi);
    if (tid == 0) {
        bestv[blockIdx.x] = bv;
        besti[blockIdx.x] = bi;
        fence_acq_rel();
        last = atomicAdd(counter, 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (!last) return;
    // The last block reduces every block's best in parallel: one thread
    // walking the list would pay an L2 round trip a block.
    fence_acq_rel(); // acquires the other blocks' (value, id) pairs
    bv = -3.0e38f;
    bi = 0x7fffffff;
    for (int b = tid; b < (int)gridDim.x; b += BT) {
        const float v = ldcg(bestv + b);
        const int i = ldcg_i(besti + b);
        if (v > bv || (v == bv && i < bi)) { bv = v; bi = i; }
    }
    block_argmax<BT>(bv, bi, wv, wi);
    if (tid != 0) return;
    if (bi < 0 || bi >= VOCAB) bi = 0; // all NaN: keep a valid id
    tp[0] = bi;
    tok_out[0] = bi;
    *counter = 0;
}

// Attention over the KV cache: the decode step's k_attn (flash-decoding,
// after k_qkv) and k_qkv_attn (QKV and attention in one kernel, where the
// QKV rows are short), and MergeLoad, which merges k_qkv_attn's partials
// where the output projection reads its input.

// Flash-decoding attention: one warp per (head h, slice s) item, so no
// block barrier is on the path. Query head h attends over one slice of
// positions 0..pos: slices of ATT_CHUNK positions while there are at most
// nsplit of them, else nsplit equal slices. Lane L owns the ATT_DPL
// adjacent dims L*ATT_DPL.. (a cached row is one 8- or 16-byte load a
// lane); the key and value rows of ATT_CH positions are loaded at once,
// then an online softmax folds them in. Each item writes its unnormalised
// output with its max and sum; the last warp of head h to finish merges the
// slices by log-sum-exp into out.
#define ATT_NT 128    // threads of an attention block (4 items)
#define ATT_CHUNK 16 // positions a slice takes while there are at most nsplit slices (session.go nsplit)
#define ATT_DPL ((HD + 31) / 32)          // dims per lane
#define ATT_D(lane, k) ((lane) * ATT_DPL + (k))
#define ATT_CH (HD <= 64 ? 16 : 8) // positions loaded at once
#define ATT_MB (HD <= 64 ? 16 : 8) // slices a merge round loads
__device__ __forceinline__ int att_slices(int pos, int nsplit) {
    int nact = (pos + 1 + ATT_CHUNK - 1) / ATT_CHUNK;
    return nact < nsplit ? nact : nsplit;
}

// ATT_EARLY: a warp loads its first batch of cached rows before its wait,
// only where one batch is the whole slice (HD 64): with 128-wide heads (8
// rows a batch) holding the batch across the wait costs registers that
// long positions want.
#define ATT_EARLY (ATT_CH >= ATT_CHUNK)

// prefetch_kv warms L2 with the key and value rows of positions [t0, t1)
// at KV offset kvo, spread over n threads (thread i of them). A step's
// attention reads rows written tokens ago, long evicted by the weights
// streamed since; the position and earlier rows do not depend on the
// previous kernel, so this runs before grid_dep_wait. (Rows the step
// itself writes later are harmless to prefetch: L2 is where writes land.)
__device__ __forceinline__ void prefetch_kv(const kv_t *kc, const kv_t *vc, int kvo, int t0, int t1, int i, int n) {
    constexpr int LINES = (HD * (int)sizeof(kv_t) + 127) / 128; // 128-byte lines of a row
    for (int j = i; j < (t1 - t0) * LINES; j += n) {
        const size_t off = (size_t)(t0 + j / LINES) * KVD + kvo + (j % LINES) * (128 / sizeof(kv_t));
        asm volatile("prefetch.global.L2 [%0];" ::"l"(kc + off));
        asm volatile("prefetch.global.L2 [%0];" ::"l"(vc + off));
    }
}

// attn_range is the positions [t0, t1) of slice s of positions 0..pos.
__device__ __forceinline__ bool attn_range(int s, int pos, int nsplit, int &t0, int &t1) {
    const int n = pos + 1, nact = att_slices(pos, nsplit);
    if (s >= nact) return false;
    const int len = (n + nact - 1) / nact;
    t0 = s * len;
    t1 = min(n, t0 + len);
    return true;
}

// AttRows is a batch of CH cached key and value rows, the lane's dims of
// each.
template <int CH> struct AttRows {
    kv_t k[CH][ATT_DPL], v[CH][ATT_DPL];

    __device__ __forceinline__ void zero() {
#pragma unroll
        for (int i = 0; i < CH; i++)
#pragma unroll
            for (int j = 0; j < ATT_DPL; j++) k[i][j] = v[i][j] = kv_t{};
    }

    // load reads rows c0..c0+CH-1 whose position is in [lo, hi), of the
    // KV head at offset kvo; the others keep what they hold.
    __device__ __forceinline__ void load(const kv_t *kc, const kv_t *vc, int kvo, int c0, int lo, int hi) {
        const int lane = threadIdx.x & 31;
#pragma unroll
        for (int i = 0; i < CH; i++) {
            const int t = c0 + i;
            if (!KVH && (ATT_DPL == 2 || ATT_DPL == 4)) {
                // the lane's dims in one vector load
                const int d = ATT_D(lane, 0);
                if (t >= lo && t < hi && d < HD) {
                    const float *pk = (const float *)(kc + (size_t)t * KVD + kvo + d);
                    const float *pv = (const float *)(vc + (size_t)t * KVD + kvo + d);
                    float *rk = (float *)k[i], *rv = (float *)v[i];
                    if (ATT_DPL == 2) {
                        asm volatile("ld.global.cg.v2.f32 {%0,%1}, [%2];" : "=f"(rk[0]), "=f"(rk[1]) : "l"(pk));
                        asm volatile("ld.global.cg.v2.f32 {%0,%1}, [%2];" : "=f"(rv[0]), "=f"(rv[1]) : "l"(pv));
                    } else {
                        asm volatile("ld.global.cg.v4.f32 {%0,%1,%2,%3}, [%4];"
                                     : "=f"(rk[0]), "=f"(rk[1]), "=f"(rk[2]), "=f"(rk[3]) : "l"(pk));
                        asm volatile("ld.global.cg.v4.f32 {%0,%1,%2,%3}, [%4];"
                                     : "=f"(rv[0]), "=f"(rv[1]), "=f"(rv[2]), "=f"(rv[3]) : "l"(pv));
                    }
                }
                continue;
            }
#pragma unroll
            for (int j = 0; j < ATT_DPL; j++) {
                const int d = ATT_D(lane, j);
                if (t >= lo && t < hi && d < HD) {
                    k[i][j] = kv_ld(kc + (size_t)t * KVD + kvo + d);
                    v[i][j] = kv_ld(vc + (size_t)t * KVD + kvo + d);
                }
            }
        }
    }
};

// AttState is one warp's online softmax over the positions it has folded
// in: the lane's dims of the scaled query and of the unnormalised output,
// the running maximum score m and the sum l of exp(score - m).
struct AttState {
    float qv[ATT_DPL], o[ATT_DPL];
    float m = -3.0e38f, l = 0.f;

    // begin takes head h's query from q (the lane's dims, times 1/sqrt(HD)).
    template <class Load> __device__ __forceinline__ void begin(Load q, int h) {
        const int lane = threadIdx.x & 31;
        const float scale = 1.f / sqrtf((float)HD);
#pragma unroll
        for (int j = 0; j < ATT_DPL; j++) {
            const int d = ATT_D(lane, j);
            qv[j] = d < HD ? q(h * HD + d) * scale : 0.f;
            o[j] = 0.f;
        }
    }

    // fold adds the rows of positions c0.. (those below t1) of a batch.
    template <int CH> __device__ __forceinline__ void fold(const AttRows<CH> &r, int c0, int t1) {
        const int lane = threadIdx.x & 31;
        // Scores: each lane's partial dot products of the CH positions,
        // summed over the warp by a transposing butterfly (each level halves
        // the values a lane holds): CH - 1 + log2(32 / CH) shuffles
        // in all, independent within a level, after which lane L holds
        // position L / (32 / CH)'s whole score.
        float sc[CH];
#pragma unroll
        for (int i = 0; i < CH; i++) {
            float a = 0.f;
#pragma unroll
            for (int j = 0; j < ATT_DPL; j++) a += qv[j] * kv_f(r.k[i][j]);
            sc[i] = a;
        }
#pragma unroll
        for (int w = CH / 2, o = 16; w >= 1; w /= 2, o /= 2) {
            const bool upper = lane & o;
#pragma unroll
            for (int j = 0; j < w; j++) {
                const float send = upper ? sc[j] : sc[j + w], keep = upper ? sc[j + w] : sc[j];
                sc[j] = keep + __shfl_xor_sync(0xffffffffu, send, o);
            }
        }
        constexpr int REP = 32 / CH; // lanes holding each score
        float sv = sc[0];
#pragma unroll
        for (int o = REP / 2; o > 0; o >>= 1) sv += __shfl_xor_sync(0xffffffffu, sv, o);
        const int mine = lane / REP;
        sv = c0 + mine < t1 ? sv : -3.0e38f;
        // The max and the sum over the CH positions: each is held by REP
        // lanes alike, so the lanes REP and more apart are enough.
        float mx = sv;
#pragma unroll
        for (int o = 16; o >= REP; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        const float cm = fmaxf(m, mx);
        const float p = c0 + mine < t1 ? f_exp(sv - cm) : 0.f;
        const float corr = f_exp(m - cm);
        float ps = p;
#pragma unroll
        for (int o = 16; o >= REP; o >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, o);
        l = l * corr + ps;
#pragma unroll
        for (int j = 0; j < ATT_DPL; j++) o[j] *= corr;
#pragma unroll
        for (int i = 0; i < CH; i++) {
            const float pi = __shfl_sync(0xffffffffu, p, i * REP);
#pragma unroll
            for (int j = 0; j < ATT_DPL; j++) o[j] += pi * kv_f(r.v[i][j]);
        }
        m = cm;
    }
};

// The key and value rows of positions [t0, t1) older than `old` (written
// before this launch) may load before the caller's wait; the rest, written
// by this step's QKV, only after it. attn_warp calls wait() once, after the
// first batch of old rows is in flight, so that round trip overlaps the
// previous kernel instead of following it.
template <class Wait>
__device__ void attn_warp(int h, int s, int pos, int old, const float *q, const kv_t *kc, const kv_t *vc, float *out,
                          float *part, u32 *counters, int nsplit, Wait wait) {
    const int lane = threadIdx.x & 31;
    const int nact = att_slices(pos, nsplit);
    int t0, t1;
    if (!attn_range(s, pos, nsplit, t0, t1)) return;
    const int kvo = (h / (NH / NKV)) * HD;
    AttRows<ATT_CH> rows;
    constexpr bool EARLY = ATT_EARLY;
    if (EARLY) {
        rows.zero();
        rows.load(kc, vc, kvo, t0, t0, min(t1, old)); // rows of earlier steps: before the wait
    }
    wait();
    if (EARLY) rows.load(kc, vc, kvo, t0, old, t1); // this step's rows

    AttState st;
    st.begin([&](int i) { return ldcg(q + i); }, h);
    for (int c0 = t0; c0 < t1; c0 += ATT_CH) {
        if (!EARLY || c0 != t0) {
            rows.zero();
            rows.load(kc, vc, kvo, c0, c0, t1);
        }
        st.fold(rows, c0, t1);
    }
    float *o = st.o;
    const float m = st.m, l = st.l;
    if (nact == 1) {
#pragma unroll
        for (int k = 0; k < ATT_DPL; k++)
            if (ATT_D(lane, k) < HD) out[h * HD + ATT_D(lane, k)] = f_div(o[k], l);
        return;
    }
    float *pp = part + ((size_t)h * nsplit + s) * (HD + 2);
#pragma unroll
    for (int k = 0; k < ATT_DPL; k++)
        if (ATT_D(lane, k) < HD) pp[ATT_D(lane, k)] = o[k];
    if (lane == 0) {
        pp[HD] = m;
        pp[HD + 1] = l;
    }
    fence_acq_rel(); // releases the partial (the atomic below is relaxed)
    __syncwarp();
    int last = 0;
    if (lane == 0) last = atomicAdd(&counters[h], 1u) == (u32)(nact - 1);
    last = __shfl_sync(0xffffffffu, last, 0);
    if (!last) return;
    fence_acq_rel(); // acquires the other slices' partials
    // merge: lane j (and j+32) holds slice j's weight exp(m_j - M). The
    // maxima, sums and the first ATT_MB slices' outputs load in one round.
    const float *ph = part + (size_t)h * nsplit * (HD + 2);
    float pv[ATT_MB][ATT_DPL];
    auto load_parts = [&](int j0) {
#pragma unroll
        for (int j = 0; j < ATT_MB; j++)
#pragma unroll
            for (int k = 0; k < ATT_DPL; k++) {
                const int d = ATT_D(lane, k);
                pv[j][k] = j0 + j < nact && d < HD ? ldcg(ph + (size_t)(j0 + j) * (HD + 2) + d) : 0.f;
            }
    };
    float m0 = lane < nact ? ldcg(ph + (size_t)lane * (HD + 2) + HD) : -3.0e38f;
    float m1 = lane + 32 < nact ? ldcg(ph + (size_t)(lane + 32) * (HD + 2) + HD) : -3.0e38f;
    float l0 = lane < nact ? ldcg(ph + (size_t)lane * (HD + 2) + HD + 1) : 0.f;
    float l1 = lane + 32 < nact ? ldcg(ph + (size_t)(lane + 32) * (HD + 2) + HD + 1) : 0.f;
    load_parts(0);
    const float M = warp_max(fmaxf(m0, m1));
    const float w0 = lane < nact ? f_exp(m0 - M) : 0.f, w1 = lane + 32 < nact ? f_exp(m1 - M) : 0.f;
    const float inv = 1.f / warp_sum(w0 * l0 + w1 * l1);
#pragma unroll
    for (int k = 0; k < ATT_DPL; k++) o[k] = 0.f;
    for (int j0 = 0;;) {
#pragma unroll
        for (int j = 0; j < ATT_MB; j++) {
            const int jj = j0 + j;
            const float wj = __shfl_sync(0xffffffffu, jj < 32 ? w0 : w1, jj & 31);
#pragma unroll
            for (int k = 0; k < ATT_DPL; k++) o[k] += wj * pv[j][k];
        }
        if ((j0 += ATT_MB) >= nact) break;
        load_parts(j0);
    }
#pragma unroll
    for (int k = 0; k < ATT_DPL; k++)
        if (ATT_D(lane, k) < HD) out[h * HD + ATT_D(lane, k)] = o[k] * inv;
    if (lane == 0) counters[h] = 0;
}

// ------------------------------------------- QKV and attention in one kernel
//
// FUSE_ATT (host-set, compile.go fusedAttention: short QKV rows): the decode
// step runs k_qkv_attn instead of k_qkv and k_attn. A query head has FA_B =
// FA_S + 2 blocks. Block s < FA_S computes the head's q from RMSNorm(x)
// itself, then attends over its share of the older positions, whose cached
// rows and weights it loaded before its wait; its warps' partial softmaxes
// merge in shared memory. This position's key and value take the other two:
// block FA_S (FA_KB) computes q and the KV head's k, hence this position's
// score, block FA_S + 1 (FA_VB) the v; they write them into the cache where
// h is the KV head's first query head, and attend over nothing, so no block
// has more than two heads' rows and one pass of attention (k and v blocks
// that also attended would finish last). A head's FA_S partials and this
// position (a partial of its own: output v, max the score, sum 1) merge
// where the output projection loads its input (MergeLoad). So a layer
// loses a kernel boundary, the projection's weight round trip after the
// wait, and the slices' fence, ticket and merge.
// FA_S (blocks a head, at least 2) and FA_BT (threads a block) are the
// host's launch shape (compile.go fusedAttention).
#if !defined(FUSE_ATT) || !defined(FA_S) || !defined(FA_BT)
#error "the host passes FUSE_ATT, FA_S and FA_BT"
#endif
#define FA_CH 8 // cached rows a warp loads at once: one batch up to FA_S * FA_W * FA_CH positions
#define FA_W (FA_BT / 32)
#define FA_B (FA_S + 2) // blocks a head: FA_S attend, then the k and v blocks
#define FA_KB FA_S       // the k block
#define FA_VB (FA_S + 1) // the v block
#ifndef FA_TRACE
#define FA_TRACE 0 // harness switch: k_qkv_attn clocks its phases (below)
#endif
#define FA_SLOTS (FA_S + 1) // partials a head: the blocks', this position's
#define FA_PART (HD + 2)    // a partial: output, max, sum
// fa_mg is how many threads merge one dim of a block's warps' partials:
// the most (a power of two, at most FA_W and 32) that leave every thread
// one dim, in whole warps (HD * g a multiple of 32), else 1.
__host__ __device__ constexpr int fa_mg() {
    int g = 1;
    while (g * 2 <= FA_W && g * 2 <= 32 && HD * g * 2 <= FA_BT) g *= 2;
    return (HD * g) % 32 == 0 ? g : 1;
}
#define FA_MG fa_mg()

// MergeLoad reads dim i of the attention output from k_qkv_attn's
// partials (a Load, stage's), merged by log-sum-exp.
struct MergeLoad {
    const float *part;
    struct Raw {
        float m[FA_SLOTS], l[FA_SLOTS], o[FA_SLOTS];
    };
    __device__ __forceinline__ Raw fetch(int i) const {
        const float *p = part + (size_t)(i / HD) * FA_SLOTS * FA_PART;
        const int d = i % HD;
        Raw r;
#pragma unroll
        for (int s = 0; s < FA_SLOTS; s++) {
            r.m[s] = ldcg(p + s * FA_PART + HD);
            r.l[s] = ldcg(p + s * FA_PART + HD + 1);
            r.o[s] = ldcg(p + s * FA_PART + d);
        }
        return r;
    }
    __device__ __forceinline__ float value(const Raw &r) const {
        float mx = r.m[0];
#pragma unroll
        for (int s = 1; s < FA_SLOTS; s++) mx = fmaxf(mx, r.m[s]);
        float num = 0.f, den = 0.f;
#pragma unroll
        for (int s = 0; s < FA_SLOTS; s++) {
            const float w = f_exp(r.m[s] - mx);
            num += w * r.o[s];
            den += w * r.l[s];
        }
        return f_div(num, den);
    }
};

// One warp per attention item; ATT_NT / 32 items per block.
extern "C" __global__ void __launch_bounds__(ATT_NT) k_attn(const int *__restrict__ tp, const float *q, const kv_t *kc,
                                                             const kv_t *vc, float *out, float *part, u32 *counters,
                                                             int nsplit) {
    const int item = blockIdx.x * (ATT_NT / 32) + (threadIdx.x >> 5), y = blockIdx.y;
    {
        int t0, t1;
        // (with ATT_EARLY the first batch's rows are loaded, not prefetched)
        if (item < NH * nsplit && attn_range(item % nsplit, tp[1] + y, nsplit, t0, t1))
            prefetch_kv(kc, vc, (item / nsplit / (NH / NKV)) * HD, ATT_EARLY ? min(t0 + ATT_CH, t1) : t0, t1,
                        threadIdx.x & 31, 32);
    }
    // The batch's first position tp[1]: rows before it are older than this
    // launch and load before the wait.
    auto wait = []() {
        grid_dep_wait();
        pdl_after_wait(P_ATTN);
    };
    if (item < NH * nsplit)
        attn_warp(item / nsplit, item % nsplit, tp[1] + y, tp[1], q + (size_t)y * QD, kc, vc, out + (size_t)y * QD,
                  part + (size_t)y * NH * nsplit * (HD + 2), counters + y * NH, nsplit, wait);
    else
        wait();
    pdl_after_work(P_ATTN);
}

// k_qkv_attn: see FUSE_ATT. Block h * FA_B + s; tp as k_qkv's.
extern "C" __global__ void __launch_bounds__(FA_BT) k_qkv_attn(const int *__restrict__ tp, const float *x,
                                                                const float *__restrict__ nw, const u8 *__restrict__ W,
                                                                const u16 *__restrict__ D, const float *__restrict__ rs,
                                                                const float2 *__restrict__ rope, kv_t *kc, kv_t *vc,
                                                                float *part, u64 *trace) {
#if FUSE_ATT // (an empty entry point where the host does not run it)
    // FA_TRACE (harness): thread 0 of head 0's v, k and first blocks
    // (FA_VB, FA_KB, 0) clock the kernel's phases into trace[16 * b + k]
    // (b = 0, 1, 2).
#if FA_TRACE
#define FA_MARK(k)                                                                                  \
    if (threadIdx.x == 0 && (blockIdx.x == 0 || blockIdx.x == FA_KB || blockIdx.x == FA_VB)) {      \
        u64 t_;                                                                                     \
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t_));                                      \
        trace[(blockIdx.x == FA_VB ? 0 : blockIdx.x == FA_KB ? 16 : 32) + (k)] = t_;                \
    }
#else
#define FA_MARK(k)
#endif
    FA_MARK(0);
    static_assert(FA_S >= 2, "k_qkv_attn: at least two blocks a head");
    typedef Mat<WK, DIM> M;
    typedef RowBatch<WK, DIM, 2> RB;
    constexpr int TPR = M::TPR, IPP = FA_BT / TPR; // rotation pairs a pass of the block
    constexpr int NPH = HD / 2;                    // pairs of a head
    constexpr int NPASS = (2 * NPH + IPP - 1) / IPP;
    // passes whose weights load before the wait: at most 8 chunks a lane
    constexpr int PRE = NPASS * RB::B * 2 <= 8 ? NPASS : 8 / (RB::B * 2) > 0 ? 8 / (RB::B * 2) : 1;
    extern __shared__ __attribute__((aligned(16))) char sm[];
    __shared__ float red[64];
    __shared__ float cur[3][HD]; // this position's q, and k or v
    // (rows padded by 2: the merge's lanes, FA_W / FA_MG warps apart, hit
    // distinct banks)
    __shared__ float po[FA_W][HD + 2], pm[FA_W], pl[FA_W];
    const int h = blockIdx.x / FA_B, s = blockIdx.x % FA_B, g = h / (NH / NKV), kvo = g * HD;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, l = threadIdx.x % TPR;
    const int pos = tp[1];
    // region 1 (k) for the k block, 2 (v) for the v block, none for the others
    const int kv = s == FA_KB ? 1 : s == FA_VB ? 2 : 0;
    const bool attends = kv == 0; // over older positions
    const bool hasq = kv != 2;    // computes q
    const int npairs = (hasq ? NPH : 0) + (kv ? NPH : 0);
    // The block's pair j: head h's q pairs, then KV head g's k or v pairs.
    auto pair = [&](int j) {
        const int i = j % NPH;
        return QKVPair(hasq && j < NPH ? h * NPH + i : kv == 1 ? QD / 2 + g * NPH + i : (QD + KVD) / 2 + g * NPH + i);
    };
    float *slot = part + (size_t)h * FA_SLOTS * FA_PART; // the head's partials

    // Before the wait: the first passes' weights, their scales and RoPE
    // rotations, and the first batch of this warp's older cached rows.
    RB wb[PRE];
    float sc[NPASS][2] = {}, sn[NPASS], cs[NPASS];
#pragma unroll
    for (int p = 0; p < NPASS; p++) {
        const int j = p * IPP + threadIdx.x / TPR;
        sn[p] = 0.f;
        cs[p] = 1.f;
        if (j >= npairs) continue;
        const QKVPair it = pair(j);
        if (p < PRE) wb[p].load(W, D, it.rows, l, 0);
        if (l == 0) {
            sc[p][0] = rs[it.rows[0]];
            sc[p][1] = rs[it.rows[1]];
            if (it.region < 2) {
                const float2 r = rope_at(rope, pos, it.i);
                cs[p] = r.x;
                sn[p] = r.y;
            }
        }
    }
    constexpr int NSL = FA_S * FA_W; // slices of the older positions 0..pos-1
    const int len = (pos + NSL - 1) / NSL, t0 = attends ? (s * FA_W + warp) * len : 0,
              t1 = attends ? min(pos, t0 + len) : 0;
    AttRows<FA_CH> rows;
    rows.zero();
    rows.load(kc, vc, kvo, t0, t0, min(t1, t0 + FA_CH));
    if (t1 - t0 > FA_CH) prefetch_kv(kc, vc, kvo, t0 + FA_CH, t1, lane, 32);
    prefetch_norm<DIM, true>(nw);
    FA_MARK(1);
    grid_dep_wait();
    FA_MARK(2);
    pdl_after_wait(P_ATTN);
    const Staged st = stage<WK, DIM, FA_BT>(VecLoad{x}, nw, sm, red, [&](int k) { FA_MARK(k); });
    FA_MARK(3);
#pragma unroll
    for (int p = 0; p < NPASS; p++) {
        const int j = p * IPP + threadIdx.x / TPR;
        if (p * IPP >= npairs) break; // block-uniform
        const QKVPair it = pair(j < npairs ? j : 0);
        float v[2] = {0.f, 0.f};
        if (j < npairs) rdot<WK, DIM, 2>(W, D, it.rows, l, sm, v, p < PRE ? &wb[p] : nullptr);
        v[0] = group_sum<TPR>(v[0]);
        v[1] = group_sum<TPR>(v[1]);
        if (j < npairs && l == 0) {
            float v0 = finish<WK>(v[0], st, sc[p][0]), v1 = finish<WK>(v[1], st, sc[p][1]);
            if (it.region < 2) rotate(v0, v1, cs[p], sn[p]);
            cur[it.region][it.a] = v0;
            cur[it.region][it.b] = v1;
            if (it.region > 0 && h % (NH / NKV) == 0) { // one block of the KV head writes the cache
                kv_t *c = (it.region == 1 ? kc : vc) + (size_t)pos * KVD + kvo;
                c[it.a] = kv_of(v0);
                c[it.b] = kv_of(v1);
            }
        }
    }
    __syncthreads();
    FA_MARK(4);

    AttState as;
    as.begin([&](int i) { return cur[0][i]; }, 0);
    for (int c0 = t0; c0 < t1; c0 += FA_CH) {
        if (c0 != t0) {
            rows.zero();
            rows.load(kc, vc, kvo, c0, c0, t1);
        }
        as.fold(rows, c0, t1);
    }
    // This position's partial: the score (k block) and the value (v block).
    if (kv == 1 && warp == FA_W - 1) {
        float a = 0.f;
#pragma unroll
        for (int j = 0; j < ATT_DPL; j++)
            if (ATT_D(lane, j) < HD) a += as.qv[j] * cur[1][ATT_D(lane, j)];
        a = warp_sum(a);
        if (lane == 0) {
            slot[FA_S * FA_PART + HD] = a;
            slot[FA_S * FA_PART + HD + 1] = 1.f;
        }
    }
    if (kv == 2)
        for (int d = threadIdx.x; d < HD; d += FA_BT) slot[FA_S * FA_PART + d] = cur[2][d];
    FA_MARK(5);
    if (!attends) { // (block-uniform)
        FA_MARK(6);
        FA_MARK(7);
        pdl_after_work(P_ATTN);
        return;
    }
#pragma unroll
    for (int j = 0; j < ATT_DPL; j++)
        if (ATT_D(lane, j) < HD) po[warp][ATT_D(lane, j)] = as.o[j];
    if (lane == 0) {
        pm[warp] = as.m;
        pl[warp] = as.l;
    }
    __syncthreads();
    FA_MARK(6);
    // The block's partial: its warps' merged by log-sum-exp, FA_MG adjacent
    // lanes a dim, each taking FA_W / FA_MG warps, summed by shuffles (one
    // thread a dim looping over the 16 warps is a chain of 16 exponentials).
    {
        float mx = pm[0];
#pragma unroll
        for (int w = 1; w < FA_W; w++) mx = fmaxf(mx, pm[w]);
        float *pp = slot + s * FA_PART;
        for (int t = threadIdx.x; t < HD * FA_MG; t += FA_BT) { // (whole warps: fa_mg)
            const int d = t / FA_MG, g = t % FA_MG;
            float o = 0.f, sum = 0.f;
#pragma unroll
            for (int k = 0; k < FA_W / FA_MG; k++) {
                const int w = g * (FA_W / FA_MG) + k;
                const float e = f_exp(pm[w] - mx);
                o += e * po[w][d];
                sum += e * pl[w];
            }
#pragma unroll
            for (int m = FA_MG / 2; m > 0; m >>= 1) {
                o += __shfl_xor_sync(0xffffffffu, o, m);
                sum += __shfl_xor_sync(0xffffffffu, sum, m);
            }
            if (g == 0) {
                pp[d] = o;
                if (d == 0) {
                    pp[HD] = mx;
                    pp[HD + 1] = sum;
                }
            }
        }
    }
    FA_MARK(7);
    pdl_after_work(P_ATTN);
#endif
}
// The entry points of the decode step (session.go steps: the CUDA graph of
// k_embed, per layer k_qkv, k_attn, k_wo, k_gateup and k_down, or
// k_qkv_attn and k_wo where QKV and attention are one kernel, then
// k_lmhead) and of prefill. Each launches its body over the grid with the
// dependent-launch protocol around it: load what does not depend on the
// previous kernel (weights into L2, Pre), grid_dep_wait, the body.
//
// The kernels also run a prefill: blockIdx.y is the token of the batch (at
// position tp[1] + y), its activations at row y of each buffer; a decode
// step is the batch of one.
//
// tp: [0] token id, [1] position, written by the host (pinned copy in the
// graph) or by the LM head's argmax.

// x = embedding row of the token.
__device__ __forceinline__ void embed_body(int tok, const u8 *__restrict__ E, const u16 *__restrict__ ED,
                                           float escale, float *x) {
    tok = tok < 0 ? 0 : tok >= VOCAB ? VOCAB - 1 : tok;
    constexpr int KP = PADK(DIM);
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < DIM; i += gridDim.x * blockDim.x) {
        float v;
        if (EK == KF32) v = ((const float *)E)[(size_t)tok * KP + i];
        else if (EK == KF16) v = h2f(((const u16 *)E)[(size_t)tok * KP + i]);
        else v = (float)((const i8 *)E)[(size_t)tok * KP + i] * h2f(ED[(size_t)tok * (KP / 32) + i / 32]);
        x[i] = v * escale;
    }
}

extern "C" __global__ void __launch_bounds__(256) k_embed(const int *__restrict__ toks, const u8 *__restrict__ E,
                                                          const u16 *__restrict__ ED, float escale, float *__restrict__ x) {
    grid_dep_wait();
    pdl_after_wait(P_EMBED);
    embed_body(toks[blockIdx.y], E, ED, escale, x + (size_t)blockIdx.y * DIM);
    pdl_after_work(P_EMBED);
}

// The products come in two entry points each: k_X, the decode step's
// (STEP), with Pre where the host turns it on (PRE_LOAD), and k_X_b,
// prefill's, without.
#define PRODUCT_KERNELS(NAME, BTV, PARAMS, ARGS)                                                              \
    extern "C" __global__ void __launch_bounds__(BTV) NAME PARAMS { NAME##_run<PRE_LOAD != 0, true> ARGS; } \
    extern "C" __global__ void __launch_bounds__(BTV) NAME##_b PARAMS { NAME##_run<false, false> ARGS; }

template <bool ON, bool STEP>
__device__ __forceinline__ void k_qkv_run(const int *__restrict__ tp, const float *x, const float *__restrict__ nw,
                                          const u8 *__restrict__ W, const u16 *__restrict__ D,
                                          const float *__restrict__ rs, const float2 *__restrict__ rope, float *q,
                                          kv_t *kc, kv_t *vc) {
    constexpr int BT = BT_QKV;
    typedef Mat<WK, DIM> M;
    extern __shared__ __attribute__((aligned(16))) char sm[];
    __shared__ float red[64];
    prefetch_rows<WK, DIM>(W, 2 * blockIdx.x * (BT / M::TPR), 2 * (BT / M::TPR), QD + 2 * KVD);
    prefetch_norm<DIM, ON>(nw);
    const int y = blockIdx.y, pos = tp[1] + y; // the host's upload, older than this launch
    const Pre<2, ON> pre = pre_qkv<BT, ON>(pos, rs, rope);
    grid_dep_wait();
    pdl_after_wait(P_QKV);
    qkv_body<BT>(pos, x + (size_t)y * DIM, nw, W, D, rs, rope, q + (size_t)y * QD, kc, vc, sm, red, pre);
    pdl_after_work(P_QKV);
}
PRODUCT_KERNELS(k_qkv, BT_QKV,
                (const int *__restrict__ tp, const float *x, const float *__restrict__ nw, const u8 *__restrict__ W,
                 const u16 *__restrict__ D, const float *__restrict__ rs, const float2 *__restrict__ rope, float *q,
                 kv_t *kc, kv_t *vc),
                (tp, x, nw, W, D, rs, rope, q, kc, vc))

// The residual products: k_wo (x += Wo attn_sub_norm(att)) and k_down
// (x += Wdown ffn_sub_norm(hb)), one kernel shape with its own width K,
// block size and rows per item.
// MERGE: the decode step's input is k_qkv_attn's partials where FUSE_ATT.
#define RESIDUAL_KERNEL(NAME, BTV, K, R, BODY, P, MERGE)                                                   \
    template <bool ON, bool STEP>                                                                         \
    __device__ __forceinline__ void NAME##_run(const float *in, const float *__restrict__ nw,              \
                                               const u8 *__restrict__ W, const u16 *__restrict__ D,         \
                                               const float *__restrict__ rs, float *x) {                    \
        constexpr int BT = BTV;                                                                           \
        typedef Mat<WK, K> M;                                                                             \
        extern __shared__ __attribute__((aligned(16))) char sm[];                                         \
        __shared__ float red[64];                                                                         \
        prefetch_rows<WK, K>(W, blockIdx.x * (BT / M::TPR) * R, BT / M::TPR * R, DIM);                   \
        prefetch_norm<K, ON>(nw);                                                                         \
        Pre<R, ON> pre = pre_rows<BT, M::TPR, R, ON>(DIM / R, rs, [](int i, int r) { return i * R + r; });  \
        x += (size_t)blockIdx.y * DIM;                                                                    \
        grid_dep_wait();                                                                                  \
        pdl_after_wait(P);                                                                                \
        if (pre.item >= 0)                                                                                \
            for (int r = 0; r < R; r++) pre.x[r] = ldcg(x + pre.item * R + r);                            \
        if constexpr (STEP && MERGE && FUSE_ATT)                                                          \
            BODY<BT, R>(MergeLoad{in}, nw, W, D, rs, x, sm, red, pre);                                    \
        else                                                                                              \
            BODY<BT, R>(VecLoad{in + (size_t)blockIdx.y * K}, nw, W, D, rs, x, sm, red, pre);             \
        pdl_after_work(P);                                                                                \
    }                                                                                                     \
    PRODUCT_KERNELS(NAME, BTV,                                                                            \
                    (const float *in, const float *__restrict__ nw, const u8 *__restrict__ W,              \
                     const u16 *__restrict__ D, const float *__restrict__ rs, float *x),                   \
                    (in, nw, W, D, rs, x))

RESIDUAL_KERNEL(k_wo, BT_WO, QD, R_WO, wo_body, P_WO, 1)

template <bool ON, bool STEP>
__device__ __forceinline__ void k_gateup_run(const float *x, const float *__restrict__ nw, const u8 *__restrict__ W,
                                             const u16 *__restrict__ D, const float *__restrict__ rs, float *hb) {
    constexpr int BT = BT_GATEUP;
    typedef Mat<WK, DIM> M;
    extern __shared__ __attribute__((aligned(16))) char sm[];
    __shared__ float red[64];
    prefetch_rows<WK, DIM>(W, blockIdx.x * (BT / M::TPR) * R_GU, BT / M::TPR * R_GU, FFN);
    prefetch_rows<WK, DIM>(W, FFN + blockIdx.x * (BT / M::TPR) * R_GU, BT / M::TPR * R_GU, 2 * FFN);
    prefetch_norm<DIM, ON>(nw);
    // gate rows, then up rows (gateup_body's order)
    const Pre<2 * R_GU, ON> pre = pre_rows<BT, M::TPR, 2 * R_GU, ON>(
        FFN / R_GU, rs, [](int i, int r) { return r < R_GU ? i * R_GU + r : FFN + i * R_GU + r - R_GU; });
    grid_dep_wait();
    pdl_after_wait(P_GATEUP);
    gateup_body<BT, R_GU>(x + (size_t)blockIdx.y * DIM, nw, W, D, rs, hb + (size_t)blockIdx.y * FFN, sm, red, pre);
    pdl_after_work(P_GATEUP);
}
PRODUCT_KERNELS(k_gateup, BT_GATEUP,
                (const float *x, const float *__restrict__ nw, const u8 *__restrict__ W, const u16 *__restrict__ D,
                 const float *__restrict__ rs, float *hb),
                (x, nw, W, D, rs, hb))

RESIDUAL_KERNEL(k_down, BT_DOWN, FFN, R_DOWN, down_body, P_DOWN, 0)

extern "C" __global__ void __launch_bounds__(BT_LMHEAD) k_lmhead(const float *x, const float *__restrict__ nw,
                                                                 const u8 *__restrict__ W, const u16 *__restrict__ D,
                                                                 const float *__restrict__ rs, float *logits, float *bestv,
                                                                 int *besti, u32 *counter, int *tp, int *tok_out) {
    constexpr int BT = BT_LMHEAD;
    typedef Mat<HK, DIM> M;
    extern __shared__ __attribute__((aligned(16))) char sm[];
    __shared__ float red[64];
    prefetch_rows<HK, DIM>(W, R_HEAD * blockIdx.x * (BT / M::TPR), R_HEAD * (BT / M::TPR), VOCAB);
    prefetch_norm<DIM, PRE_LOAD != 0>(nw);
    const Pre<R_HEAD, PRE_LOAD != 0> pre = pre_rows<BT, M::TPR, R_HEAD, PRE_LOAD != 0>(
        (VOCAB + R_HEAD - 1) / R_HEAD, rs, [](int i, int r) { return min(R_HEAD * i + r, VOCAB - 1); });
    grid_dep_wait();
    pdl_after_wait(P_LMHEAD);
    lmhead_body<BT>(x, nw, W, D, rs, logits, bestv, besti, counter, tp, tok_out, sm, red, pre);
    pdl_after_work(P_LMHEAD);
}

// Sampling on the device, after k_lmhead has written the logits, in the
// host sampler's order (package sample): repetition penalty, top-k, top-p,
// min-p (all measured on the softmax at temperature 1), temperature, a
// draw. One block. Top-k (1..SMP_MAXK) is found by a radix select on the
// logits' order-preserving keys (4 passes of 8 bits), the k candidates are
// gathered in index order and sorted (bitonic), and one thread walks them.
// The draw uses a counter-based generator (splitmix64 of seed and step), so
// the same seed gives the same tokens; its stream differs from the host's.
#define SMP_NT 1024
#define SMP_MAXK 256
#define SMP_MAXHIST 256
struct SampleP {
    float temp, topp, minp, penalty;
    int topk, lastn, hlen, hpos; // repetition window: a ring of lastn ids
    unsigned long long seed, counter;
    int hist[SMP_MAXHIST];
};

__device__ __forceinline__ u32 fkey(float f) {
    u32 u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ u64 mix64(u64 z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// block_scan returns the exclusive prefix sum of v over the block's
// SMP_NT threads and the total in *total. ws holds 32 ints.
__device__ int block_scan(int v, int *ws, int *total) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    int x = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        int y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o) x += y;
    }
    if (lane == 31) ws[w] = x;
    __syncthreads();
    if (w == 0) {
        int t = lane < SMP_NT / 32 ? ws[lane] : 0;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            int y = __shfl_up_sync(0xffffffffu, t, o);
            if (lane >= o) t += y;
        }
        ws[lane] = t;
    }
    __syncthreads();
    const int base = w > 0 ? ws[w - 1] : 0;
    *total = ws[SMP_NT / 32 - 1];
    __syncthreads(); // ws is reused by the next scan
    return base + x - v;
}

extern "C" __global__ void __launch_bounds__(SMP_NT) k_sample(float *logits, SampleP *sp, int *tp, int *tok_out) {
    __shared__ u32 bins[256];
    __shared__ int ws[32];
    __shared__ u32 prefix_s;
    __shared__ int want_s;
    __shared__ float cv[SMP_MAXK];
    __shared__ int ci[SMP_MAXK];
    grid_dep_wait();
    const int tid = threadIdx.x;
    const int k = min(max(sp->topk, 1), SMP_MAXK);
    const float pen = sp->penalty;
    if (pen != 1.f && pen != 0.f) {
        const int hl = min(sp->hlen, SMP_MAXHIST);
        if (tid < hl) {
            const int t = sp->hist[tid];
            bool dup = false;
            for (int j = 0; j < tid; j++) dup |= sp->hist[j] == t;
            if (!dup && t >= 0 && t < VOCAB) {
                const float v = logits[t];
                logits[t] = v > 0.f ? v / pen : v * pen;
            }
        }
        __syncthreads();
    }
    // The k-th largest key, 8 bits at a time from the top: prefix holds the
    // digits found, want how many of the k are still to be found below it.
    u32 prefix = 0;
    int want = k;
    for (int pass = 0; pass < 4; pass++) {
        const int shift = 24 - 8 * pass;
        const u32 hmask = pass == 0 ? 0u : 0xffffffffu << (shift + 8);
        for (int i = tid; i < 256; i += SMP_NT) bins[i] = 0;
        __syncthreads();
        for (int i = tid; i < VOCAB; i += SMP_NT) {
            const u32 key = fkey(logits[i]);
            if ((key & hmask) == (prefix & hmask)) atomicAdd(&bins[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (tid == 0) {
            int cum = 0, d = 255;
            for (; d > 0; d--) {
                if (cum + (int)bins[d] >= want) break;
                cum += (int)bins[d];
            }
            want_s = want - cum;
            prefix_s = prefix | ((u32)d << shift);
        }
        __syncthreads();
        prefix = prefix_s;
        want = want_s;
    }
    // Gather: every key above the threshold, then the first `want` equal
    // to it in index order. Each thread owns a contiguous range of ids.
    const int chunk = (VOCAB + SMP_NT - 1) / SMP_NT;
    const int i0 = min(tid * chunk, VOCAB), i1 = min(i0 + chunk, VOCAB);
    int ngt = 0, neq = 0;
    for (int i = i0; i < i1; i++) {
        const u32 key = fkey(logits[i]);
        ngt += key > prefix;
        neq += key == prefix;
    }
    int totgt, toteq;
    int ogt = block_scan(ngt, ws, &totgt);
    int oeq = block_scan(neq, ws, &toteq);
    for (int i = i0; i < i1; i++) {
        const float v = logits[i];
        const u32 key = fkey(v);
        if (key > prefix) {
            if (ogt < SMP_MAXK) { cv[ogt] = v; ci[ogt] = i; }
            ogt++;
        } else if (key == prefix) {
            if (oeq < want && totgt + oeq < SMP_MAXK) { cv[totgt + oeq] = v; ci[totgt + oeq] = i; }
            oeq++;
        }
    }
    int P = 1;
    while (P < k) P <<= 1;
    for (int i = k + tid; i < P; i += SMP_NT) { cv[i] = -3.0e38f; ci[i] = 0x7fffffff; }
    __syncthreads();
    // Bitonic sort: larger logit first, lower id first on ties.
    for (int size = 2; size <= P; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = tid; i < P; i += SMP_NT) {
                const int j = i ^ stride;
                if (j > i) {
                    const bool jfirst = cv[j] > cv[i] || (cv[j] == cv[i] && ci[j] < ci[i]);
                    const bool up = (i & size) == 0;
                    if (up == jfirst) {
                        float tv = cv[i]; cv[i] = cv[j]; cv[j] = tv;
                        int ti = ci[i]; ci[i] = ci[j]; ci[j] = ti;
                    }
                }
            }
            __syncthreads();
        }
    }
    if (tid != 0) return;
    // Softmax at temperature 1 over the k, then top-p and min-p cuts (the
    // candidates are sorted, so each keeps a prefix), then the draw at the
    // temperature.
    const float m = cv[0];
    float S = 0.f;
    for (int i = 0; i < k; i++) S += expf(cv[i] - m);
    int n = k;
    const float topp = sp->topp;
    if (topp > 0.f && topp < 1.f) {
        float cum = 0.f;
        for (int i = 0; i < n; i++) {
            cum += expf(cv[i] - m) / S;
            if (cum >= topp) { n = i + 1; break; }
        }
    }
    const float minp = sp->minp;
    if (minp > 0.f && n > 1) {
        const float cut = minp * (1.f / S); // p(max) = exp(0) / S
        int keep = 0;
        while (keep < n && expf(cv[keep] - m) / S >= cut) keep++;
        n = max(keep, 1);
    }
    const float inv = 1.f / sp->temp;
    float W = 0.f;
    for (int i = 0; i < n; i++) W += expf((cv[i] - m) * inv);
    const u64 r = mix64(sp->seed ^ mix64(sp->counter));
    const float u = (float)(r >> 40) * (1.f / 16777216.f); // [0, 1), 24 bits
    const float target = u * W;
    int pick = ci[n - 1];
    float cum = 0.f;
    for (int i = 0; i < n; i++) {
        cum += expf((cv[i] - m) * inv);
        if (target < cum) { pick = ci[i]; break; }
    }
    tp[0] = pick;
    tok_out[0] = pick;
    sp->counter++;
    if (sp->lastn > 0) {
        sp->hist[sp->hpos] = pick;
        sp->hpos = (sp->hpos + 1) % sp->lastn;
        sp->hlen = min(sp->hlen + 1, sp->lastn);
    }
}

