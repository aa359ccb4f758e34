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
