// Package quantize rewrites a GGUF model's tensors in another type: the
// per-tensor type policy (Choose, llama-quantize's rules where EdgeLLM can
// write the type llama.cpp picks), BitNet's absmean ternarisation for the
// ternary types, and the file-level rewrite (File) behind `edgellm
// quantize`. It reads files through gguf and model and writes through
// gguf; it knows nothing of backends.
package quantize

import (
	"fmt"
	"io"
	"strings"

	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/quant"
)

// Options choose the output.
type Options struct {
	// Type is the target type of the matrices (TQ1_0, TQ2_0, Q2_0, I2_S,
	// Q4_0, Q8_0, F16, and F32 or BF16).
	Type quant.Type
	// TokenEmbdType and OutputType replace the policy's choice for
	// token_embd.weight and output.weight; nil keeps the policy's.
	TokenEmbdType, OutputType *quant.Type
	// Tied says the model has no output.weight, so token_embd.weight is
	// also the LM head and gets the output's type (as llama-quantize
	// does). File sets it from the input.
	Tied bool
	// I2SLayout is the layout I2_S output is written in (x86 unless arm).
	I2SLayout model.I2SLayout
	// InputI2SLayout says how to read I2_S input (model.ChooseI2SLayout's
	// rule when auto).
	InputI2SLayout model.I2SLayout
	// Progress, when set, receives progress lines for large inputs.
	Progress io.Writer
}

// typeNames are the names ParseType reads: the targets of `quantize
// --type`, then the extra types the embedding and output may be given.
var typeNames = []struct {
	name string
	t    quant.Type
}{
	{"tq1_0", quant.TQ1_0}, {"tq2_0", quant.TQ2_0}, {"q2_0", quant.Q2_0}, {"i2_s", quant.I2_S},
	{"q4_0", quant.Q4_0}, {"q8_0", quant.Q8_0}, {"f16", quant.F16},
	{"f32", quant.F32}, {"bf16", quant.BF16}, {"q6_k", quant.Q6_K},
}

// ParseType reads a type name ("tq2_0", "Q8_0", ...): one EdgeLLM can write.
func ParseType(s string) (quant.Type, error) {
	var names []string
	for _, n := range typeNames {
		if strings.EqualFold(n.name, s) {
			return n.t, nil
		}
		names = append(names, n.name)
	}
	return 0, fmt.Errorf("quantize: unknown or unwritable type %q (want one of %s)", s, strings.Join(names, ", "))
}

// writable reports whether File can produce t.
func writable(t quant.Type) bool {
	for _, n := range typeNames {
		if n.t == t {
			return true
		}
	}
	return false
}

// FileType is the general.file_type a file of mostly t declares:
// llama.cpp's LLAMA_FTYPE_* number, and bitnet.cpp's 40 for I2_S (which
// upstream llama.cpp later gave to Q1_0; only bitnet.cpp reads I2_S files).
func FileType(t quant.Type) (uint32, bool) {
	switch t {
	case quant.F32:
		return 0, true
	case quant.F16:
		return 1, true
	case quant.Q4_0:
		return 2, true
	case quant.Q8_0:
		return 7, true
	case quant.Q6_K:
		return 18, true
	case quant.BF16:
		return 32, true
	case quant.TQ1_0:
		return 36, true
	case quant.TQ2_0:
		return 37, true
	case quant.I2_S, quant.I2_S_ARM:
		return 40, true
	case quant.Q2_0:
		return 41, true
	}
	return 0, false
}

// category is llama-quantize's tensor_category, as far as it matters here.
type category int

const (
	catOther category = iota
	catTokenEmbd
	catOutput
)

func categoryOf(name string) category {
	switch name {
	case "output.weight":
		return catOutput
	case "token_embd.weight", "per_layer_token_embd.weight":
		return catTokenEmbd
	}
	return catOther
}

// quantizable is llama-quantize's tensor_allows_quantization for the
// architectures EdgeLLM reads: 2-D (or more) tensors named "*weight" that
// are not norms. The rest (norms, biases, BitNet's ".scale", rope_freqs
// and every 1-D tensor) keep their type; why is returned.
func quantizable(name string, shape []uint64) (bool, string) {
	dims := len(shape)
	for dims > 1 && shape[dims-1] == 1 {
		dims-- // ggml_n_dims: trailing 1s do not count
	}
	switch {
	case dims < 2:
		return false, "1-D"
	case !strings.HasSuffix(name, "weight"):
		return false, "not a weight"
	case strings.Contains(name, "_norm.weight"):
		return false, "a norm"
	case strings.Contains(name, "ffn_gate_inp.weight"):
		return false, "an expert gate"
	}
	return true, ""
}

