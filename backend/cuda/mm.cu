// The products of many rows (rows.cu): k_rnorm_* (RMSNorm and int8
// quantization of each row, stage.cu's rounding) and k_mm_* (weights times
// rows: int8 tensor-core tiles for ternary and q8_0 layers, a float tile for
// f16/f32). mm.go chooses the launch shapes; the tile choices below and
// mm.go's mmTileFor must agree (TestMMTileSource checks the constants).

// Rows above MM_DECODE_N take the prompt tile; a k_rnorm_* block has
// MM_RNORM_BT threads (one row).
#define MM_DECODE_N 64
#define MM_RNORM_BT 256

// ------------------------------------------------------------ k_rnorm_*

// rnorm_row stages row blockIdx.x of in (K values) exactly as a product of
// kind KIND stages its input (stage.cu stage, the same rounding), then
// writes it out in rows.cu's input format: xq[r][KP] int8 in natural order
// and xs[r] (ternary) or xs[r][KP/32] (q8_0), or xf[r][KP] for f16/f32.
template <int KIND, int K>
__device__ __forceinline__ void rnorm_row(int n, const float *in, const float *__restrict__ nw, i8 *xq, float *xs,
                                          float *xf) {
    constexpr int BT = MM_RNORM_BT;
    typedef Mat<KIND, K> M;
    constexpr int KP = M::KP;
    extern __shared__ __attribute__((aligned(16))) char sm[];
    __shared__ float red[64];
    grid_dep_wait();
    const int r = blockIdx.x;
    if (r < n) {
        const Staged st = stage<KIND, K, BT>(VecLoad{in + (size_t)r * K}, nw, sm, red);
        const int tid = threadIdx.x;
        if (KIND == KT || KIND == KQ8) {
            // stage keeps the int8 words interleaved for its dot products
            // (xw_index); the rows' format is plain.
            u32 *o = (u32 *)(xq + (size_t)r * KP);
            for (int w = tid; w < KP / 4; w += BT)
                o[w] = ((const u32 *)sm)[KIND == KT ? xw_index<16, M::NC>(w) : xw_index<4, M::NC>(w)];
            if (KIND == KT) {
                if (tid == 0) xs[r] = st.ascale;
            } else {
                const float *bs = (const float *)(sm + KP);
                for (int b = tid; b < KP / 32; b += BT) xs[(size_t)r * (KP / 32) + b] = bs[b];
            }
        } else {
            const float *ys = (const float *)sm;
            for (int i = tid; i < KP; i += BT) xf[(size_t)r * KP + i] = ys[i];
        }
    }
    grid_dep_launch();
}

#define RNORM_KERNEL(NAME, KIND, K)                                                                            \
    extern "C" __global__ void __launch_bounds__(MM_RNORM_BT)                                                  \
        NAME(int n, const float *in, const float *__restrict__ nw, i8 *xq, float *xs, float *xf) {             \
        rnorm_row<KIND, K>(n, in, nw, xq, xs, xf);                                                             \
    }
RNORM_KERNEL(k_rnorm_dim, WK, DIM)
RNORM_KERNEL(k_rnorm_qd, WK, QD)
RNORM_KERNEL(k_rnorm_ffn, WK, FFN)
RNORM_KERNEL(k_rnorm_head, HK, DIM)

// ------------------------------------------------------------ PTX helpers

__device__ __forceinline__ u32 smem_u32(const void *p) {
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

// cp_async copies N bytes (4, 8 or 16) from global to shared memory
// without a register round trip (sm_80+); with ok false it writes zeros
// instead (src-size 0: nothing is read, src need only be a valid address).
template <int N> __device__ __forceinline__ void cp_async(void *dst, const void *src, bool ok) {
    if (N == 16)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_u32(dst)), "l"(src), "r"(ok ? 16 : 0));
    else
        asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;" ::"r"(smem_u32(dst)), "l"(src), "n"(N),
                     "r"(ok ? N : 0));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }

// ldsm4 loads four 8x8 matrices of 16-bit elements (here: 8 rows of 16
// int8 each); lanes 8m..8m+7 give the row addresses of matrix m, and each
// lane receives bytes 4*(lane%4).. of row lane/4 of each: exactly an int8
// MMA fragment register.
__device__ __forceinline__ void ldsm4(u32 &r0, u32 &r1, u32 &r2, u32 &r3, const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(smem_u32(p)));
}

