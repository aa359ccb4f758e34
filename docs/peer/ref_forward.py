#!/usr/bin/env python3
"""An independent float64 forward pass for the tiny F16/Q8_0 GGUF files of the llama, qwen2,
qwen3 and gemma3 architectures, written from what llama.cpp's source does (docs/peer/README.md
lists the rules), to check that the rules are understood and how close an implementation without
llama.cpp's roundings (F16 activations, GELU table) gets to llama.cpp's logits.

    ref_forward.py MODEL.gguf LOGITS_OUT GREEDY_OUT [N_PROMPT [N_GREEDY]]

Same ids, positions and output format as llamacpp_logits.cpp. Reads F16, F32 and Q8_0 tensors
(Q8_0 dequantized exactly). With REF_LLAMACPP_ROUNDING=1 in the environment it rounds the input of
every matrix product as llama.cpp's CPU backend does (to F16 for an F16 matrix, to Q8_0 blocks for
a Q8_0 one), to tell llama.cpp's roundings apart from a real difference. EdgeLLM's own code; needs numpy and
llama.cpp's gguf-py (for GGUFReader) on PYTHONPATH. Slow and simple on purpose: no KV cache, the
whole sequence is recomputed for every greedy token.
"""

import math
import os
import sys

import numpy as np

import gguf


def read(path):
    r = gguf.GGUFReader(path)
    kv = {}
    for name, field in r.fields.items():
        if name.startswith("GGUF."):
            continue
        try:
            kv[name] = field.contents()
        except Exception:  # arrays of strings etc. are not needed here
            pass
    t, types = {}, {}
    Q = gguf.GGMLQuantizationType
    for ti in r.tensors:
        if ti.tensor_type not in (Q.F16, Q.F32, Q.Q8_0):
            sys.exit(f"{ti.name}: only F16/F32/Q8_0 files ({ti.tensor_type.name})")
        shape = [int(x) for x in reversed(ti.shape)] if len(ti.shape) > 1 else [int(ti.shape[0])]
        data = gguf.quants.dequantize(ti.data, ti.tensor_type) if ti.tensor_type == Q.Q8_0 else ti.data
        t[ti.name] = np.array(data, dtype=np.float64).reshape(shape)
        types[ti.name] = ti.tensor_type.name
    TYPES.update(types)
    return kv, t


ROUND = os.environ.get("REF_LLAMACPP_ROUNDING") == "1"
TYPES = {}


def q8_0_round(x):
    """x rounded to Q8_0 blocks of 32 along the last axis, as llama.cpp does to the activations
    before a product with a Q8_0 matrix: d = max|x|/127 kept as F16, q = round(x/d)."""
    b = x.reshape(*x.shape[:-1], -1, 32).astype(np.float32)
    d = np.abs(b).max(axis=-1, keepdims=True) / np.float32(127)
    idv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1), 0).astype(np.float32)
    q = np.rint(b * idv)  # the AVX2 path rounds half to even
    return (q * d.astype(np.float16).astype(np.float64)).reshape(x.shape)


def mm(x, name, t):
    """x @ W.T for the matrix `name`; with REF_LLAMACPP_ROUNDING=1 the activations are first
    rounded as llama.cpp's CPU backend rounds them: to F16 for an F16 matrix, to Q8_0 blocks for
    a Q8_0 matrix (the attention products with the F32 KV cache stay F32)."""
    if ROUND:
        if TYPES[name] == "F16":
            x = x.astype(np.float16).astype(np.float64)
        elif TYPES[name] == "Q8_0":
            x = q8_0_round(x)
    return x @ t[name].T


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, pos, base, n_rot, neox, scale=1.0, factors=None):
    """x: [T, H, D]. RoPE on the first n_rot dims of each head. theta_i = pos * scale *
    base^(-2i/n_rot) / factors[i]. neox: pairs (i, i + n_rot/2); else pairs (2i, 2i+1)."""
    half = n_rot // 2
    i = np.arange(half, dtype=np.float64)
    inv = base ** (-2.0 * i / n_rot)
    if factors is not None:
        inv = inv / factors
    ang = (pos[:, None] * scale) * inv[None, :]  # [T, half]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    y = x.copy()
    if neox:
        a, b = x[..., :half], x[..., half:n_rot]
        y[..., :half] = a * c - b * s
        y[..., half:n_rot] = a * s + b * c
    else:
        a, b = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
        y[..., 0:n_rot:2] = a * c - b * s
        y[..., 1:n_rot:2] = a * s + b * c
    return y


