// The products of many rows (rows.cu): k_rnorm_* (RMSNorm and int8
// quantization of each row) and k_mm_* (weights times rows).