// mma_k32 adds a 16x32 int8 tile of A (4 registers: rows g and g+8 of
// k 4t.., then of k 16+4t.., g = lane/4, t = lane%4) times a 32x8 tile of B
// (2 registers: column g, k 4t.. and 16+4t..) to d (rows g, g+8, columns
// 2t, 2t+1). UA: A's bytes are unsigned (the ternary codes 0..2).
template <bool UA> __device__ __forceinline__ void mma_k32(int *d, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    if (UA)
        asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};"
                     : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
                     : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    else
        asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};"
                     : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
                     : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// ------------------------------------------------------------ tiles
//
// A block computes a BM x BN tile of out = W . X^T (BM weight rows, BN
// rows of the launch, "tokens"), warps (BM/WM) x (BN/WN) x KS: each warp a
// WM x WN piece over every KS-th 64-wide chunk of K, the KS pieces summed
// in shared memory at the end (ternary only: integer sums, any order).
// K goes through shared memory CH chunks a stage, two stages, loaded with
// cp.async while the other is multiplied.
//
// The tiles by n (mm.go mmTileFor mirrors them):
//   n > MM_DECODE_N (prompts):  BM 64, BN 128, 2x4 warps of 32x32, KS 1;
//                               CH 2 (ternary) or 1 (q8_0)
//   n <= MM_DECODE_N (batches): BN = n rounded up to 8, 16, 32 or 64,
//                               WN = min(BN, 32); ternary BM 32, KS 4, CH 4
//                               (each warp one chunk a stage); q8_0 BM 64,
//                               2 warps along M, KS 1, CH 1
// q8_0 keeps KS 1 and sums its blocks' float products in K order in every
// tile, so a row's value does not depend on n (batch invariance).

template <int KIND, int BM, int BN, int WM, int WN, int KS, int CH> struct MmTile {
    static constexpr int BM_ = BM, BN_ = BN, CH_ = CH, KS_ = KS, WMS = BM / WM, WNS = BN / WN;
    static constexpr int WARPS = (BM / WM) * (BN / WN) * KS;
    static constexpr int THREADS = WARPS * 32;
    static constexpr int MT = WM / 16, NT = WN / 8;
    // shared row strides in bytes: ternary rows are CH 16-byte chunks,
    // int8 rows CH*64 bytes plus 16 so that 8 rows at one column fall on
    // distinct banks (ldmatrix, and the q8_0 A loads)
    static constexpr int ASTR = KIND == KT ? CH * 16 : CH * 64 + 16;
    static constexpr int BSTR = CH * 64 + 16;
    static constexpr int A_BYTES = BM * ASTR, AD_BYTES = KIND == KQ8 ? BM * CH * 4 : 0;
    static constexpr int B_BYTES = BN * BSTR, BD_BYTES = KIND == KQ8 ? BN * CH * 8 : 0;
    static constexpr int STAGE = A_BYTES + AD_BYTES + B_BYTES + BD_BYTES;
    // the KS-1 other warps' accumulators and token sums (fragment order)
    static constexpr int RED = KS > 1 ? (KS - 1) * (WARPS / KS) * 32 * (MT * NT * 4 + NT) * 4 : 0;
    static constexpr int SMEM = 2 * STAGE > RED ? 2 * STAGE : RED;
    static_assert(CH % KS == 0, "a stage's chunks split evenly over the K warps");
    static_assert(NT % 2 == 0 || NT == 1, "ldmatrix x4 loads two n-tiles");
};

// MmRows (a RowMap) is a product's device rows by tile position: row(b, j) is the
// device row of tile row j of block b, -1 past the matrix.
struct MmRows {
    int m; // device rows
    __device__ __forceinline__ int row(int b, int j, int bm) const {
        const int i = b * bm + j;
        return i < m ? i : -1;
    }
};
// GateUpRows pairs the FFN's gate and up rows in one tile: 16-row m-tiles
// alternate gate and up rows of the same 16 features, so the thread that
// holds gate f's product holds up f's too.
struct MmGateUpRows {
    __device__ __forceinline__ int row(int b, int j, int bm) const {
        const int f = b * (bm / 2) + (j / 32) * 16 + j % 16;
        return f < FFN ? ((j / 16) & 1) * FFN + f : -1;
    }
};

