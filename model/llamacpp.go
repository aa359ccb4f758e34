package model

import (
	"math"

	"github.com/edgellm/edgellm/quant"
)

// llama.cpp's CPU rounds the activation vector before a quantized (or F16)
// product: to the weight type's "vec_dot_type". These functions mimic that
// rounding (ggml's quantize_row_q8_0_ref / quantize_row_q8_K_ref and the F16
// conversion) so the reference can be compared with llama.cpp's logits
// tightly, not only within the rounding noise (RefState.SetMatVec with
// LlamaCppMatVec). They are for checks, never on an inference path.

// roundQ8_0 rounds x in 32-blocks as ggml's x86 quantize_row_q8_0 does:
// q = round-half-even(x * 127/amax), value q * fp16(amax/127). (The scalar
// reference uses x * (1/d) instead, which differs in the last bit and so
// rounds a few near-half values the other way.)
func roundQ8_0(dst, x []float32) {
	for b := 0; b < len(x); b += 32 {
		blk := x[b:min(b+32, len(x))]
		var amax float32
		for _, v := range blk {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		var id float32
		if amax != 0 {
			id = 127 / amax
		}
		dh := quant.F16ToF32(quant.F32ToF16(amax / 127))
		for j, v := range blk {
			dst[b+j] = float32(math.RoundToEven(float64(v*id))) * dh
		}
	}
}

// roundQ8_K rounds x in 256-blocks: the element of largest magnitude maps to
// -127, d = 1/iscale stays float32, q = min(127, nearest(iscale*x)).
func roundQ8_K(dst, x []float32) {
	for b := 0; b < len(x); b += 256 {
		blk := x[b:min(b+256, len(x))]
		var amax, maxv float32
		for _, v := range blk {
			if a := float32(math.Abs(float64(v))); a > amax {
				amax, maxv = a, v
			}
		}
		if amax == 0 {
			clear(dst[b : b+len(blk)])
			continue
		}
		iscale := -127 / maxv
		d := 1 / iscale
		for j, v := range blk {
			q := min(127, math.RoundToEven(float64(iscale*v)))
			dst[b+j] = float32(q) * d
		}
	}
}

func roundF16(dst, x []float32) {
	for i, v := range x {
		dst[i] = quant.F16ToF32(quant.F32ToF16(v))
	}
}

// LlamaCppMatVec is MatVec on activations rounded as llama.cpp's CPU does
// for t's type: a RefState.SetMatVec product for comparing the reference
// with llama.cpp's logits tightly.
func LlamaCppMatVec(out []float32, t *Tensor, x []float32) {
	xr := make([]float32, len(x))
	switch t.Type {
	case quant.F32:
		copy(xr, x)
	case quant.F16:
		roundF16(xr, x)
	case quant.Q8_0, quant.Q4_0, quant.Q2_0:
		roundQ8_0(xr, x)
	default: // TQ1_0, TQ2_0, K-quants
		roundQ8_K(xr, x)
	}
	MatVec(out, t, xr)
}
