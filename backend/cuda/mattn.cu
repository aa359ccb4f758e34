// Attention of many rows (rows.cu): k_rqkv (biases, q/k norms, RoPE, KV
// cache write), k_pattn (a prompt's causal attention) and k_battn (a
// batch's rows, each over its own cache). Their launch shapes and the
// batch's scratch size are mattn.go's.

// kv_base is layer `layer` of a slot's key or value cache.
__device__ __forceinline__ kv_t *kv_base(kv_t *c, const Slot &s, int layer) { return c + (size_t)layer * s.layer; }

// row_live tells whether row rw writes and attends: not padding, at a
// position its slot's cache holds (the host checks it; this keeps a bad
// row from writing outside the cache).
__device__ __forceinline__ bool row_live(const Row &rw, const Slot *slots) {
    return rw.slot >= 0 && rw.pos >= 0 && rw.pos < slots[rw.slot].ctx;
}

// ---------------------------------------------------------------- k_rqkv

// k_rqkv: k_qkv_post's job for rows (step.cu qkv_post_head): one warp a
// head of q, k or v (4 a block), row blockIdx.y at rows[y].pos in its own
// slot's cache and RoPE table (ropeset 1: the sliding-window layers').
// raw is k_mm_qkv's [n][QD + 2*KVD] for every model; padding rows write
// nothing.
extern "C" __global__ void __launch_bounds__(128) k_rqkv(int n, int layer, const Row *__restrict__ rows,
                                                         const Slot *__restrict__ slots, const float *raw,
                                                         const float *__restrict__ bias, const float *__restrict__ qn,
                                                         const float *__restrict__ kn, float *q, int ropeset) {
    __shared__ float hv[4][HD];
    const int warp = threadIdx.x >> 5, y = blockIdx.y;
    const int head = blockIdx.x * 4 + warp;
    grid_dep_wait();
    pdl_after_wait(P_QKV);
    if (y < n && head < NH + 2 * NKV) {
        const Row rw = rows[y];
        if (row_live(rw, slots)) {
            const Slot s = slots[rw.slot];
            qkv_post_head(head, rw.pos, raw + (size_t)y * (QD + 2 * KVD), bias, qn, kn, ropeset ? s.rope_local : s.rope,
                          q + (size_t)y * QD, kv_base(s.k, s, layer), kv_base(s.v, s, layer), hv[warp]);
        }
    }
    pdl_after_work(P_QKV);
}

// ---------------------------------------------------------------- k_pattn
//
// Causal attention of a prompt chunk on tensor cores (mma.sync m16n8k16,
// f16 operands, f32 accumulators), FlashAttention-2's loop: a block takes
// PA_BM query rows of one KV head and walks the cached positions its rows
// see in tiles of PA_BK, staged in shared memory as f16 (keys row-major,
// values transposed, so that every fragment is one 32-bit shared load);
// each warp keeps 16 query rows' scores, online softmax and output in
// registers. A query row is a (position, head) pair: the NH/NKV query heads
// of a KV head are stacked as rows (row m: position m / PA_G, head
// g*PA_G + m % PA_G), so they share the staged tiles (GQA). Tiles wholly
// above a warp's diagonal or before its window are skipped. q is rounded
// to f16 as it is (the score scale is applied to the f32 scores), so a
// score is the exact product of the f16 q and k summed in f32.
#define PA_W 4            // warps a block (mattn.go pattnWarps)
#define PA_BM (16 * PA_W) // query rows a block
#define PA_G (NH / NKV)   // query heads a KV head
#define PA_HDP ((HD + 15) / 16 * 16) // head dims padded to the mma's k (zeros)
// A staged key row and value column are padded by 8 halves: rows 4 words
// apart mod 32 banks, so a fragment's 8 rows x 4 words are 32 banks.
#define PA_KS (PA_HDP + 8)
#define PA_SMEM(bk) (2 * ((bk) * PA_KS + PA_HDP * ((bk) + 8)))
// Positions a tile: 64 while the staged tiles fit the 48 KB of static
// shared memory (heads up to 128 wide), else fewer.
#define PA_BK (PA_SMEM(64) <= 46 * 1024 ? 64 : PA_SMEM(32) <= 46 * 1024 ? 32 : 16)
#define PA_VS (PA_BK + 8)