// mm_tile computes block (blockIdx.x, blockIdx.y)'s tile of W (kind KIND,
// width K) times the n rows xq/xs and hands each warp's finished values
// v[mt][nt][e] (row g + 8(e/2) of m-tile mt, token 2t + e%2 of n-tile nt;
// zero outside the matrix or past n) to epi(j0, c0, bm, v): j0 the warp's
// first tile row, c0 its first token, bm the tile's rows.
template <int KIND, int K, class T, class RowMap, class Epi>
__device__ __forceinline__ void mm_tile(int n, const i8 *__restrict__ xq, const float *__restrict__ xs,
                                        const u8 *__restrict__ W, const u16 *__restrict__ D,
                                        const float *__restrict__ rs, RowMap rm, Epi epi, char *sm) {
    constexpr int KP = PADK(K), KC = KP / 64, NSTG = (KC + T::CH_ - 1) / T::CH_;
    constexpr int BM = T::BM_, BN = T::BN_, CH = T::CH_, KS = T::KS_, MT = T::MT, NT = T::NT;
    constexpr int WM = BM / T::WMS, WN = BN / T::WNS;
    constexpr size_t RB = KIND == KT ? KP / 4 : KP; // weight row bytes
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int wk = warp % KS, wmn = warp / KS, wm = wmn % T::WMS, wn = wmn / T::WMS;
    const int bx = blockIdx.x, r0 = blockIdx.y * BN;

    // load issues stage s's copies into buffer s&1
    auto load = [&](int s) {
        char *A = sm + (s & 1) * T::STAGE, *AD = A + T::A_BYTES, *B = AD + T::AD_BYTES, *BD = B + T::B_BYTES;
        const int c0 = s * CH;
        constexpr int AP = KIND == KT ? CH : CH * 4; // 16-byte pieces a weight row
        for (int p = tid; p < BM * AP; p += T::THREADS) {
            const int j = p / AP, q = p % AP, row = rm.row(bx, j, BM);
            const int c = KIND == KT ? c0 + q : c0 + q / 4;
            const bool ok = row >= 0 && c < KC;
            const u8 *src = W + (size_t)row * RB + (size_t)c0 * (KIND == KT ? 16 : 64) + q * 16;
            cp_async<16>(A + j * T::ASTR + q * 16, ok ? src : W, ok);
        }
        if constexpr (KIND == KQ8) {
            for (int p = tid; p < BM * CH; p += T::THREADS) {
                const int j = p / CH, cc = p % CH, row = rm.row(bx, j, BM);
                const bool ok = row >= 0 && c0 + cc < KC;
                cp_async<4>(AD + (j * CH + cc) * 4, D + (ok ? (size_t)row * (KP / 32) + 2 * (c0 + cc) : 0), ok);
            }
        }
        for (int p = tid; p < BN * CH * 4; p += T::THREADS) {
            const int r = p / (CH * 4), q = p % (CH * 4), tok = r0 + r;
            const bool ok = tok < n && c0 + q / 4 < KC;
            cp_async<16>(B + r * T::BSTR + q * 16, xq + (ok ? (size_t)tok * KP + (size_t)c0 * 64 + q * 16 : 0), ok);
        }
        if constexpr (KIND == KQ8) {
            for (int p = tid; p < BN * CH; p += T::THREADS) {
                const int r = p / CH, cc = p % CH, tok = r0 + r;
                const bool ok = tok < n && c0 + cc < KC;
                cp_async<8>(BD + (r * CH + cc) * 8, xs + (ok ? (size_t)tok * (KP / 32) + 2 * (c0 + cc) : 0), ok);
            }
        }
    };

    int acc[MT][NT][4];
    float facc[KIND == KQ8 ? MT : 1][KIND == KQ8 ? NT : 1][4];
    int xsum[NT]; // ternary: this lane's share of token g's activation sum, n-tile nt
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[mt][nt][e] = 0;
#pragma unroll
    for (int mt = 0; mt < (KIND == KQ8 ? MT : 1); mt++)
#pragma unroll
        for (int nt = 0; nt < (KIND == KQ8 ? NT : 1); nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) facc[mt][nt][e] = 0.f;
#pragma unroll
    for (int nt = 0; nt < NT; nt++) xsum[nt] = 0;

    load(0);
    cp_commit();
    for (int s = 0; s < NSTG; s++) {
        if (s + 1 < NSTG) load(s + 1);
        cp_commit(); // an empty group at the end keeps the count of wait_group 1 right
        cp_wait<1>();
        __syncthreads();
        const char *A = sm + (s & 1) * T::STAGE, *AD = A + T::A_BYTES, *B = AD + T::AD_BYTES, *BD = B + T::B_BYTES;
#pragma unroll
        for (int cc = wk; cc < CH; cc += KS) {
            U4 aw[KIND == KT ? MT : 1][2]; // ternary: rows g and g+8's 16-byte chunk
            if constexpr (KIND == KT) {
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    const int j = wm * WM + mt * 16 + g;
                    aw[mt][0] = *(const U4 *)(A + j * T::ASTR + cc * 16);
                    aw[mt][1] = *(const U4 *)(A + (j + 8) * T::ASTR + cc * 16);
                }
            }
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int ko = cc * 64 + h * 32; // the k-step's byte offset in an int8 row
                u32 b[NT][2];
#pragma unroll
                for (int nt = 0; nt < NT; nt += 2) {
                    if (NT == 1) {
                        const char *p = B + (wn * WN + g) * T::BSTR + ko + 4 * t;
                        b[0][0] = *(const u32 *)p;
                        b[0][1] = *(const u32 *)(p + 16);
                    } else {
                        const int m = lane >> 3, rr = lane & 7;
                        ldsm4(b[nt][0], b[nt][1], b[nt + 1][0], b[nt + 1][1],
                              B + (wn * WN + (nt + (m >> 1)) * 8 + rr) * T::BSTR + ko + (m & 1) * 16);
                    }
                }
                if constexpr (KIND == KT) {
#pragma unroll
                    for (int nt = 0; nt < NT; nt++)
                        xsum[nt] = dp4a((int)b[nt][1], 0x01010101, dp4a((int)b[nt][0], 0x01010101, xsum[nt]));
#pragma unroll
                    for (int mt = 0; mt < MT; mt++) {
                        // word 2h holds weights 32h+4s+b, word 2h+1 weights
                        // 32h+16+4s+b: shift t is this lane's k 4t.. of each
                        const u32 *w0 = &aw[mt][0].x, *w1 = &aw[mt][1].x;
                        const u32 a0 = (w0[2 * h] >> (2 * t)) & 0x03030303u, a1 = (w1[2 * h] >> (2 * t)) & 0x03030303u;
                        const u32 a2 = (w0[2 * h + 1] >> (2 * t)) & 0x03030303u;
                        const u32 a3 = (w1[2 * h + 1] >> (2 * t)) & 0x03030303u;
#pragma unroll
                        for (int nt = 0; nt < NT; nt++) mma_k32<true>(acc[mt][nt], a0, a1, a2, a3, b[nt][0], b[nt][1]);
                    }
                } else {
                    // q8_0: this k-step is block 2cc+h of both operands
                    const int blk = 2 * cc + h;
                    float db[NT][2];
#pragma unroll
                    for (int nt = 0; nt < NT; nt++) {
                        const int c = wn * WN + nt * 8 + 2 * t;
                        db[nt][0] = ((const float *)BD)[c * 2 * CH + blk];
                        db[nt][1] = ((const float *)BD)[(c + 1) * 2 * CH + blk];
                    }
#pragma unroll
                    for (int mt = 0; mt < MT; mt++) {
                        const int j = wm * WM + mt * 16;
                        u32 a0, a1, a2, a3;
                        const int m = lane >> 3, rr = lane & 7;
                        ldsm4(a0, a1, a2, a3, A + (j + (m & 1) * 8 + rr) * T::ASTR + ko + (m >> 1) * 16);
                        const float da0 = h2f(((const u16 *)AD)[(j + g) * 2 * CH + blk]);
                        const float da1 = h2f(((const u16 *)AD)[(j + g + 8) * 2 * CH + blk]);
#pragma unroll
                        for (int nt = 0; nt < NT; nt++) {
                            int d[4] = {0, 0, 0, 0};
                            mma_k32<false>(d, a0, a1, a2, a3, b[nt][0], b[nt][1]);
#pragma unroll
                            for (int e = 0; e < 4; e++)
                                facc[mt][nt][e] = __fmaf_rn((float)d[e], __fmul_rn(e < 2 ? da0 : da1, db[nt][e & 1]),
                                                            facc[mt][nt][e]);
                        }
                    }
                }
            }
        }
        __syncthreads(); // the buffer is loaded again next stage
    }
    cp_wait<0>();

    if constexpr (KIND == KT && KS > 1) {
        // warps 1..KS-1 of each piece hand their sums to warp 0 (shared
        // memory is free: every copy has landed and been used)
        int *red = (int *)sm;
        constexpr int PER = MT * NT * 4 + NT;
        if (wk > 0) {
            int *o = red + ((wk - 1) * (T::WARPS / KS) + wmn) * 32 * PER + lane;
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int nt = 0; nt < NT; nt++)
#pragma unroll
                    for (int e = 0; e < 4; e++) o[((mt * NT + nt) * 4 + e) * 32] = acc[mt][nt][e];
#pragma unroll
            for (int nt = 0; nt < NT; nt++) o[(MT * NT * 4 + nt) * 32] = xsum[nt];
        }
        __syncthreads();
        if (wk > 0) return;
        for (int k = 1; k < KS; k++) {
            const int *o = red + ((k - 1) * (T::WARPS / KS) + wmn) * 32 * PER + lane;
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int nt = 0; nt < NT; nt++)
#pragma unroll
                    for (int e = 0; e < 4; e++) acc[mt][nt][e] += o[((mt * NT + nt) * 4 + e) * 32];