def attention(q, k, v, scale, window=None):
    """q: [T, H, D], k, v: [T, Hkv, D]; causal; window w: query i sees key j iff i - j < w."""
    T, H, D = q.shape
    Hkv = k.shape[1]
    g = H // Hkv
    out = np.zeros((T, H, v.shape[2]))
    ii = np.arange(T)[:, None]
    jj = np.arange(T)[None, :]
    mask = jj <= ii
    if window is not None:
        mask &= (ii - jj) < window
    for h in range(H):
        sc = (q[:, h, :] @ k[:, h // g, :].T) * scale
        sc = np.where(mask, sc, -np.inf)
        sc = sc - sc.max(axis=1, keepdims=True)
        p = np.exp(sc)
        p /= p.sum(axis=1, keepdims=True)
        out[:, h, :] = p @ v[:, h // g, :]
    return out


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def silu(x):
    return x / (1.0 + np.exp(-x))


def forward(kv, t, ids):
    arch = kv["general.architecture"]
    A = lambda k, d=None: kv.get(f"{arch}.{k}", d)
    n_embd = A("embedding_length")
    n_layer = A("block_count")
    n_head = A("attention.head_count")
    n_head_kv = A("attention.head_count_kv", n_head)
    hd = A("attention.key_length", n_embd // n_head)
    n_rot = A("rope.dimension_count", hd)
    eps = A("attention.layer_norm_rms_epsilon")
    base = A("rope.freq_base", 10000.0)
    scaling_type = A("rope.scaling.type", "linear")
    factor = A("rope.scaling.factor", A("rope.scale_linear", 0.0))
    scale = 1.0 if (factor == 0.0 or scaling_type == "none") else 1.0 / factor
    if scaling_type not in ("linear", "none"):
        sys.exit(f"rope scaling {scaling_type} not implemented here")
    factors = t.get("rope_freqs.weight")
    neox = arch in ("qwen2", "qwen3", "gemma3")
    T = len(ids)
    pos = np.arange(T, dtype=np.float64)
    emb = t["token_embd.weight"]
    head_name = "output.weight" if "output.weight" in t else "token_embd.weight"
    x = emb[ids]
    attn_scale = 1.0 / math.sqrt(hd)
    if arch == "gemma3":
        x = x * math.sqrt(n_embd)
        n_swa = A("attention.sliding_window", 0)
        period = A("attention.sliding_window_pattern", 6)
        base_swa = A("rope.freq_base_swa", 10000.0)
        if n_layer == 62:  # llama.cpp's 27B rule
            attn_scale = 1.0 / math.sqrt(n_embd / n_head)
    for il in range(n_layer):
        p = f"blk.{il}."
        h = rms_norm(x, t[p + "attn_norm.weight"], eps)
        q = mm(h, p + "attn_q.weight", t)
        k = mm(h, p + "attn_k.weight", t)
        v = mm(h, p + "attn_v.weight", t)
        if p + "attn_q.bias" in t:
            q += t[p + "attn_q.bias"]
            k += t[p + "attn_k.bias"]
            v += t[p + "attn_v.bias"]
        q = q.reshape(T, n_head, hd)
        k = k.reshape(T, n_head_kv, hd)
        v = v.reshape(T, n_head_kv, -1)
        if p + "attn_q_norm.weight" in t:
            q = rms_norm(q, t[p + "attn_q_norm.weight"], eps)
            k = rms_norm(k, t[p + "attn_k_norm.weight"], eps)
        window = None
        b, s, f = base, scale, (factors if arch == "llama" else None)
        if arch == "gemma3" and n_swa > 0 and (il % period < period - 1):
            window, b, s = n_swa, base_swa, 1.0
        q = rope(q, pos, b, n_rot, neox, s, f)
        k = rope(k, pos, b, n_rot, neox, s, f)
        a = mm(attention(q, k, v, attn_scale, window).reshape(T, -1), p + "attn_output.weight", t)
        if p + "post_attention_norm.weight" in t:
            a = rms_norm(a, t[p + "post_attention_norm.weight"], eps)
        x = x + a
        h = rms_norm(x, t[p + "ffn_norm.weight"], eps)
        act = gelu_tanh if arch == "gemma3" else silu
        m = mm(act(mm(h, p + "ffn_gate.weight", t)) * mm(h, p + "ffn_up.weight", t), p + "ffn_down.weight", t)
        if p + "post_ffw_norm.weight" in t:
            m = rms_norm(m, t[p + "post_ffw_norm.weight"], eps)
        x = x + m
    x = rms_norm(x, t["output_norm.weight"], eps)
    logits = mm(x, head_name, t)
    if "output.bias" in t:
        logits += t["output.bias"]
    cap = A("final_logit_softcapping", 0.0)
    if arch == "gemma3" and cap:
        logits = cap * np.tanh(logits / cap)
    return logits


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    n_prompt = int(sys.argv[4]) if len(sys.argv) > 4 else 24
    n_greedy = int(sys.argv[5]) if len(sys.argv) > 5 else 20
    kv, t = read(sys.argv[1])
    ids = [(37 * i + 5) % 1024 for i in range(n_prompt)]
    logits = forward(kv, t, ids)
    with open(sys.argv[2], "w") as f:
        for row in logits:
            f.write(" ".join("%.7g" % v for v in row) + "\n")
    greedy = []
    nxt = int(np.argmax(logits[-1]))
    for _ in range(n_greedy):
        greedy.append(nxt)
        ids.append(nxt)
        nxt = int(np.argmax(forward(kv, t, ids)[-1]))
    with open(sys.argv[3], "w") as f:
        f.write(" ".join(str(g) for g in greedy) + "\n")


if __name__ == "__main__":
    main()
