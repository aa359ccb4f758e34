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
    qkv_body<BT>(pos, x + (size_t)y * DIM, nw, W, D, rs, rope, q + (size_t)y * QROW, kc, vc, sm, red, pre);
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
        if (!POST_NORM && pre.item >= 0)                                                                  \
            for (int r = 0; r < R; r++) pre.x[r] = ldcg(x + pre.item * R + r);                            \
        if constexpr (STEP && MERGE && FUSE_ATT) {                                                        \
            BODY<BT, R>(MergeLoad{in}, nw, W, D, rs, x, sm, red, pre);                                    \
        } else {                                                                                          \
            BODY<BT, R>(VecLoad{in + (size_t)blockIdx.y * K}, nw, W, D, rs, x, sm, red, pre);             \
        }                                                                                                 \
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

// qkv_post_head finishes head `head` of one token's raw q|k|v products r
// (QD + 2*KVD values: NH q heads, NKV k heads, NKV v heads) at pos, one
// warp, v the warp's HD floats of shared memory: adds the bias (QKV_BIAS),
// RMS-normalises q and k heads with their weights qn, kn (QK_NORM),
// rotates them with the RoPE table, and writes q to the token's q row and
// k and v into the layer's cache kc, vc at pos. As the reference: bias,
// then norm, then RoPE. k_qkv_post (a decode step's or prefill's token)
// and mattn.cu's k_rqkv (a row's) both run it.
__device__ __forceinline__ void qkv_post_head(int head, int pos, const float *raw, const float *__restrict__ bias,
                                              const float *__restrict__ qn, const float *__restrict__ kn,
                                              const float2 *__restrict__ rope, float *q, kv_t *kc, kv_t *vc, float *v) {
    const int lane = threadIdx.x & 31;
    const int region = head < NH ? 0 : head < NH + NKV ? 1 : 2;
    const int hh = region == 0 ? head : region == 1 ? head - NH : head - NH - NKV;
    const int base = (region == 0 ? 0 : region == 1 ? QD : QD + KVD) + hh * HD;
    const float *r = raw + base;
    float ss = 0.f;
    for (int d = lane; d < HD; d += 32) {
        float a = ldcg(r + d);
        if (QKV_BIAS) a += bias[base + d];
        v[d] = a;
        ss += a * a;
    }
    if (QK_NORM && region < 2) {
        const float inv = 1.f / sqrtf(warp_sum(ss) / (float)HD + EPS);
        const float *w = region == 0 ? qn : kn;
        for (int d = lane; d < HD; d += 32) v[d] = v[d] * inv * w[d];
    }
    __syncwarp();
    if (region < 2) {
        for (int i = lane; i < HD / 2; i += 32) {
            const int a = ROPE_NEOX ? i : 2 * i, b = ROPE_NEOX ? i + HD / 2 : 2 * i + 1;
            float v0 = v[a], v1 = v[b];
            const float2 cs = rope_at(rope, pos, i);
            rotate(v0, v1, cs.x, cs.y);
            if (region == 0) {
                float *o = q + hh * HD;
                o[a] = v0;
                o[b] = v1;
            } else {
                kv_t *c = kc + (size_t)pos * KVD + hh * HD;
                c[a] = kv_of(v0);
                c[b] = kv_of(v1);
            }
        }
    } else {
        kv_t *c = vc + (size_t)pos * KVD + hh * HD;
        for (int d = lane; d < HD; d += 32) c[d] = kv_of(v[d]);
    }
}

// k_qkv_post finishes k_qkv's raw products where QKV_RAW (qkv_post_head):
// one warp a head of q, k or v (NH + 2*NKV of them, 4 a block), token
// blockIdx.y at position tp[1] + y.
extern "C" __global__ void __launch_bounds__(128) k_qkv_post(const int *__restrict__ tp, const float *raw,
                                                             const float *__restrict__ bias, const float *__restrict__ qn,
                                                             const float *__restrict__ kn, const float2 *__restrict__ rope,
                                                             float *q, kv_t *kc, kv_t *vc) {
    __shared__ float hv[4][HD];
    const int warp = threadIdx.x >> 5, y = blockIdx.y;
    const int head = blockIdx.x * 4 + warp, pos = tp[1] + y;
    grid_dep_wait();
    pdl_after_wait(P_QKV);
    if (head < NH + 2 * NKV)
        qkv_post_head(head, pos, raw + (size_t)y * QROW, bias, qn, kn, rope, q + (size_t)y * QD, kc, vc, hv[warp]);
    pdl_after_work(P_QKV);
}

// postnorm_row: x += RMSNorm(y) with weight w for one row of DIM values,
// by a block of 256 threads; red holds 64 floats. k_postnorm (a token
// blockIdx.y) and rows.cu k_rpostnorm (a row blockIdx.x) share it.
__device__ __forceinline__ void postnorm_row(const float *y, const float *__restrict__ w, float *x, float *red) {
    constexpr int BT = 256, PER = (DIM + BT - 1) / BT;
    const int tid = threadIdx.x;
    float v[PER], ss = 0.f, unused = 0.f;
#pragma unroll
    for (int j = 0; j < PER; j++) {
        const int i = tid + j * BT;
        v[j] = i < DIM ? ldcg(y + i) : 0.f;
        ss += v[j] * v[j];
    }
    block_sum_max<BT>(ss, unused, red);
    const float r = 1.f / sqrtf(ss / (float)DIM + EPS);
#pragma unroll
    for (int j = 0; j < PER; j++) {
        const int i = tid + j * BT;
        if (i < DIM) x[i] = ldcg(x + i) + v[j] * r * w[i];
    }
}

// k_postnorm: x += RMSNorm(y) with weight w, token blockIdx.y: a block's
// post-norm (POST_NORM, Gemma), after k_wo or k_down wrote its product to y.
extern "C" __global__ void __launch_bounds__(256) k_postnorm(const float *y, const float *__restrict__ w, float *x) {
    __shared__ float red[64];
    y += (size_t)blockIdx.y * DIM;
    x += (size_t)blockIdx.y * DIM;
    grid_dep_wait();
    pdl_after_wait(P_POST);
    postnorm_row(y, w, x, red);
    pdl_after_work(P_POST);
}

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

