package quantize

import (
	"bufio"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/internal/testfiles"
	"github.com/edgellm/edgellm/internal/testmodel"
	"github.com/edgellm/edgellm/quant"
)

// llamaCppBound is backend/cpu's TestTinyRandomFiles bound against
// llama.cpp's logits, for every type: llama.cpp rounds activations to 8
// bits before quantized products.
const llamaCppBound = 0.03

// readLogits reads llamacpp_logits's output: one line of logits per
// position.
func readLogits(t *testing.T, path string) [][]float32 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		if r, err = gzip.NewReader(f); err != nil {
			t.Fatal(err)
		}
	}
	var out [][]float32
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var row []float32
		for _, s := range strings.Fields(sc.Text()) {
			v, err := strconv.ParseFloat(s, 32)
			if err != nil {
				t.Fatal(err)
			}
			row = append(row, float32(v))
		}
		out = append(out, row)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// Files quantize writes load in llama.cpp, which computes the logits ours
// do within the bound the CPU tests hold it to.
func TestLlamaCppReadsOurFiles(t *testing.T) {
	tool := testfiles.LlamaCppTool(t, "llamacpp_logits")
	const n = 8
	for _, arch := range []string{"llama", "bitnet"} {
		src := testmodel.Write(t, tiny(arch, 256, 512, quant.F16))
		for _, typ := range []quant.Type{quant.F16, quant.Q8_0, quant.Q4_0, quant.TQ2_0, quant.TQ1_0} {
			out, _ := run(t, src, typ, nil)
			lp := filepath.Join(t.TempDir(), "logits.txt")
			cmd := exec.Command(tool, out, lp, filepath.Join(t.TempDir(), "greedy.txt"), strconv.Itoa(n), "1")
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s %s: llamacpp_logits: %v\n%s", arch, typ, err, b)
			}
			lc := readLogits(t, lp)
			if len(lc) != n {
				t.Fatalf("%s %s: llamacpp_logits wrote %d lines, want %d", arch, typ, len(lc), n)
			}
			ours := refLogits(testmodel.Weights(t, out), prompt(n))
			e := relErr(ours, lc)
			t.Logf("%s %s: relative error vs llama.cpp %.3g", arch, typ, e)
			if e > llamaCppBound {
				t.Errorf("%s %s: relative error vs llama.cpp %.3g > %g", arch, typ, e, llamaCppBound)
			}
		}
	}
}

// Our tensor types are llama-quantize's on the same input, but where it
// picks a type EdgeLLM does not write (Q4_K, Q5_0: Q6_K and Q8_0 here);
// tensors both write as Q8_0, Q4_0, Q6_K or F16 are the same bytes (quant
// reproduces llama.cpp's quantizers). Rows of 576 (smollm) make the
// ternary types fall back.
func TestMatchesLlamaQuantize(t *testing.T) {
	tool := testfiles.LlamaCppTool(t, "llama-quantize")
	substitute := map[quant.Type]quant.Type{quant.Q4_K: quant.Q6_K, quant.Q5_0: quant.Q8_0}
	for _, c := range []struct {
		dim, ffn int
		untied   bool
	}{{256, 512, false}, {576, 1536, false}, {256, 512, true}, {576, 1536, true}} {
		shape := [2]int{c.dim, c.ffn}
		src := testmodel.Write(t, tiny("llama", c.dim, c.ffn, quant.F16))
		if c.untied {
			src = withOutput(t, src)
		}
		for _, typ := range []quant.Type{quant.F16, quant.Q8_0, quant.Q4_0, quant.TQ2_0, quant.TQ1_0, quant.Q2_0} {
			ours, _ := run(t, src, typ, nil)
			theirs := filepath.Join(t.TempDir(), "lq.gguf")
			cmd := exec.Command(tool, src, theirs, typ.String())
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("llama-quantize %s: %v\n%s", typ, err, b)
			}
			a, err := gguf.Open(ours)
			if err != nil {
				t.Fatal(err)
			}
			b, err := gguf.Open(theirs)
			if err != nil {
				t.Fatal(err)
			}
			fa, _ := a.Uint("general.file_type")
			fb, _ := b.Uint("general.file_type")
			if fa != fb {
				t.Errorf("%d wide, %s: general.file_type %d, llama-quantize's %d", shape[0], typ, fa, fb)
			}
			if len(a.Tensors) != len(b.Tensors) {
				t.Fatalf("%d wide, %s: %d tensors, llama-quantize wrote %d", shape[0], typ, len(a.Tensors), len(b.Tensors))
			}
			subs := 0
			for i := range b.Tensors { // llama-quantize orders them its way
				tb := &b.Tensors[i]
				ta, ok := a.Tensor(tb.Name)
				if !ok {
					t.Errorf("%d wide, %s: no tensor %s", shape[0], typ, tb.Name)
					continue
				}
				want := tb.Type
				if s, ok := substitute[want]; ok {
					want = s
					subs++
				}
				if ta.Type != want {
					t.Errorf("%d wide (untied %v), %s: %s is %s, llama-quantize's %s", shape[0], c.untied, typ, ta.Name, ta.Type, tb.Type)
					continue
				}
				switch ta.Type {
				case quant.Q8_0, quant.Q4_0, quant.Q6_K, quant.F16, quant.F32:
					if ta.Type == tb.Type && string(ta.Data[:ta.Size]) != string(tb.Data[:tb.Size]) {
						t.Errorf("%d wide, %s: %s (%s) bytes differ from llama-quantize's", shape[0], typ, ta.Name, ta.Type)
					}
				}
			}
			// The untied embedding of the ternary targets is where llama.cpp
			// picks Q4_K: the substitution must have been met.
			if ternaryTarget := typ == quant.TQ2_0 || typ == quant.TQ1_0 || typ == quant.Q2_0; c.untied && ternaryTarget && subs == 0 {
				t.Errorf("%d wide, untied, %s: llama-quantize chose no type EdgeLLM substitutes", shape[0], typ)
			}
			a.Close()
			b.Close()
		}
	}
}

// withOutput copies a tied model's file with an output.weight of its own
// (the embedding's values), so the embedding and the LM head are untied.
func withOutput(t *testing.T, path string) string {
	return rewrite(t, path, "untied-"+filepath.Base(path), nil, func(w *gguf.Writer, ti gguf.TensorInfo) error {
		if err := sameTensor(w, ti); err != nil || ti.Name != "token_embd.weight" {
			return err
		}
		return w.AddTensor("output.weight", ti.Type, ti.Dims, ti.Data[:ti.Size])
	})
}
