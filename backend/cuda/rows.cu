// Many rows at once: the step that prefill (a prompt's tokens, one
// sequence) and batched decode (one token of each of up to 64 sequences)
// share. A row is one token at its own position in its own sequence
// (slot); the products read each weight once for all rows (mm.cu: int8
// tensor-core tiles for ternary and q8_0, a float tile for f16/f32) and
// attention goes row by row over each row's own KV cache (mattn.cu: causal
// tiles for a prompt, flash-decoding splits for a batch).
//
// The plan (rowsplan.go Model.rowsPlan):
//   k_rembed                        x[r] = embedding of rows[r].tok
//   per layer l:
//     k_rnorm_dim  (attn norm)      xq/xs/xf = quantized RMSNorm(x)
//     k_mm_qkv                      raw[r] = Wqkv xq[r]          [n][QD+2KVD]
//     k_rqkv                        biases, q/k norms, RoPE at rows[r].pos;
//                                   q -> q[r], k/v -> slot's cache at layer l
//     k_pattn (prompt) | k_battn (batch)   att[r]                [n][QD]
//     k_rnorm_qd   (attn sub-norm)  quantized (sub-normed) att
//     k_mm_wo                       x[r] += Wo att[r]   (POST_NORM: post[r] =, then k_rpostnorm)
//     k_rnorm_dim  (ffn norm)
//     k_mm_gateup                   hb[r] = act(gate) * up       [n][FFN]
//     k_rnorm_ffn  (ffn sub-norm)
//     k_mm_down                     x[r] += Wdown hb[r] (POST_NORM as k_mm_wo)
//   k_rnorm_head (output norm), k_mm_head  logits[r]             [n][VOCAB]
//   k_rargmax | k_rsample           next[r]
//
// A prompt chunk's LM head (PrefillLogits) runs k_rnorm_head and
// k_mm_head on groups of at most 64 rows of x (logits holds 64 rows).
//
// Every kernel takes n, the rows of the launch (a CUDA graph is captured
// per bucket of n; rows past the live ones are padding rows, slot -1).
//
// The int8 input of a product (k_rnorm_*), row r of width K (KP = PADK(K)):
//   ternary: xq[r][KP] int8, xs[r] its one scale (BitNet's per-token absmax,
//            stage.cu's rounding), so value = xq * xs.
//   q8_0:    xq[r][KP] int8, xs[r][KP/32] a scale per 32 values.
//   f16/f32: xf[r][KP] float, the normalized row (xq, xs unused).
// Padding columns (K..KP) are zero.

// Row is one row of a step, uploaded by the host each step (session.go
// rowDesc mirrors it).
struct Row {
    int tok;   // token id
    int pos;   // its position in its sequence
    int slot;  // index into the step's Slot table; < 0: a padding row (no KV write, no attention)
    int flags; // reserved, 0
};

struct SampleP; // sample.cu

// Slot is one sequence's KV cache and RoPE tables (rows.go slotDesc
// mirrors it). Layer l's cache is k + l * layer (elements), [pos][KVD].
struct Slot {
    kv_t *k, *v;
    const float2 *rope, *rope_local; // model.RopeTable of its context: [pos][HD/2] (cos, sin); rope_local 0 when none
    long long layer;                 // elements between layers
    long long ctx;                   // positions the cache holds
    SampleP *sp;                     // the session's sampling block (SetSampling), which k_rsample draws with
                                     // and advances; nullptr: the argmax
};

// k_rembed: x[r] = embedding row of rows[r].tok times escale; row
// blockIdx.y (a padding row embeds its token 0, which nothing reads).
extern "C" __global__ void __launch_bounds__(256) k_rembed(int n, const Row *__restrict__ rows, const u8 *__restrict__ E,
                                                           const u16 *__restrict__ ED, float escale, float *__restrict__ x) {
    const int r = blockIdx.y;
    if (r >= n) return;
    embed_body(rows[r].tok, E, ED, escale, x + (size_t)r * DIM);
}

// k_rpostnorm: x[r] += RMSNorm(y[r]) * w (POST_NORM), row blockIdx.x, as
// the decode step's k_postnorm does it.
extern "C" __global__ void __launch_bounds__(256) k_rpostnorm(int n, const float *y, const float *__restrict__ w, float *x) {
    __shared__ float red[64];
    const int r = blockIdx.x;
    if (r >= n) return;
    postnorm_row(y + (size_t)r * DIM, w, x + (size_t)r * DIM, red);
}
