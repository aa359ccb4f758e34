package quantize

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/backend/cpu"
	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/internal/testmodel"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/quant"
	"github.com/edgellm/edgellm/synth"
)

// tiny is a one-layer synthetic model with rows of dim and ffn weights and
// a vocabulary of 1024 (llamacpp_logits feeds ids up to 1023).
func tiny(arch string, dim, ffn int, typ quant.Type) synth.Preset {
	heads := dim / 64
	kv := 1
	if heads%2 == 0 {
		kv = 2
	}
	return synth.Preset{Name: fmt.Sprintf("q-%s-%d-%s", arch, dim, typ), Arch: arch, Dim: dim, FFN: ffn,
		Layers: 1, Heads: heads, KVHeads: kv, Vocab: 1024, Context: 64, RopeBase: 10000,
		SubNorms: arch == "bitnet", Type: typ, EmbedType: quant.F16}
}

// run quantizes in to a new file in t's temporary folder.
func run(t *testing.T, in string, typ quant.Type, mod func(*Options)) (string, *Summary) {
	t.Helper()
	opt := Options{Type: typ}
	if mod != nil {
		mod(&opt)
	}
	out := filepath.Join(t.TempDir(), fmt.Sprintf("%s-%s.gguf", strings.TrimSuffix(filepath.Base(in), ".gguf"), typ))
	sum, err := File(context.Background(), in, out, opt)
	if err != nil {
		t.Fatalf("quantize %s to %s: %v", filepath.Base(in), typ, err)
	}
	return out, sum
}

// prompt are llamacpp_logits's ids: (37*i + 5) mod 1024.
func prompt(n int) []int32 {
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32((37*i + 5) % 1024)
	}
	return ids
}

// refLogits are the reference forward pass's logits after each position.
func refLogits(w *model.Weights, ids []int32) [][]float32 {
	ref := model.NewReference(w, len(ids))
	out := make([][]float32, len(ids))
	for p, id := range ids {
		out[p] = append([]float32(nil), ref.Forward(id, p)...)
	}
	return out
}

