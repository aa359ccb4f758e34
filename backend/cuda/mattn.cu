// Attention of many rows (rows.cu): k_rqkv (biases, q/k norms, RoPE, KV
// cache write), k_pattn (a prompt's causal attention) and k_battn (a
// batch's rows, each over its own cache).