#pragma unroll
            for (int nt = 0; nt < NT; nt++) xsum[nt] += o[(MT * NT * 4 + nt) * 32];
        }
    }

    // the epilogue: (int, or q8_0's float) sum -> value, as finish() does
    float v[MT][NT][4];
    const int j0 = wm * WM, c0 = r0 + wn * WN;
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        int tsum[2] = {0, 0};
        if (KIND == KT) {
            // token g's sum over the four lanes of its group, then the sums
            // of this lane's output tokens 2t and 2t+1 (groups 2t, 2t+1)
            int s = xsum[nt];
            s += __shfl_xor_sync(0xffffffffu, s, 1);
            s += __shfl_xor_sync(0xffffffffu, s, 2);
            tsum[0] = __shfl_sync(0xffffffffu, s, (2 * t) * 4);
            tsum[1] = __shfl_sync(0xffffffffu, s, (2 * t + 1) * 4);
        }
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int tok = c0 + nt * 8 + 2 * t + (e & 1);
            const float sx = KIND == KT && tok < n ? xs[tok] : 1.f;
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                const int row = rm.row(bx, j0 + mt * 16 + g + 8 * (e >> 1), BM);
                float val = 0.f;
                if (row >= 0 && tok < n) {
                    if constexpr (KIND == KT) {
                        val = (float)(acc[mt][nt][e] - tsum[e & 1]) * sx * rs[row];
                    } else {
                        val = facc[mt][nt][e] * rs[row];
                    }
                }
                v[mt][nt][e] = val;
            }
        }
    }
    epi(j0, c0, BM, v);
}

