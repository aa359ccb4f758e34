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

// sample_block draws one token from a row of VOCAB logits under sp and
// advances sp's counter and repetition window; all SMP_NT threads of the
// block call it, and thread 0 gets the token (the others -1). k_sample
// (the lone decode step) and k_rsample (a batch's rows) share it.
__device__ int sample_block(float *logits, SampleP *sp) {
    __shared__ u32 bins[256];
    __shared__ int ws[32];
    __shared__ u32 prefix_s;
    __shared__ int want_s;
    __shared__ float cv[SMP_MAXK];
    __shared__ int ci[SMP_MAXK];
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
    if (tid != 0) return -1;
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
    sp->counter++;
    if (sp->lastn > 0) {
        sp->hist[sp->hpos] = pick;
        sp->hpos = (sp->hpos + 1) % sp->lastn;
        sp->hlen = min(sp->hlen + 1, sp->lastn);
    }
    return pick;
}

extern "C" __global__ void __launch_bounds__(SMP_NT) k_sample(float *logits, SampleP *sp, int *tp, int *tok_out) {
    grid_dep_wait();
    const int pick = sample_block(logits, sp);
    if (threadIdx.x == 0) {
        tp[0] = pick;
        tok_out[0] = pick;
    }
}

// argmax_block is the id of the largest of a row of VOCAB logits, the
// lowest id on ties (as k_lmhead's argmax and package sample's Argmax),
// 0 when all are NaN; all BT threads call it, thread 0 gets the id.
template <int BT> __device__ int argmax_block(const float *logits) {
    __shared__ float wv[BT / 32];
    __shared__ int wi[BT / 32];
    float bv = -3.0e38f;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < VOCAB; i += BT) {
        const float v = ldcg(logits + i);
        if (v > bv) { bv = v; bi = i; } // ascending ids: the first of equals stays
    }
    block_argmax<BT>(bv, bi, wv, wi);
    return bi < 0 || bi >= VOCAB ? 0 : bi;
}

// k_rargmax: next[r] = the argmax of logits row r, a block a row.
#define RARG_BT 256
extern "C" __global__ void __launch_bounds__(RARG_BT) k_rargmax(int n, const float *logits, int *next) {
    const int r = blockIdx.x;
    if (r >= n) return;
    const int id = argmax_block<RARG_BT>(logits + (size_t)r * VOCAB);
    if (threadIdx.x == 0) next[r] = id;
}

// k_rsample: next[r] = a draw from logits row r under the sampling block of
// the row's slot (slots[rows[r].slot].sp, advanced as k_sample advances
// it), or the argmax where the slot has none or its temperature is 0. A
// block a row; padding rows (slot < 0) write nothing.
extern "C" __global__ void __launch_bounds__(SMP_NT) k_rsample(int n, float *logits, const Row *__restrict__ rows,
                                                               const Slot *__restrict__ slots, int *next) {
    const int r = blockIdx.x;
    if (r >= n || rows[r].slot < 0) return;
    SampleP *sp = slots[rows[r].slot].sp;
    float *row = logits + (size_t)r * VOCAB;
    const int id = sp == nullptr || !(sp->temp > 0.f) ? argmax_block<SMP_NT>(row) : sample_block(row, sp);
    if (threadIdx.x == 0) next[r] = id;
}

