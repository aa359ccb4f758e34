#!/usr/bin/env python3
"""Writes the tiny random-weight GGUF models of testdata/models/tiny-random-archs2 (F16).

EdgeLLM's own generator. It uses llama.cpp's gguf-py (the `gguf` package in llama.cpp's tree
under gguf-py/, put on PYTHONPATH) and numpy; see docs/peer/README.md for the exact commands.

    make_tiny_archs2.py MODEL SEED OUT.gguf [ABLATION]

MODEL is one of: llama3, gemma3-softcap, qwen2-tied. The weights depend only on MODEL and SEED
(numpy's legacy RandomState, whose stream numpy keeps stable across versions), so an ABLATION
writes the same weights with one feature taken away or changed, to measure what the feature does
to llama.cpp's logits:
    llama3:          no-rope-freqs (drop rope_freqs.weight), inverse-rope-freqs (write 1/factor),
                     rope-scaling-none (add rope.scaling.type = "none")
    gemma3-softcap:  no-softcap (drop final_logit_softcapping), no-pattern (drop
                     sliding_window_pattern: llama.cpp's default period 6), no-window (drop
                     sliding_window: every layer global), swa-base-global (freq_base_swa = freq_base)
    qwen2-tied:      no-bias (drop attn_q/k/v.bias)

Tensor and key names are the ones llama.cpp's converter (convert_hf_to_gguf.py) writes for the
real models (Llama 3.2, Gemma 3, Qwen2.5). Shapes are in numpy order here (rows, cols) = GGUF
(ne1, ne0): a matrix [out, in] multiplies a vector of `in` values.
"""

import math
import sys

import numpy as np

import gguf

VOCAB = 1024
CTX = 512


def f16(a):
    return np.asarray(a, dtype=np.float16)


def f32(a):
    return np.asarray(a, dtype=np.float32)


class Gen:
    """Draws every tensor from one RandomState in a fixed order."""

    def __init__(self, seed):
        self.rs = np.random.RandomState(seed)

    def normal(self, std, *shape):
        return self.rs.standard_normal(shape) * std

    def norm(self, n, spread=0.1):
        # a norm weight: 1 + N(0, spread), so a wrong or missing norm weight shows
        return 1.0 + self.rs.standard_normal(n) * spread


def llama3_rope_factors(base, dim, factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                        old_context_len=8192):
    """rope_freqs.weight as llama.cpp's converter computes it for rope_type "llama3"
    (conversion/llama.py, LlamaModel.generate_extra_tensors), in float32 as there (torch float32)."""
    freqs = (np.float32(1.0) / (np.float32(base) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))).astype(np.float32)
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    out = []
    for freq in freqs:
        wavelen = np.float32(2 * math.pi) / freq
        if wavelen < high_freq_wavelen:
            out.append(np.float32(1))
        elif wavelen > low_freq_wavelen:
            out.append(np.float32(factor))
        else:
            smooth = (np.float32(old_context_len) / wavelen - np.float32(low_freq_factor)) / np.float32(high_freq_factor - low_freq_factor)
            out.append(np.float32(1) / ((np.float32(1) - smooth) / np.float32(factor) + smooth))
    return f32(out)


def common(w, name, n_embd, n_ff, n_layer, n_head, n_head_kv):
    w.add_name(name)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_context_length(CTX)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_block_count(n_layer)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)