// fdot is row `row` of an f16/f32 matrix times the float row x (KP values).
template <int KIND, int K> __device__ __forceinline__ float fdot(const u8 *__restrict__ W, int row, const float *x) {
    constexpr int KP = PADK(K);
    float s = 0.f;
    if (KIND == KF32) {
        const float *w = (const float *)W + (size_t)row * KP;
        for (int k = 0; k < K; k++) s += w[k] * ldcg(x + k);
    } else {
        const u16 *w = (const u16 *)W + (size_t)row * KP;
        for (int k = 0; k < K; k++) s += h2f(w[k]) * ldcg(x + k);
    }
    return s;
}

// The float tile (f16/f32 layers: tiny test models): a thread an output,
// 64 rows x 4 tokens a block (mm.go mmFloatShape).
#define MM_FROWS 64
#define MM_FTOKS 4

// mm_run dispatches a product to the tile of its n (the table above).
// Epi has put(row, tok, v) for one output, or (gate/up) the tile form.
template <int KIND, int K, class RowMap, class Epi>
__device__ __forceinline__ void mm_run(int n, const i8 *xq, const float *xs, const u8 *W, const u16 *D,
                                       const float *rs, RowMap rm, Epi epi) {
    extern __shared__ __attribute__((aligned(16))) char sm[];
    if constexpr (KIND == KT) {
        if (n > MM_DECODE_N) mm_tile<KT, K, MmTile<KT, 64, 128, 32, 32, 1, 2>>(n, xq, xs, W, D, rs, rm, epi, sm);
        else if (n > 32) mm_tile<KT, K, MmTile<KT, 32, 64, 32, 32, 4, 4>>(n, xq, xs, W, D, rs, rm, epi, sm);
        else if (n > 16) mm_tile<KT, K, MmTile<KT, 32, 32, 32, 32, 4, 4>>(n, xq, xs, W, D, rs, rm, epi, sm);
        else if (n > 8) mm_tile<KT, K, MmTile<KT, 32, 16, 32, 16, 4, 4>>(n, xq, xs, W, D, rs, rm, epi, sm);
        else mm_tile<KT, K, MmTile<KT, 32, 8, 32, 8, 4, 4>>(n, xq, xs, W, D, rs, rm, epi, sm);
    } else if constexpr (KIND == KQ8) {
        if (n > MM_DECODE_N) mm_tile<KQ8, K, MmTile<KQ8, 64, 128, 32, 32, 1, 1>>(n, xq, xs, W, D, rs, rm, epi, sm);
        else if (n > 32) mm_tile<KQ8, K, MmTile<KQ8, 64, 64, 32, 32, 1, 1>>(n, xq, xs, W, D, rs, rm, epi, sm);
        else if (n > 16) mm_tile<KQ8, K, MmTile<KQ8, 64, 32, 32, 32, 1, 1>>(n, xq, xs, W, D, rs, rm, epi, sm);
        else if (n > 8) mm_tile<KQ8, K, MmTile<KQ8, 64, 16, 32, 16, 1, 1>>(n, xq, xs, W, D, rs, rm, epi, sm);
        else mm_tile<KQ8, K, MmTile<KQ8, 64, 8, 32, 8, 1, 1>>(n, xq, xs, W, D, rs, rm, epi, sm);
    }
}

