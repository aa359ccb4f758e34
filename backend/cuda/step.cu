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