// cpuLogits are the CPU backend's (kernels on) logits after the prompt.
func cpuLogits(t *testing.T, w *model.Weights, ids []int32) []float32 {
	t.Helper()
	m, err := cpu.Load(w, cpu.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.NewSession(len(ids))
	if err != nil {
		t.Fatal(err)
	}
	logits := make([]float32, w.Vocab)
	if err := s.Prefill(ids, logits); err != nil {
		t.Fatal(err)
	}
	return logits
}

// relErr is the largest, over positions, max |a-b| / max |b|: the measure
// backend/cpu's tests hold llama.cpp's logits to.
func relErr(a, b [][]float32) float64 {
	worst := 0.0
	for p := range b {
		var d, s float64
		for i := range b[p] {
			d = max(d, math.Abs(float64(a[p][i]-b[p][i])))
			s = max(s, math.Abs(float64(b[p][i])))
			if math.IsNaN(float64(a[p][i])) {
				return math.Inf(1)
			}
		}
		worst = max(worst, d/max(s, 1e-30))
	}
	return worst
}

// matrices lists a model's weight matrices by name.
func matrices(w *model.Weights) map[string]*model.Tensor {
	m := map[string]*model.Tensor{}
	for i := range w.Layers {
		l := &w.Layers[i]
		for _, t := range []*model.Tensor{&l.Wq, &l.Wk, &l.Wv, &l.Wo, &l.Wgate, &l.Wup, &l.Wdown} {
			m[t.Name] = t
		}
	}
	return m
}

// weightsOf decodes a matrix to float32 with its tensor scale applied.
func weightsOf(t *testing.T, m *model.Tensor) []float32 {
	t.Helper()
	out := make([]float32, m.Rows*m.Cols)
	if err := quant.Dequantize(m.Type, out, m.Data); err != nil {
		t.Fatal(err)
	}
	if m.Scale != 1 {
		for i := range out {
			out[i] *= m.Scale
		}
	}
	return out
}

// Gaussian weights (a model not trained ternary): every type loads and
// its logits stay within the type's bound of the F16 source's. Bounds are
// about twice what this test measured (-v prints them).
func TestQuantizeBounds(t *testing.T) {
	src := testmodel.Write(t, tiny("llama", 256, 512, quant.F16))
	ids := prompt(8)
	want := refLogits(testmodel.Weights(t, src), ids)
	for _, c := range []struct {
		typ   quant.Type
		bound float64
	}{
		{quant.F16, 0}, {quant.Q8_0, 0.01}, {quant.Q4_0, 0.08}, // measured 0, 0.0046, 0.039
		// Ternary types on weights not trained ternary lose much (measured
		// 0.41-0.42); the bound says only that the model is still there.
		{quant.TQ2_0, 0.8}, {quant.TQ1_0, 0.8}, {quant.Q2_0, 0.8}, {quant.I2_S, 0.8},
	} {
		out, sum := run(t, src, c.typ, nil)
		w := testmodel.Weights(t, out)
		e := relErr(refLogits(w, ids), want)
		t.Logf("%s: relative error %.3g, %d -> %d bytes", c.typ, e, sum.BytesIn, sum.BytesOut)
		if e > c.bound {
			t.Errorf("%s: logits' relative error %.3g > %g", c.typ, e, c.bound)
		}
		if c.typ == quant.F16 && (sum.Copied != sum.Tensors || sum.Converted != 0) {
			t.Errorf("F16 to F16: %d copied, %d converted of %d, want a copy", sum.Copied, sum.Converted, sum.Tensors)
		}
		f, err := gguf.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		ft, _ := f.Uint("general.file_type")
		if wantFT, _ := FileType(c.typ); ft != uint64(wantFT) {
			t.Errorf("%s: general.file_type %d, want %d", c.typ, ft, wantFT)
		}
		f.Close()
	}
}

// ternarySource writes a model trained ternary, as F16: a synthetic I2_S
// model (per-tensor absmean codes) rewritten as F16, so every matrix holds
// only -s, 0, +s with s an fp16 value. It returns the I2_S file too.
func ternarySource(t *testing.T, dim, ffn int) (i2s, f16 string) {
	i2s = testmodel.Write(t, tiny("bitnet", dim, ffn, quant.I2_S))
	f16, _ = run(t, i2s, quant.F16, nil)
	return i2s, f16
}

// A model trained ternary goes through every ternary type exactly: the
// same codes as the source's, the same scale, the same logits (to float
// rounding in another summation order).
func TestTernaryExact(t *testing.T) {
	i2s, src := ternarySource(t, 256, 512)
	codesOf := matrices(testmodel.Weights(t, i2s))
	srcW := testmodel.Weights(t, src)
	ids := prompt(6)
	want := refLogits(srcW, ids)
	srcM := matrices(srcW)
	for _, c := range []struct {
		typ quant.Type
		arm bool
	}{{quant.TQ2_0, false}, {quant.TQ1_0, false}, {quant.Q2_0, false}, {quant.I2_S, false}, {quant.I2_S, true}} {
		f16 := quant.F16
		out, _ := run(t, src, c.typ, func(o *Options) {
			o.TokenEmbdType = &f16 // the source's (the policy's Q6_K would round it)
			if c.arm {
				o.I2SLayout = model.I2SARM
			}
		})
		w := testmodel.Weights(t, out)
		for name, m := range matrices(w) {
			wantType := c.typ
			if c.arm {
				wantType = quant.I2_S_ARM
			}
			if m.Type != wantType {
				t.Fatalf("%s: %s read as %s, want %s", c.typ, name, m.Type, wantType)
			}
			got, src := weightsOf(t, m), weightsOf(t, srcM[name])
			for i := range got {
				if got[i] != src[i] {
					t.Fatalf("%s (arm %v) %s: weight %d = %g, source %g", c.typ, c.arm, name, i, got[i], src[i])
				}
			}
			// And the codes are the original I2_S file's.
			orig := codesOf[name]
			oc, gc := make([]int8, orig.Cols), make([]int8, m.Cols)
			for r := 0; r < m.Rows; r++ {
				rb, _ := m.Type.RowBytes(m.Cols)
				ob, _ := orig.Type.RowBytes(orig.Cols)
				if _, err := quant.TernaryCodes(orig.Type, orig.Data[r*ob:(r+1)*ob], oc); err != nil {
					t.Fatal(err)
				}
				if _, err := quant.TernaryCodes(m.Type, m.Data[r*rb:(r+1)*rb], gc); err != nil {
					t.Fatal(err)
				}
				if string(int8s(oc)) != string(int8s(gc)) {
					t.Fatalf("%s %s row %d: codes differ from the I2_S source's", c.typ, name, r)
				}
			}
		}
		if e := relErr(refLogits(w, ids), want); e > 1e-5 {
			t.Errorf("%s (arm %v): logits differ from the source's by %.3g", c.typ, c.arm, e)
		}
	}
}

func int8s(c []int8) []byte {
	b := make([]byte, len(c))
	for i, v := range c {
		b[i] = byte(v)
	}
	return b
}

// I2_S in either layout and TQ2_0 of the same ternary weights give the CPU
// backend the same codes and scales, so the same logits bit for bit.
func TestI2SLayoutsMatchTQ2(t *testing.T) {
	_, src := ternarySource(t, 256, 512)
	f16 := quant.F16
	embF16 := func(arm bool) func(*Options) {
		return func(o *Options) {
			o.TokenEmbdType = &f16 // the same embedding in all three
			if arm {
				o.I2SLayout = model.I2SARM
			}
		}
	}
	ids := prompt(6)
	tq2, _ := run(t, src, quant.TQ2_0, embF16(false))
	want := cpuLogits(t, testmodel.Weights(t, tq2), ids)
	for _, arm := range []bool{false, true} {
		out, sum := run(t, src, quant.I2_S, embF16(arm))
		wantLayout := model.I2SX86
		if arm {
			wantLayout = model.I2SARM
		}
		if sum.I2SLayout != wantLayout {
			t.Errorf("summary says layout %q, want %q", sum.I2SLayout, wantLayout)
		}
		got := cpuLogits(t, testmodel.Weights(t, out), ids)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("I2_S (arm %v): logit %d = %g, TQ2_0 file's %g", arm, i, got[i], want[i])
			}
		}
	}
}

