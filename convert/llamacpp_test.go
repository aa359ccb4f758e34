package convert

import (
	"fmt"
	"math"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/internal/testfiles"
	"github.com/edgellm/edgellm/internal/testmodel"
	"github.com/edgellm/edgellm/model"
)

// spmVocab writes a synthetic SentencePiece vocabulary of n tokens
// (<unk>, <s>, </s>, the 256 byte tokens, then filler pieces): enough for
// llama.cpp to load a file whose ids the test feeds directly.
type spmVocab int

func (n spmVocab) Len() int { return max(int(n), 259) }

func (n spmVocab) Write(w *gguf.Writer) {
	toks := []string{"<unk>", "<s>", "</s>"}
	types := []int32{2, 3, 3}
	for b := range 256 {
		toks = append(toks, fmt.Sprintf("<0x%02X>", b))
		types = append(types, 6)
	}
	for len(toks) < int(n) {
		toks = append(toks, fmt.Sprintf("\u2581t%d", len(toks)))
		types = append(types, 1)
	}
	scores := make([]float32, len(toks))
	for i := range scores {
		scores[i] = -float32(i)
	}
	w.AddString("tokenizer.ggml.model", "llama")
	w.AddStrings("tokenizer.ggml.tokens", toks)
	w.AddFloat32s("tokenizer.ggml.scores", scores)
	w.AddInt32s("tokenizer.ggml.token_type", types)
	w.AddUint32("tokenizer.ggml.unknown_token_id", 0)
	w.AddUint32("tokenizer.ggml.bos_token_id", 1)
	w.AddUint32("tokenizer.ggml.eos_token_id", 2)
}

// TestLlamaCppReadsConverted converts tiny checkpoints of each
// architecture llama.cpp implements and compares llama.cpp's
// teacher-forced logits of the file (docs/peer's llamacpp_logits) with
// EdgeLLM's reference forward pass of the same file. Skipped where
// llama.cpp is not built.
func TestLlamaCppReadsConverted(t *testing.T) {
	tool := testfiles.LlamaCppTool(t, "llamacpp_logits")
	oneBit := tinyBitNet
	oneBit.hfArch, oneBit.act = "BitnetForCausalLM", "silu"
	oneBit.bitnetSubNormNames = [2]string{"self_attn.inner_attn_ln.weight", "mlp.ffn_layernorm.weight"}
	// Ternary types need rows of whole 256-blocks.
	wideBit := oneBit
	wideBit.hidden, wideBit.ffn, wideBit.headDim = 256, 256, 64
	wideFalcon := tinyFalcon158
	wideFalcon.hidden, wideFalcon.ffn, wideFalcon.headDim = 256, 256, 64
	for _, tc := range []struct {
		name string
		s    tiny
		typ  string
		tol  float64
	}{
		{"llama-f32", tinyLlama, "f32", 1e-3},
		{"llama-f16", tinyLlama, "f16", 1e-3},
		{"falcon3-1.58bit-f32", tinyFalcon158, "f32", 1e-3},
		{"qwen2-f32", tinyQwen2, "f32", 1e-3},
		{"qwen3-f16", tinyQwen3, "f16", 1e-3},
		{"gemma3-f32", tinyGemma3, "f32", 1e-3},
		{"bitnet-f32", oneBit, "f32", 1e-3},
		{"bitnet-tq2_0", wideBit, "tq2_0", 1e-3},
		{"bitnet-tq1_0", wideBit, "tq1_0", 1e-3},
		{"falcon3-1.58bit-tq2_0", wideFalcon, "tq2_0", 1e-3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.s
			s.vocab = 1024 // llamacpp_logits feeds ids (37i+5) mod 1024
			path, _ := convertDir(t, s.generate(21).write(t, 1), tc.typ, Options{Vocab: spmVocab(s.vocab)})
			dir := t.TempDir()
			logitsPath := filepath.Join(dir, "logits.txt")
			const n = 24
			cmd := exec.Command(tool, path, logitsPath, filepath.Join(dir, "greedy.txt"), fmt.Sprint(n), "4")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("llamacpp_logits: %v\n%s", err, out)
			}
			rows := testfiles.Floats(t, logitsPath)
			ids := make([]int32, n)
			for i := range ids {
				ids[i] = int32((37*i + 5) % 1024)
			}
			rms := llamaCppRMS(t, testmodel.Weights(t, path), ids, rows)
			t.Logf("%s: relative RMS %.2g between llama.cpp and EdgeLLM's reference over %d positions", tc.name, rms, n)
			if rms > tc.tol {
				t.Fatalf("relative RMS %.3g, want at most %g", rms, tc.tol)
			}
		})
	}
}

// llamaCppRMS is the largest relative RMS difference, over positions,
// between llama.cpp's logits and the reference forward pass of ids with
// llama.cpp's activation rounding before each product
// (model.LlamaCppMatVec: F16 inputs for F16 weights, Q8_K for ternary and
// K-quant weights), so quantized files compare tightly too.
func llamaCppRMS(t *testing.T, w *model.Weights, ids []int32, rows [][]float32) float64 {
	t.Helper()
	if len(rows) != len(ids) {
		t.Fatalf("%d rows of logits for %d positions", len(rows), len(ids))
	}
	ref := model.NewReference(w, len(ids))
	ref.SetMatVec(model.LlamaCppMatVec)
	worst := 0.0
	for p, id := range ids {
		want := ref.Forward(id, p)
		if len(rows[p]) != len(want) {
			t.Fatalf("position %d: %d logits, want %d", p, len(rows[p]), len(want))
		}
		var d2, r2 float64
		for i, x := range want {
			d := float64(rows[p][i]) - float64(x)
			d2 += d * d
			r2 += float64(x) * float64(x)
		}
		worst = max(worst, math.Sqrt(d2/r2))
	}
	return worst
}