__device__ __forceinline__ u16 f2h(float v) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    return h;
}

// pack_h2 is an f16x2 register: lo in the low half (the lower column of a
// fragment's pair), hi in the high half.
__device__ __forceinline__ u32 pack_h2(float lo, float hi) { return (u32)f2h(lo) | ((u32)f2h(hi) << 16); }

__device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// mma16816: c += a b, a 16x16 f16 (row-major fragment), b 16x8 f16
// (column-major fragment), c 16x8 f32 (PTX ISA's m16n8k16 layouts: lane
// 4g+t holds a's rows g and g+8, columns 2t, 2t+1 and 2t+8, 2t+9; b's
// column g, rows 2t, 2t+1 and 2t+8, 2t+9; c's rows g and g+8, columns 2t,
// 2t+1).
__device__ __forceinline__ void mma16816(float (&c)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// pa_load8 reads dims d..d+7 of a cached row p (p at dim d) as f16, zeros
// past HD: one or two 16-byte loads where HD is a multiple of 8 (the row
// then starts 16-byte aligned), else one element at a time.
__device__ __forceinline__ void pa_load8(const kv_t *p, int d, u16 (&h)[8]) {
    if (HD % 8 == 0) {
#if KVH
        const U4 u = *(const U4 *)p;
        const u32 w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int e = 0; e < 4; e++) {
            h[2 * e] = (u16)w[e];
            h[2 * e + 1] = (u16)(w[e] >> 16);
        }
#else
        const F4 a = *(const F4 *)p, b = *(const F4 *)(p + 4);
        const float f[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
        for (int e = 0; e < 8; e++) h[e] = f2h(f[e]);
#endif
        return;
    }
#pragma unroll
    for (int e = 0; e < 8; e++) h[e] = d + e < HD ? f2h(kv_f(p[e])) : (u16)0;
}

// pa_row is query row m of KV head g: its position in the chunk r, head h,
// and the cached positions it sees [lo, pos] (pos -1: none, a padding row
// or one past the chunk).
struct PaRow {
    int r, h, pos, lo;
};
__device__ __forceinline__ PaRow pa_row(int m, int g, int n, const Row *rows, const Slot *slots, int window) {
    PaRow x{m / PA_G, g * PA_G + m % PA_G, -1, 0};
    if (m < n * PA_G) {
        const Row rw = rows[x.r];
        if (row_live(rw, slots)) {
            x.pos = rw.pos;
            x.lo = window > 0 ? max(0, rw.pos - window + 1) : 0;
        }
    }
    return x;
}

// k_pattn: see above. Grid (ceil(n*PA_G / PA_BM), NKV), PA_W warps; the
// chunk's rows are slot rows[0].slot's, query r at rows[r].pos (the host's
// consecutive positions), seeing [lo, pos] of the cache (positions before
// the chunk included). Padding rows get zeros.
extern "C" __global__ void __launch_bounds__(32 * PA_W) k_pattn(int n, int layer, const Row *__restrict__ rows,
                                                                const Slot *__restrict__ slots, const float *q,
                                                                float *out, int window) {
    __shared__ __attribute__((aligned(16))) u16 ks[PA_BK * PA_KS];
    __shared__ __attribute__((aligned(16))) u16 vt[PA_HDP * PA_VS];
    __shared__ int range[2]; // the cached positions the block's rows see: [range[0], range[1]]
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gid = lane >> 2, tig = lane & 3;
    const int g = blockIdx.y;
    // the last rows (the most positions) first, so the longest blocks do
    // not start in the last wave
    const int m0 = (gridDim.x - 1 - blockIdx.x) * PA_BM + 16 * warp;
    if (tid == 0) {
        range[0] = 0x7fffffff;
        range[1] = -1;
    }
    grid_dep_wait();
    pdl_after_wait(P_ATTN);
    const int slot = rows[0].slot;
    const PaRow ra = pa_row(m0 + gid, g, slot >= 0 ? n : 0, rows, slots, window);
    const PaRow rb = pa_row(m0 + gid + 8, g, slot >= 0 ? n : 0, rows, slots, window);
    // the warp's range, and the block's
    int wlo = min(ra.pos >= 0 ? ra.lo : 0x7fffffff, rb.pos >= 0 ? rb.lo : 0x7fffffff), whi = max(ra.pos, rb.pos);
#pragma unroll
    for (int o = 16; o >= 4; o >>= 1) {
        wlo = min(wlo, __shfl_xor_sync(0xffffffffu, wlo, o));
        whi = max(whi, __shfl_xor_sync(0xffffffffu, whi, o));
    }
    __syncthreads();
    if (lane == 0 && whi >= 0) {
        atomicMin(&range[0], wlo);
        atomicMax(&range[1], whi);
    }
    __syncthreads();
    const int klo = range[0], khi = range[1];
    const kv_t *kc = nullptr, *vc = nullptr;
    if (khi >= 0) {
        const Slot s = slots[slot];
        kc = kv_base(s.k, s, layer) + g * HD;
        vc = kv_base(s.v, s, layer) + g * HD;
    }

    // The warp's q fragments (a's layout), f16, zeros past HD and in rows
    // that attend to nothing.
    u32 qa[PA_HDP / 16][4];
    {
        const float *qa_row = q + (size_t)ra.r * QD + ra.h * HD, *qb_row = q + (size_t)rb.r * QD + rb.h * HD;
#pragma unroll
        for (int c = 0; c < PA_HDP / 16; c++)
#pragma unroll
            for (int half = 0; half < 2; half++) {
                const int d = c * 16 + 8 * half + 2 * tig; // (HD is even: d < HD covers d + 1)
                const bool in = d < HD;
                qa[c][2 * half] = ra.pos >= 0 && in ? pack_h2(qa_row[d], qa_row[d + 1]) : 0u;
                qa[c][2 * half + 1] = rb.pos >= 0 && in ? pack_h2(qb_row[d], qb_row[d + 1]) : 0u;
            }
    }
    const float NEG_INF = -__int_as_float(0x7f800000);
    const float sc = ATT_SCALE * 1.4426950408889634f; // scores in log2 units: ex2
    float o[PA_HDP / 8][4];
#pragma unroll
    for (int t = 0; t < PA_HDP / 8; t++) o[t][0] = o[t][1] = o[t][2] = o[t][3] = 0.f;
    float ma = NEG_INF, mb = NEG_INF, la = 0.f, lb = 0.f; // rows gid and gid+8: max, the lane's part of the sum

    for (int k0 = khi >= 0 ? klo / PA_BK * PA_BK : 1; k0 <= khi; k0 += PA_BK) {
        __syncthreads(); // the previous tile's readers are done
        // Stage positions k0.. of [klo, khi] (zeros outside, so a value
        // row never brings a NaN of an unwritten position into p * v).
        // Lane pairs take two adjacent 8-dim chunks of a row (one 32-byte
        // sector of a float16 cache), a warp 16 rows: the transposed value
        // stores of a warp then fall in distinct banks but for pairs.
#pragma unroll
        for (int it = 0; it < PA_BK * PA_HDP / 8 / (32 * PA_W); it++) {
            const int i = tid + it * 32 * PA_W;
            const int j = (i >> 1) % PA_BK, d = (i / (2 * PA_BK) * 2 + (i & 1)) * 8, t = k0 + j;
            u16 hk[8], hv[8];
            if (t >= klo && t <= khi && d < HD) {
                pa_load8(kc + (size_t)t * KVD + d, d, hk);
                pa_load8(vc + (size_t)t * KVD + d, d, hv);
            } else {
#pragma unroll
                for (int e = 0; e < 8; e++) hk[e] = hv[e] = 0;
            }
            U4 kw;
            kw.x = hk[0] | (u32)hk[1] << 16;
            kw.y = hk[2] | (u32)hk[3] << 16;
            kw.z = hk[4] | (u32)hk[5] << 16;
            kw.w = hk[6] | (u32)hk[7] << 16;
            *(U4 *)&ks[j * PA_KS + d] = kw;
#pragma unroll
            for (int e = 0; e < 8; e++) vt[(d + e) * PA_VS + j] = hv[e];
        }
        __syncthreads();
        if (k0 > whi || k0 + PA_BK - 1 < wlo) continue; // (warp-uniform) nothing this warp sees

        // S = q k^T, 16 rows x PA_BK positions
        float s[PA_BK / 8][4];
#pragma unroll
        for (int t = 0; t < PA_BK / 8; t++) {
            s[t][0] = s[t][1] = s[t][2] = s[t][3] = 0.f;
            const u16 *kr = ks + (t * 8 + gid) * PA_KS + 2 * tig;
#pragma unroll
            for (int c = 0; c < PA_HDP / 16; c++)
                mma16816(s[t], qa[c], *(const u32 *)(kr + c * 16), *(const u32 *)(kr + c * 16 + 8));
        }
        // Online softmax: mask, the rows' maxima (a row's 4 lanes), rescale.
        float xa = NEG_INF, xb = NEG_INF;
#pragma unroll
        for (int t = 0; t < PA_BK / 8; t++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int key = k0 + t * 8 + 2 * tig + e;
                s[t][e] = key >= ra.lo && key <= ra.pos ? s[t][e] * sc : NEG_INF;
                s[t][2 + e] = key >= rb.lo && key <= rb.pos ? s[t][2 + e] * sc : NEG_INF;
                xa = fmaxf(xa, s[t][e]);
                xb = fmaxf(xb, s[t][2 + e]);
            }
#pragma unroll
        for (int o2 = 1; o2 <= 2; o2 <<= 1) {
            xa = fmaxf(xa, __shfl_xor_sync(0xffffffffu, xa, o2));
            xb = fmaxf(xb, __shfl_xor_sync(0xffffffffu, xb, o2));
        }
        const float na = fmaxf(ma, xa), nb = fmaxf(mb, xb);
        // a row with nothing seen yet subtracts 0: exp of -inf is 0, not NaN
        const float ua = na == NEG_INF ? 0.f : na, ub = nb == NEG_INF ? 0.f : nb;
        const float ca = ex2(ma - ua), cb = ex2(mb - ub);
        ma = na;
        mb = nb;
        la *= ca;
        lb *= cb;
#pragma unroll
        for (int t = 0; t < PA_HDP / 8; t++) {
            o[t][0] *= ca;
            o[t][1] *= ca;
            o[t][2] *= cb;
            o[t][3] *= cb;
        }
        // P (f16) as a's fragments: score tiles 2k and 2k+1 are a's
        // columns 0-7 and 8-15 of positions chunk k.
        u32 pa[PA_BK / 16][4];
#pragma unroll
        for (int t = 0; t < PA_BK / 8; t++) {
            const float p0 = ex2(s[t][0] - ua), p1 = ex2(s[t][1] - ua), p2 = ex2(s[t][2] - ub), p3 = ex2(s[t][3] - ub);
            la += p0 + p1;
            lb += p2 + p3;
            pa[t / 2][2 * (t % 2)] = pack_h2(p0, p1);
            pa[t / 2][2 * (t % 2) + 1] = pack_h2(p2, p3);
        }
        // O += P v
#pragma unroll
        for (int t = 0; t < PA_HDP / 8; t++) {
            const u16 *vr = vt + (t * 8 + gid) * PA_VS + 2 * tig;
#pragma unroll
            for (int k = 0; k < PA_BK / 16; k++)
                mma16816(o[t], pa[k], *(const u32 *)(vr + k * 16), *(const u32 *)(vr + k * 16 + 8));
        }
    }
#pragma unroll
    for (int o2 = 1; o2 <= 2; o2 <<= 1) {
        la += __shfl_xor_sync(0xffffffffu, la, o2);
        lb += __shfl_xor_sync(0xffffffffu, lb, o2);
    }
    // Rows of the chunk (padding ones included: zeros), not those past it.
    const float ia = la > 0.f ? 1.f / la : 0.f, ib = lb > 0.f ? 1.f / lb : 0.f;
    float *oa = out + (size_t)ra.r * QD + ra.h * HD, *ob = out + (size_t)rb.r * QD + rb.h * HD;
    const bool wa = m0 + gid < n * PA_G, wb = m0 + gid + 8 < n * PA_G;
#pragma unroll
    for (int t = 0; t < PA_HDP / 8; t++) {
        const int d = t * 8 + 2 * tig;
        if (d < HD) {
            if (wa) {
                oa[d] = o[t][0] * ia;
                oa[d + 1] = o[t][1] * ia;
            }
            if (wb) {
                ob[d] = o[t][2] * ib;
                ob[d + 1] = o[t][3] * ib;
            }
        }
    }
    pdl_after_work(P_ATTN);
}

// ---------------------------------------------------------------- k_battn
//
// A decode batch: row blockIdx.y over its own slot's cache, as the decode
// step's k_attn (attention.cu attn_warp: one warp a (head, slice), nsplit
// slices at most, the last slice of a head to finish merges them). part
// holds each row's tickets first (BA_MAXR rows' worth, so their place does
// not move with n or nsplit; zeroed once when allocated, and every merge
// leaves its ticket at zero), then each row's partials, NH * nsplit *
// (HD + 2) floats a row (mattn.go battnPartBytes). Padding rows write
// zeros. rows and slots are read before the wait: the host's, older than
// this launch (k_rqkv, the kernel before, writes neither).
#define BA_MAXR 64 // rows a batch at most (mattn.go battnMaxRows)
extern "C" __global__ void __launch_bounds__(ATT_NT) k_battn(int n, int layer, const Row *__restrict__ rows,
                                                             const Slot *__restrict__ slots, const float *q, float *out,
                                                             float *part, int nsplit, int window) {
    const int item = blockIdx.x * (ATT_NT / 32) + (threadIdx.x >> 5), y = blockIdx.y, lane = threadIdx.x & 31;
    const int h = item / nsplit, s = item % nsplit;
    const Row rw = rows[y];
    const bool live = y < n && y < BA_MAXR && row_live(rw, slots);
    const kv_t *kc = nullptr, *vc = nullptr;
    int lo = 0;
    if (live) {
        const Slot sl = slots[rw.slot];
        kc = kv_base(sl.k, sl, layer);
        vc = kv_base(sl.v, sl, layer);
        lo = window > 0 ? max(0, rw.pos - window + 1) : 0;
        int t0, t1;
        if (item < NH * nsplit && attn_range(s, lo, rw.pos, nsplit, t0, t1))
            prefetch_kv(kc, vc, h / (NH / NKV) * HD, ATT_EARLY ? min(t0 + ATT_CH, t1) : t0, t1, lane, 32);
    }
    auto wait = []() {
        grid_dep_wait();
        pdl_after_wait(P_ATTN);
    };
    if (live && item < NH * nsplit) {
        // the row's position was written by k_rqkv: its rows load after the wait
        attn_warp(h, s, rw.pos, lo, rw.pos, q + (size_t)y * QD, kc, vc, out + (size_t)y * QD,
                  part + BA_MAXR * NH + (size_t)y * NH * nsplit * (HD + 2), (u32 *)part + y * NH, nsplit, wait);
    } else {
        wait();
        if (!live && y < n && item < NH * nsplit && s == 0)
            for (int d = lane; d < HD; d += 32) out[(size_t)y * QD + h * HD + d] = 0.f;
    }
    pdl_after_work(P_ATTN);
}
