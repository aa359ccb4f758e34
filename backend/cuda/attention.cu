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
// ATT_SCALE multiplies q·k: 1/sqrt(HD) unless the model says otherwise
// (host-set, model.Config.ScoreScale).
#ifndef ATT_SCALE
#define ATT_SCALE (1.f / sqrtf((float)HD))
#endif
// WIN (host-set): the positions a sliding-window layer's query sees, itself
// included (its k_attn_w launches), 0 when the model has none.
#ifndef WIN
#error "the host passes WIN"
#endif
// att_first is the first position the query at pos attends to: 0, or in a
// sliding-window layer (LOCAL) the first of the last WIN.
template <bool LOCAL> __device__ __forceinline__ int att_first(int pos) { return LOCAL ? max(0, pos - WIN + 1) : 0; }

// att_slices is how many slices split positions lo..pos.
__device__ __forceinline__ int att_slices(int lo, int pos, int nsplit) {
    int nact = (pos + 1 - lo + ATT_CHUNK - 1) / ATT_CHUNK;
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

// attn_range is the positions [t0, t1) of slice s of positions lo..pos.
__device__ __forceinline__ bool attn_range(int s, int lo, int pos, int nsplit, int &t0, int &t1) {
    const int n = pos + 1 - lo, nact = att_slices(lo, pos, nsplit);
    if (s >= nact) return false;
    const int len = (n + nact - 1) / nact;
    t0 = lo + s * len;
    t1 = min(pos + 1, t0 + len);
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

    // begin takes head h's query from q (the lane's dims, times ATT_SCALE).
    template <class Load> __device__ __forceinline__ void begin(Load q, int h) {
        const int lane = threadIdx.x & 31;
        const float scale = ATT_SCALE;
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
// previous kernel instead of following it. The query at pos sees positions
// lo..pos (lo > 0 in a sliding-window layer). The decode step's k_attn and
// a batch's rows (mattn.cu k_battn, each row with its own cache) run it.
template <class Wait>
__device__ void attn_warp(int h, int s, int pos, int lo, int old, const float *q, const kv_t *kc, const kv_t *vc, float *out,
                          float *part, u32 *counters, int nsplit, Wait wait) {
    const int lane = threadIdx.x & 31;
    const int nact = att_slices(lo, pos, nsplit);
    int t0, t1;
    if (!attn_range(s, lo, pos, nsplit, t0, t1)) return;
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

// One warp per attention item; ATT_NT / 32 items per block. k_attn for the
// layers that see every position, k_attn_w for sliding-window layers.
template <bool LOCAL>
__device__ __forceinline__ void k_attn_run(const int *__restrict__ tp, const float *q, const kv_t *kc, const kv_t *vc,
                                           float *out, float *part, u32 *counters, int nsplit) {
    const int item = blockIdx.x * (ATT_NT / 32) + (threadIdx.x >> 5), y = blockIdx.y;
    {
        int t0, t1;
        const int pos = tp[1] + y;
        // (with ATT_EARLY the first batch's rows are loaded, not prefetched)
        if (item < NH * nsplit && attn_range(item % nsplit, att_first<LOCAL>(pos), pos, nsplit, t0, t1))
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
        attn_warp(item / nsplit, item % nsplit, tp[1] + y, att_first<LOCAL>(tp[1] + y), tp[1], q + (size_t)y * QD, kc, vc, out + (size_t)y * QD,
                         part + (size_t)y * NH * nsplit * (HD + 2), counters + y * NH, nsplit, wait);
    else
        wait();
    pdl_after_work(P_ATTN);
}
#define ATTN_PARAMS                                                                                               \
    (const int *__restrict__ tp, const float *q, const kv_t *kc, const kv_t *vc, float *out, float *part, u32 *counters, \
     int nsplit)
extern "C" __global__ void __launch_bounds__(ATT_NT) k_attn ATTN_PARAMS {
    k_attn_run<false>(tp, q, kc, vc, out, part, counters, nsplit);
}
extern "C" __global__ void __launch_bounds__(ATT_NT) k_attn_w ATTN_PARAMS {
    k_attn_run<true>(tp, q, kc, vc, out, part, counters, nsplit);
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