// isQuantized is ggml_is_quantized: a block type, not a float one.
func isQuantized(t quant.Type) bool { return t.BlockSize() > 1 }

// fits reports whether rows of cols elements are whole blocks of t.
func fits(t quant.Type, cols uint64) bool {
	_, err := t.RowBytes(int(min(cols, 1<<40)))
	return err == nil
}

// Choose returns the type one tensor is written in, and, when it is not
// simply the target, why. in is the tensor's type now (kept tensors keep
// it); shape is GGUF's, ne0 (the row width) first. The rules, as
// llama-quantize's llama_tensor_get_type (llama.cpp 57b50e1f6,
// src/llama-quant.cpp) where EdgeLLM writes the type it picks:
//
//   - Tensors that are 1-D, norms, or not named "*weight" keep their type.
//   - TokenEmbdType / OutputType, when set, win (then the fallback below).
//   - A float target (F16, F32, BF16) is every other tensor's type.
//   - output.weight, and token_embd.weight when tied: Q8_0 when its rows
//     are not whole target blocks, else Q6_K unless the target is Q8_0.
//     For I2_S: F16, as bitnet.cpp's published I2_S files have.
//   - token_embd.weight (untied): for TQ1_0, TQ2_0 and Q2_0 llama.cpp
//     picks Q4_K, which EdgeLLM does not write: Q6_K here. For I2_S: F16.
//   - I2_S is I2_S_ARM (bitnet.cpp's ARM layout) when opt.I2SLayout is arm.
//   - Fallback, where the rows are not whole blocks of the type: TQ1_0,
//     TQ2_0, Q2_0 and I2_S to Q4_0, Q6_K to Q8_0, then F16 where even that
//     does not fit (llama-quantize stops with an error for Q4_0 and Q8_0
//     targets; F16 here).
func Choose(name string, shape []uint64, in quant.Type, opt Options) (quant.Type, string) {
	if ok, why := quantizable(name, shape); !ok {
		return in, "kept " + in.String() + ": " + why
	}
	cols := shape[0]
	t, reason := opt.Type, ""
	cat := categoryOf(name)
	isOutput := cat == catOutput || (opt.Tied && cat == catTokenEmbd)
	switch {
	case cat == catTokenEmbd && opt.TokenEmbdType != nil:
		t, reason = *opt.TokenEmbdType, "--token-embedding-type"
	case cat == catOutput && opt.OutputType != nil:
		t, reason = *opt.OutputType, "--output-type"
	case !isQuantized(t):
		return t, ""
	case isOutput:
		what := "output"
		if cat == catTokenEmbd {
			what = "tied embedding (the LM head)"
		}
		switch {
		case quant.IsI2S(t):
			t, reason = quant.F16, what+": F16, as bitnet.cpp's I2_S files"
		case !fits(t, cols):
			t, reason = quant.Q8_0, fmt.Sprintf("%s: rows of %d are not whole %s blocks: Q8_0 (llama-quantize's rule)", what, cols, opt.Type)
		case t != quant.Q8_0:
			t, reason = quant.Q6_K, what+": Q6_K (llama-quantize's rule)"
		}
	case cat == catTokenEmbd:
		switch t {
		case quant.TQ1_0, quant.TQ2_0, quant.Q2_0:
			t, reason = quant.Q6_K, "token embedding: Q6_K (llama-quantize gives Q4_K, which EdgeLLM does not write)"
		case quant.I2_S, quant.I2_S_ARM:
			t, reason = quant.F16, "token embedding: F16, as bitnet.cpp's I2_S files"
		}
	}
	if t == quant.I2_S && opt.I2SLayout == model.I2SARM {
		t = quant.I2_S_ARM
	}
	if fits(t, cols) {
		return t, reason
	}
	from := t
	switch t {
	case quant.TQ1_0, quant.TQ2_0, quant.Q2_0, quant.I2_S, quant.I2_S_ARM:
		t = quant.Q4_0
	case quant.Q6_K:
		t = quant.Q8_0
	default:
		t = quant.F16
	}
	if !fits(t, cols) {
		t = quant.F16
	}
	if reason != "" {
		reason += "; "
	}
	return t, reason + fmt.Sprintf("fallback: rows of %d are not whole %s blocks of %d", cols, from, from.BlockSize())
}