// rewrite copies the GGUF file at path to a temporary file called name:
// each metadata pair through kv and each tensor through tensor (nil: copied
// as they are).
func rewrite(t *testing.T, path, name string, kv func(w *gguf.Writer, kv gguf.KV), tensor func(w *gguf.Writer, ti gguf.TensorInfo) error) string {
	t.Helper()
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := gguf.NewWriter()
	for _, p := range f.KVs {
		if kv == nil {
			w.Add(p.Key, p.Value)
		} else {
			kv(w, p)
		}
	}
	for _, ti := range f.Tensors {
		if tensor == nil {
			err = sameTensor(w, ti)
		} else {
			err = tensor(w, ti)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(t.TempDir(), name)
	if err := w.WriteFile(out); err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTensor(w *gguf.Writer, ti gguf.TensorInfo) error {
	return w.AddTensor(ti.Name, ti.Type, ti.Dims, ti.Data[:ti.Size])
}

// withoutKey copies a GGUF file without one metadata key, as bitnet.cpp's
// files come (they do not record their I2_S layout).
func withoutKey(t *testing.T, path, key string) string {
	return rewrite(t, path, "nokey-"+filepath.Base(path), func(w *gguf.Writer, kv gguf.KV) {
		if kv.Key != key {
			w.Add(kv.Key, kv.Value)
		}
	}, nil)
}

func loadWith(t *testing.T, path string, l model.I2SLayout) (*model.Weights, error) {
	t.Helper()
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return model.FromGGUFWith(f, model.LoadOptions{I2SLayout: l})
}

// The layout rule on files of both layouts: the key edgellm writes, the
// option, the variable, the row width; and what no check can catch.
func TestI2SLayoutRule(t *testing.T) {
	t.Setenv(model.EnvI2SLayout, "")
	_, src := ternarySource(t, 256, 512)
	ids := prompt(4)
	x86, _ := run(t, src, quant.I2_S, nil)
	arm, _ := run(t, src, quant.I2_S, func(o *Options) { o.I2SLayout = model.I2SARM })
	want := refLogits(testmodel.Weights(t, x86), ids)

	for _, c := range []struct {
		file string
		opt  model.I2SLayout
		env  string
		want quant.Type
		ok   bool // the logits are the model's
	}{
		{x86, "", "", quant.I2_S, true},     // the file's key
		{arm, "", "", quant.I2_S_ARM, true}, // the file's key
		{withoutKey(t, x86, model.KeyI2SLayout), "", "", quant.I2_S, true},
		// bitnet.cpp's ARM files at BitNet's shapes: the default reads
		// them wrong, and nothing in the bytes says so (the codes are
		// only permuted): the file loads, the logits are another model's.
		{withoutKey(t, arm, model.KeyI2SLayout), "", "", quant.I2_S, false},
		{withoutKey(t, arm, model.KeyI2SLayout), model.I2SARM, "", quant.I2_S_ARM, true},
		{withoutKey(t, arm, model.KeyI2SLayout), "", "arm", quant.I2_S_ARM, true},
		{arm, model.I2SX86, "", quant.I2_S, false}, // the option beats the key
	} {
		t.Setenv(model.EnvI2SLayout, c.env)
		w, err := loadWith(t, c.file, c.opt)
		if err != nil {
			t.Fatalf("%s (option %q, env %q): %v", filepath.Base(c.file), c.opt, c.env, err)
		}
		if got := w.Layers[0].Wq.Type; got != c.want {
			t.Errorf("%s (option %q, env %q): read as %s, want %s", filepath.Base(c.file), c.opt, c.env, got, c.want)
		}
		e := relErr(refLogits(w, ids), want)
		if c.ok != (e < 1e-6) {
			t.Errorf("%s (option %q, env %q): logits' error %.3g, want the model's: %v", filepath.Base(c.file), c.opt, c.env, e, c.ok)
		}
	}

	// Rows of 192 and 320 weights are whole 64-blocks, not 128-blocks:
	// only the ARM layout holds them, and the rule finds it without a key.
	_, src2 := ternarySource(t, 192, 320)
	arm2, _ := run(t, src2, quant.I2_S, func(o *Options) { o.I2SLayout = model.I2SARM })
	bare := withoutKey(t, arm2, model.KeyI2SLayout)
	t.Setenv(model.EnvI2SLayout, "")
	f, err := gguf.Open(bare)
	if err != nil {
		t.Fatal(err)
	}
	l, why, err := model.ChooseI2SLayout(f, model.I2SAuto)
	f.Close()
	if err != nil || l != model.I2SARM || !strings.Contains(why, "64-weight blocks") {
		t.Errorf("rows of 192: layout %q (%s, %v), want arm by row width", l, why, err)
	}
	w2, err := loadWith(t, bare, "")
	if err != nil {
		t.Fatal(err)
	}
	if e := relErr(refLogits(w2, ids), refLogits(testmodel.Weights(t, src2), ids)); e > 1e-5 {
		t.Errorf("rows of 192, detected ARM: logits differ from the source's by %.3g", e)
	}
	// x86 asked for explicitly cannot hold them: an error, not a guess.
	if _, err := loadWith(t, bare, model.I2SX86); err == nil || !strings.Contains(err.Error(), "128") {
		t.Errorf("rows of 192 read as x86: %v, want an error naming the block size", err)
	}
	// Quantizing to x86 I2_S falls back where rows are not whole 128s.
	_, sum := run(t, src2, quant.I2_S, nil)
	if len(sum.Notes) == 0 || !strings.Contains(fmt.Sprint(sum.Notes), "fallback") {
		t.Errorf("x86 I2_S at rows of 192: notes %v, want fallbacks", sum.Notes)
	}

	t.Setenv(model.EnvI2SLayout, "sparc")
	if _, err := loadWith(t, arm, ""); err == nil || !strings.Contains(err.Error(), model.EnvI2SLayout) {
		t.Errorf("EDGELLM_I2S_LAYOUT=sparc: %v, want an error naming the variable", err)
	}
}

// Bad input gets a clear error and leaves no file behind.
func TestQuantizeErrors(t *testing.T) {
	src := testmodel.Write(t, tiny("llama", 256, 512, quant.F16))
	dir := t.TempDir()
	out := filepath.Join(dir, "out.gguf")
	check := func(what, in string, opt Options, wantErr string) {
		t.Helper()
		_, err := File(context.Background(), in, out, opt)
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%s: error %v, want one containing %q", what, err, wantErr)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("%s: left %v behind", what, ents)
		}
	}
	check("unwritable target", src, Options{Type: quant.Q4_K}, "cannot write type Q4_K")
	check("missing input", filepath.Join(dir, "none.gguf"), Options{Type: quant.Q8_0}, "no such file")

	// An architecture EdgeLLM does not read.
	mamba := rewrite(t, src, "mamba.gguf", func(w *gguf.Writer, kv gguf.KV) {
		if kv.Key == "general.architecture" {
			kv.Value = gguf.NewString("mamba")
		}
		w.Add(kv.Key, kv.Value)
	}, nil)
	check("unknown architecture", mamba, Options{Type: quant.Q8_0}, `unsupported architecture "mamba"`)
	// A tensor in a type EdgeLLM cannot decode (Q5_1).
	q5 := rewrite(t, src, "q51.gguf", nil, func(w *gguf.Writer, ti gguf.TensorInfo) error {
		if ti.Name != "blk.0.attn_k.weight" {
			return sameTensor(w, ti)
		}
		n, _ := quant.TensorBytes(quant.Q5_1, ti.Dims[0], ti.Elements())
		return w.AddTensor(ti.Name, quant.Q5_1, ti.Dims, make([]byte, n))
	})
	check("undecodable tensor", q5, Options{Type: quant.Q8_0}, `"blk.0.attn_k.weight": unsupported tensor type Q5_1`)

	// A cancelled context stops the work.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := File(ctx, src, out, Options{Type: quant.Q8_0}); err == nil || !strings.Contains(err.Error(), "canceled") {
		t.Errorf("cancelled: %v", err)
	}
}

// Large inputs get progress lines, ending at 100%; the summary names the
// embedding's type and why.
func TestProgressAndSummary(t *testing.T) {
	defer func(m int64) { progressMin = m }(progressMin)
	progressMin = 1
	src := testmodel.Write(t, tiny("llama", 256, 512, quant.F16))
	var progress strings.Builder
	_, sum := run(t, src, quant.TQ2_0, func(o *Options) { o.Progress = &progress })
	lines := strings.Split(strings.TrimSpace(progress.String()), "\n")
	if len(lines) < 2 || !strings.Contains(lines[len(lines)-1], "100%") {
		t.Errorf("progress:\n%s", progress.String())
	}
	var out strings.Builder
	sum.Print(&out)
	for _, want := range []string{"F16 -> TQ2_0", "F32 -> F32", "Q6_K: tied embedding", "token_embd.weight", "bytes: "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}