// The products' outputs. Store: out[tok][row], M values a token.
template <int M> struct MmStoreEpi {
    float *out;
    __device__ __forceinline__ void put(int row, int tok, float v) const { out[(size_t)tok * M + row] = v; }
};
// Residual: x[tok][row] += v, or with POST_NORM = v (the host's post buffer).
struct MmResidualEpi {
    float *x;
    __device__ __forceinline__ void put(int row, int tok, float v) const {
        float *p = x + (size_t)tok * DIM + row;
        *p = POST_NORM ? v : *p + v;
    }
};
// Head: the logits, soft-capped as k_lmhead does.
struct MmHeadEpi {
    float *logits;
    __device__ __forceinline__ void put(int row, int tok, float v) const {
        if (LOGIT_CAP > 0.f) v = LOGIT_CAP * tanhf(v * (1.f / LOGIT_CAP));
        logits[(size_t)tok * VOCAB + row] = v;
    }
};

// MmTileEpi hands a warp's fragment values to a one-output Epi.
template <class E, class RowMap> struct MmTileEpi {
    E e;
    RowMap rm;
    int n;
    template <int MT, int NT>
    __device__ __forceinline__ void operator()(int j0, int c0, int bm, float (&v)[MT][NT][4]) const {
        const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    const int row = rm.row(blockIdx.x, j0 + mt * 16 + g + 8 * (q >> 1), bm);
                    const int tok = c0 + nt * 8 + 2 * t + (q & 1);
                    if (row >= 0 && tok < n) e.put(row, tok, v[mt][nt][q]);
                }
    }
};