def make_llama3(seed, path, ablation):
    # Llama 3.2 1B in miniature: hidden 2048 -> 128, 32 heads of 64 -> 2 heads of 64, 8 KV heads
    # -> 1 (GQA), 16 layers -> 2, tied head, rope base 500000, rope_type llama3 (factor 32,
    # low 1, high 4, original context 8192), RMS eps 1e-5.
    n_embd, n_ff, n_layer, n_head, n_head_kv, hd = 128, 384, 2, 2, 1, 64
    base = 500000.0
    g = Gen(seed)
    w = gguf.GGUFWriter(path, "llama")
    common(w, f"tiny-random-llama3-seed{seed}", n_embd, n_ff, n_layer, n_head, n_head_kv)
    w.add_rope_freq_base(base)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_vocab_size(VOCAB)
    w.add_rope_dimension_count(hd)
    if ablation == "rope-scaling-none":
        w.add_rope_scaling_type(gguf.RopeScalingType.NONE)
    w.add_tokenizer_model("none")

    factors = llama3_rope_factors(base, hd)
    if ablation == "inverse-rope-freqs":
        factors = f32(1.0 / factors)
    emb = g.normal(0.02, VOCAB, n_embd)
    tensors = [("token_embd.weight", f16(emb))]
    if ablation != "no-rope-freqs":
        tensors.append(("rope_freqs.weight", factors))
    tensors.append(("output_norm.weight", f32(g.norm(n_embd))))
    for i in range(n_layer):
        p = f"blk.{i}."
        tensors += [
            (p + "attn_norm.weight", f32(g.norm(n_embd))),
            # q and k larger than the rest (N(0, 0.2)), so that attention scores are large
            # enough for the RoPE frequency factors to move the logits visibly within 44
            # positions (the factors only slow the low-frequency pairs, whose angles stay small)
            (p + "attn_q.weight", f16(g.normal(0.2, n_head * hd, n_embd))),
            (p + "attn_k.weight", f16(g.normal(0.2, n_head_kv * hd, n_embd))),
            (p + "attn_v.weight", f16(g.normal(0.02, n_head_kv * hd, n_embd))),
            (p + "attn_output.weight", f16(g.normal(0.02, n_embd, n_head * hd))),
            (p + "ffn_norm.weight", f32(g.norm(n_embd))),
            (p + "ffn_gate.weight", f16(g.normal(0.02, n_ff, n_embd))),
            (p + "ffn_up.weight", f16(g.normal(0.02, n_ff, n_embd))),
            (p + "ffn_down.weight", f16(g.normal(0.02, n_embd, n_ff))),
        ]
    return w, tensors


