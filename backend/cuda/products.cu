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
// QKV_RAW (models with q/k/v biases or per-head q/k norms): the products go
// to q as they are, QD + 2*KVD values a token, and k_qkv_post finishes
// them (a head's norm needs all of its rows, not a pair).
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
            if (QKV_RAW) {
                q[rows[0]] = v0;
                q[rows[1]] = v1;
                continue;
            }
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
// products (output projection, FFN down), R rows an item. POST_NORM
// (Gemma): x = W(...) instead, into a buffer k_postnorm then normalises
// and adds to the residual (the norm needs the whole product).
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
                x[rows[r]] = (POST_NORM ? 0.f : first ? pre.x[r] : ldcg(x + rows[r])) +
                             finish<WK>(v[r], st, first ? pre.s[r] : rs[rows[r]]);
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

// activate is the FFN gate's non-linearity: SiLU, ReLU² (ACT_RELU2) or
// GELU's tanh form (ACT_GELU), as model.Activate.
__device__ __forceinline__ float activate(float g) {
    if (ACT_RELU2) {
        const float q = fmaxf(g, 0.f);
        return q * q;
    }
    if (ACT_GELU) return 0.5f * g * (1.f + tanhf(0.7978845608028654f * (g + 0.044715f * g * g * g)));
    return f_div(g, 1.f + f_exp(-g));
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
                hb[i0 + r] = activate(g) * u;
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

// logits = Output RMSNorm(x), soft-capped where the model says (LOGIT_CAP:
// c*tanh(l/c), 0 none); each block's best (value, id) goes to best[],
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
                    if (LOGIT_CAP > 0.f) y = LOGIT_CAP * tanhf(y * (1.f / LOGIT_CAP));
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