// MmGateUpEpi: m-tiles 2i and 2i+1 are gate and up rows of the same
// features (MmGateUpRows): hb[tok][f] = act(gate) * up.
struct MmGateUpEpi {
    float *hb;
    int n;
    template <int MT, int NT>
    __device__ __forceinline__ void operator()(int j0, int c0, int bm, float (&v)[MT][NT][4]) const {
        const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
        for (int mt = 0; mt < MT; mt += 2)
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    const int f = blockIdx.x * (bm / 2) + (j0 + mt * 16) / 2 + g + 8 * (q >> 1);
                    const int tok = c0 + nt * 8 + 2 * t + (q & 1);
                    if (f < FFN && tok < n) hb[(size_t)tok * FFN + f] = activate(v[mt][nt][q]) * v[mt + 1][nt][q];
                }
    }
};

// mm_product runs one product: the float tile for f16/f32, else the int8
// tiles of the table, whose block size depends on n (mm.go mmShape).
// Entry points of MR device rows (gate/up: the FFN's features) with the
// one-output epilogue E.
template <int KIND, int K, int MR, class E>
__device__ __forceinline__ void mm_product(int n, const i8 *xq, const float *xs, const float *xf, const u8 *W,
                                           const u16 *D, const float *rs, E e) {
    grid_dep_wait();
    if constexpr (KIND == KF32 || KIND == KF16) {
        const int row = blockIdx.x * MM_FROWS + (threadIdx.x % MM_FROWS);
        const int tok = blockIdx.y * MM_FTOKS + threadIdx.x / MM_FROWS;
        if (row < MR && tok < n) e.put(row, tok, fdot<KIND, K>(W, row, xf + (size_t)tok * PADK(K)) * rs[row]);
    } else {
        mm_run<KIND, K>(n, xq, xs, W, D, rs, MmRows{MR}, MmTileEpi<E, MmRows>{e, MmRows{MR}, n});
    }
    grid_dep_launch();
}

#define MM_PARAMS                                                                                              \
    int n, const i8 *__restrict__ xq, const float *__restrict__ xs, const float *__restrict__ xf,             \
        const u8 *__restrict__ W, const u16 *__restrict__ D, const float *__restrict__ rs

extern "C" __global__ void __launch_bounds__(256, 2) k_mm_qkv(MM_PARAMS, float *out) {
    mm_product<WK, DIM, QD + 2 * KVD>(n, xq, xs, xf, W, D, rs, MmStoreEpi<QD + 2 * KVD>{out});
}
extern "C" __global__ void __launch_bounds__(256, 2) k_mm_wo(MM_PARAMS, float *x) {
    mm_product<WK, QD, DIM>(n, xq, xs, xf, W, D, rs, MmResidualEpi{x});
}
extern "C" __global__ void __launch_bounds__(256, 2) k_mm_down(MM_PARAMS, float *x) {
    mm_product<WK, FFN, DIM>(n, xq, xs, xf, W, D, rs, MmResidualEpi{x});
}
extern "C" __global__ void __launch_bounds__(256, 2) k_mm_head(MM_PARAMS, float *logits) {
    mm_product<HK, DIM, VOCAB>(n, xq, xs, xf, W, D, rs, MmHeadEpi{logits});
}

extern "C" __global__ void __launch_bounds__(256, 2) k_mm_gateup(MM_PARAMS, float *hb) {
    grid_dep_wait();
    if constexpr (WK == KF32 || WK == KF16) {
        const int f = blockIdx.x * MM_FROWS + (threadIdx.x % MM_FROWS);
        const int tok = blockIdx.y * MM_FTOKS + threadIdx.x / MM_FROWS;
        if (f < FFN && tok < n) {
            const float *x = xf + (size_t)tok * PADK(DIM);
            const float gv = fdot<WK, DIM>(W, f, x) * rs[f], uv = fdot<WK, DIM>(W, FFN + f, x) * rs[FFN + f];
            hb[(size_t)tok * FFN + f] = activate(gv) * uv;
        }
    } else {
        mm_run<WK, DIM>(n, xq, xs, W, D, rs, MmGateUpRows{}, MmGateUpEpi{hb, n});
    }
    grid_dep_launch();
}
