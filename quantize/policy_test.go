package quantize

import (
	"strings"
	"testing"

	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/quant"
)

// The policy, target by target, for each kind of tensor and row widths the
// types hold or not: 256 (every block type), 576 (smollm's hidden size: not
// whole 256- or 128-blocks, whole 64- and 32-blocks) and 48 (not even
// whole 32-blocks). Expected values are llama-quantize's (57b50e1f6,
// src/llama-quant.cpp), except where it picks a type EdgeLLM does not
// write (Q4_K -> Q6_K, Q5_0 -> Q8_0) or stops with an error (F16 here).
func TestChoose(t *testing.T) {
	const (
		F32, F16, Q8, Q4, Q6  = quant.F32, quant.F16, quant.Q8_0, quant.Q4_0, quant.Q6_K
		TQ1, TQ2, Q2, I2, I2A = quant.TQ1_0, quant.TQ2_0, quant.Q2_0, quant.I2_S, quant.I2_S_ARM
	)
	type want struct{ w256, w576, w48 quant.Type }
	matrix := "blk.0.attn_q.weight"
	cases := []struct {
		target quant.Type
		arm    bool
		name   string
		tied   bool
		want   want
	}{
		{TQ2, false, matrix, true, want{TQ2, Q4, F16}},
		{TQ1, false, matrix, true, want{TQ1, Q4, F16}},
		{Q2, false, matrix, true, want{Q2, Q2, F16}},
		{I2, false, matrix, true, want{I2, Q4, F16}},
		{I2, true, matrix, true, want{I2A, I2A, F16}},
		{Q4, false, matrix, true, want{Q4, Q4, F16}},
		{Q8, false, matrix, true, want{Q8, Q8, F16}},
		{F16, false, matrix, true, want{F16, F16, F16}},
		{F32, false, matrix, true, want{F32, F32, F32}},

		// The LM head: Q6_K, Q8_0 where its rows are not whole target
		// blocks (then Q6_K's own fallback where they are not whole 256s).
		{TQ2, false, "output.weight", false, want{Q6, Q8, F16}},
		{TQ1, false, "output.weight", false, want{Q6, Q8, F16}},
		{Q2, false, "output.weight", false, want{Q6, Q8, F16}},
		{Q4, false, "output.weight", false, want{Q6, Q8, F16}},
		{Q8, false, "output.weight", false, want{Q8, Q8, F16}},
		{I2, false, "output.weight", false, want{F16, F16, F16}},
		{F16, false, "output.weight", false, want{F16, F16, F16}},
		// A tied embedding is the LM head.
		{TQ2, false, "token_embd.weight", true, want{Q6, Q8, F16}},
		{Q4, false, "token_embd.weight", true, want{Q6, Q8, F16}},
		{Q8, false, "token_embd.weight", true, want{Q8, Q8, F16}},
		{I2, true, "token_embd.weight", true, want{F16, F16, F16}},
		// An untied embedding: llama.cpp's Q4_K for the ternary targets
		// (Q6_K here), the target otherwise.
		{TQ2, false, "token_embd.weight", false, want{Q6, Q8, F16}},
		{TQ1, false, "token_embd.weight", false, want{Q6, Q8, F16}},
		{Q2, false, "token_embd.weight", false, want{Q6, Q8, F16}},
		{Q4, false, "token_embd.weight", false, want{Q4, Q4, F16}},
		{Q8, false, "token_embd.weight", false, want{Q8, Q8, F16}},
		{I2, false, "token_embd.weight", false, want{F16, F16, F16}},
	}
	for _, c := range cases {
		opt := Options{Type: c.target, Tied: c.tied}
		if c.arm {
			opt.I2SLayout = model.I2SARM
		}
		for _, w := range []struct {
			cols uint64
			want quant.Type
		}{{256, c.want.w256}, {576, c.want.w576}, {48, c.want.w48}} {
			got, reason := Choose(c.name, []uint64{w.cols, 1024}, quant.F16, opt)
			if got != w.want {
				t.Errorf("%s target %s (arm %v, tied %v), rows of %d: %s (%s), want %s", c.name, c.target, c.arm, c.tied, w.cols, got, reason, w.want)
			}
			base := c.target
			if c.arm {
				base = I2A
			}
			if got != base && reason == "" {
				t.Errorf("%s target %s rows of %d: %s with no reason given", c.name, c.target, w.cols, got)
			}
			if got != base && got != F16 && got != F32 && w.cols != 256 && c.name == matrix && !strings.Contains(reason, "fallback") {
				t.Errorf("%s: reason %q does not name the fallback", c.name, reason)
			}
		}
	}

	// Kept as they are: 1-D tensors (norms, biases, rope_freqs, BitNet's
	// one-element .scale, shapes whose other dims are 1), norms, and
	// tensors not named "*weight".
	for _, k := range []struct {
		name  string
		shape []uint64
	}{
		{"blk.0.attn_norm.weight", []uint64{256}},
		{"rope_freqs.weight", []uint64{32}},
		{"blk.0.attn_q.bias", []uint64{256}},
		{"blk.0.ffn_down.scale", []uint64{1}},
		{"blk.0.attn_k.weight", []uint64{256, 1}},
		{"blk.0.attn_q_norm.weight", []uint64{64, 4}},
		{"blk.0.ffn_gate_inp.weight", []uint64{256, 8}},
	} {
		for _, in := range []quant.Type{F32, F16} {
			for _, target := range []quant.Type{TQ2, Q4, F16, I2} {
				if got, reason := Choose(k.name, k.shape, in, Options{Type: target}); got != in || !strings.HasPrefix(reason, "kept") {
					t.Errorf("%s %v (%s) target %s: %s (%q), want kept as %s", k.name, k.shape, in, target, got, reason, in)
				}
			}
		}
	}

	// Overrides win, then the fallback applies to them too.
	q8, tq2 := Q8, TQ2
	if got, _ := Choose("token_embd.weight", []uint64{256, 8}, F16, Options{Type: TQ2, Tied: true, TokenEmbdType: &q8}); got != Q8 {
		t.Errorf("--token-embedding-type q8_0: %s", got)
	}
	if got, reason := Choose("output.weight", []uint64{576, 8}, F16, Options{Type: Q8, OutputType: &tq2}); got != Q4 || !strings.Contains(reason, "--output-type") {
		t.Errorf("--output-type tq2_0 on rows of 576: %s (%s), want Q4_0 by fallback", got, reason)
	}
}

func TestParseTypeAndFileType(t *testing.T) {
	for name, want := range map[string]uint32{"tq1_0": 36, "TQ2_0": 37, "q2_0": 41, "i2_s": 40, "q4_0": 2, "q8_0": 7, "f16": 1} {
		typ, err := ParseType(name)
		if err != nil {
			t.Fatal(err)
		}
		if ft, ok := FileType(typ); !ok || ft != want {
			t.Errorf("%s: file type %d, want %d", name, ft, want)
		}
	}
	for _, bad := range []string{"q5_k", "", "i2_s(arm)", "q4_k"} {
		if _, err := ParseType(bad); err == nil || !strings.Contains(err.Error(), "unknown or unwritable type") {
			t.Errorf("ParseType(%q): %v", bad, err)
		}
	}
}