def make_gemma3_softcap(seed, path, ablation):
    # Gemma 3 (270M-like ratio: q wider than hidden) in miniature: hidden 128, 4 heads of 64
    # (q 256 wide), 1 KV head, 4 layers, FFN 256, tied head, embedding scale sqrt(128),
    # GELU-tanh, pre and post norms, q/k norms, sliding window 6 with an explicit period of 3
    # (layers 0, 1, 3 local; 2 global), local RoPE base 10000, global 1e6 with no RoPE scaling
    # (as Gemma 3 270M/1B), final logit soft-cap 30.
    n_embd, n_ff, n_layer, n_head, n_head_kv, hd = 128, 256, 4, 4, 1, 64
    g = Gen(seed)
    w = gguf.GGUFWriter(path, "gemma3")
    common(w, f"tiny-random-gemma3-softcap-seed{seed}", n_embd, n_ff, n_layer, n_head, n_head_kv)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_freq_base(1e6)
    if ablation == "swa-base-global":
        w.add_rope_freq_base_swa(1e6)
    else:
        w.add_rope_freq_base_swa(10000.0)
    if ablation != "no-window":
        w.add_sliding_window(6)
    if ablation != "no-pattern":
        w.add_sliding_window_pattern(3)
    if ablation != "no-softcap":
        w.add_final_logit_softcapping(30.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_vocab_size(VOCAB)
    w.add_tokenizer_model("none")

    # token_embd N(0, 0.03) (the input is then scaled by sqrt(128) = 11.3) and output_norm
    # weights 40 * (1 + N(0, 0.1)), so the tied head's uncapped logits reach about +-50 and the
    # soft-cap at 30 changes them visibly (a larger embedding makes the tied head repeat the
    # last token)
    tensors = [("token_embd.weight", f16(g.normal(0.03, VOCAB, n_embd))),
               ("output_norm.weight", f32(40.0 * g.norm(n_embd)))]
    for i in range(n_layer):
        p = f"blk.{i}."
        tensors += [
            (p + "attn_norm.weight", f32(g.norm(n_embd))),
            (p + "attn_q.weight", f16(g.normal(0.02, n_head * hd, n_embd))),
            (p + "attn_k.weight", f16(g.normal(0.02, n_head_kv * hd, n_embd))),
            (p + "attn_v.weight", f16(g.normal(0.02, n_head_kv * hd, n_embd))),
            (p + "attn_q_norm.weight", f32(g.norm(hd))),
            (p + "attn_k_norm.weight", f32(g.norm(hd))),
            (p + "attn_output.weight", f16(g.normal(0.02, n_embd, n_head * hd))),
            (p + "post_attention_norm.weight", f32(g.norm(n_embd))),
            (p + "ffn_norm.weight", f32(g.norm(n_embd))),
            (p + "ffn_gate.weight", f16(g.normal(0.02, n_ff, n_embd))),
            (p + "ffn_up.weight", f16(g.normal(0.02, n_ff, n_embd))),
            (p + "ffn_down.weight", f16(g.normal(0.02, n_embd, n_ff))),
            (p + "post_ffw_norm.weight", f32(g.norm(n_embd))),
        ]
    return w, tensors


def make_qwen2_tied(seed, path, ablation):
    # Qwen2.5-0.5B in miniature: tied head (no output.weight), q/k/v biases, GQA, rope base 1e6:
    # hidden 128, 4 heads of 32, 2 KV heads, 2 layers, FFN 256, RMS eps 1e-6.
    n_embd, n_ff, n_layer, n_head, n_head_kv = 128, 256, 2, 4, 2
    hd = n_embd // n_head
    g = Gen(seed)
    w = gguf.GGUFWriter(path, "qwen2")
    common(w, f"tiny-random-qwen2-tied-seed{seed}", n_embd, n_ff, n_layer, n_head, n_head_kv)
    w.add_rope_freq_base(1e6)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_vocab_size(VOCAB)
    w.add_tokenizer_model("none")

    tensors = [("token_embd.weight", f16(g.normal(0.02, VOCAB, n_embd))),
               ("output_norm.weight", f32(g.norm(n_embd)))]
    for i in range(n_layer):
        p = f"blk.{i}."
        lt = [
            (p + "attn_norm.weight", f32(g.norm(n_embd))),
            (p + "attn_q.weight", f16(g.normal(0.02, n_head * hd, n_embd))),
            (p + "attn_q.bias", f32(g.normal(0.1, n_head * hd))),
            (p + "attn_k.weight", f16(g.normal(0.02, n_head_kv * hd, n_embd))),
            (p + "attn_k.bias", f32(g.normal(0.1, n_head_kv * hd))),
            (p + "attn_v.weight", f16(g.normal(0.02, n_head_kv * hd, n_embd))),
            (p + "attn_v.bias", f32(g.normal(0.1, n_head_kv * hd))),
            (p + "attn_output.weight", f16(g.normal(0.02, n_embd, n_head * hd))),
            (p + "ffn_norm.weight", f32(g.norm(n_embd))),
            (p + "ffn_gate.weight", f16(g.normal(0.02, n_ff, n_embd))),
            (p + "ffn_up.weight", f16(g.normal(0.02, n_ff, n_embd))),
            (p + "ffn_down.weight", f16(g.normal(0.02, n_embd, n_ff))),
        ]
        if ablation == "no-bias":
            lt = [t for t in lt if not t[0].endswith(".bias")]
        tensors += lt
    return w, tensors


MODELS = {
    "llama3": (make_llama3, {"no-rope-freqs", "inverse-rope-freqs", "rope-scaling-none"}),
    "gemma3-softcap": (make_gemma3_softcap, {"no-softcap", "no-pattern", "no-window", "swa-base-global"}),
    "qwen2-tied": (make_qwen2_tied, {"no-bias"}),
}


def main():
    if len(sys.argv) not in (4, 5) or sys.argv[1] not in MODELS:
        sys.exit(__doc__)
    name, seed, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ablation = sys.argv[4] if len(sys.argv) == 5 else None
    make, ablations = MODELS[name]
    if ablation is not None and ablation not in ablations:
        sys.exit(f"{name}: unknown ablation {ablation}; one of {sorted(ablations)}")
    w, tensors = make(seed, path, ablation)
    for tname, data in tensors:
        w.add_tensor(tname, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
