package gguf

import (
	"bytes"
	"os"
	"path"
	"testing"

	"github.com/edgellm/edgellm/internal/testfiles"
	"github.com/edgellm/edgellm/quant"
)

// storiesPath is stories260K's GGUF file.
func storiesPath(t testing.TB) string {
	t.Helper()
	return testfiles.Path(t, "models/stories260K/stories260K-f32.gguf")
}

// realFiles are the GGUF files of testdata/ and ../shared, relative paths
// for testfiles.Path.
func realFiles(t testing.TB) []string {
	t.Helper()
	return append(testfiles.Glob(t, "models/*/*.gguf"), testfiles.Glob(t, "vocab/*.gguf")...)
}

// TestRealFiles opens every real GGUF file, checks its tensor views, and
// checks that the writer reproduces it byte for byte (llama.cpp writes the
// same layout: tensors in order, each padded to the alignment).
func TestRealFiles(t *testing.T) {
	for _, rel := range realFiles(t) {
		t.Run(path.Base(rel), func(t *testing.T) {
			file := testfiles.Path(t, rel)
			f, err := Open(file)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Version != 3 {
				t.Errorf("version %d, want 3", f.Version)
			}
			if !f.Has("general.architecture") {
				t.Errorf("no general.architecture")
			}
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(f.Bytes(), raw) {
				t.Fatalf("mapping differs from the file")
			}
			for _, ti := range f.Tensors {
				if uint64(len(ti.Data)) != ti.Size {
					t.Errorf("tensor %q: %d bytes of data, want %d", ti.Name, len(ti.Data), ti.Size)
				}
			}
			var buf bytes.Buffer
			if _, err := rewrite(f).WriteTo(&buf); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf.Bytes(), raw) {
				t.Errorf("rewritten file differs: %d bytes, original %d", buf.Len(), len(raw))
			}
		})
	}
}

// rewrite copies a parsed file into a writer.
func rewrite(f *File) *Writer {
	w := NewWriter()
	for _, kv := range f.KVs {
		w.Add(kv.Key, kv.Value)
	}
	for _, ti := range f.Tensors {
		if err := w.AddTensor(ti.Name, ti.Type, ti.Dims, ti.Data); err != nil {
			panic(err) // a parsed tensor always has a valid shape and size
		}
	}
	return w
}

func TestStories260K(t *testing.T) {
	f, err := Open(storiesPath(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n, err := f.Uint("llama.embedding_length"); err != nil || n != 64 {
		t.Errorf("llama.embedding_length = %d, %v; want 64", n, err)
	}
	if arch, err := f.String("general.architecture"); err != nil || arch != "llama" {
		t.Errorf("general.architecture = %q, %v; want llama", arch, err)
	}
	toks, err := f.Strings("tokenizer.ggml.tokens")
	if err != nil || len(toks) != 512 {
		t.Fatalf("tokenizer.ggml.tokens: %d tokens, %v; want 512", len(toks), err)
	}
	if toks[1] != "<s>" || toks[2] != "</s>" {
		t.Errorf("tokens 1, 2 = %q, %q; want <s>, </s>", toks[1], toks[2])
	}
	scores, err := f.Float32s("tokenizer.ggml.scores")
	if err != nil || len(scores) != 512 {
		t.Errorf("tokenizer.ggml.scores: %d, %v; want 512", len(scores), err)
	}
	types, err := f.Int32s("tokenizer.ggml.token_type")
	if err != nil || len(types) != 512 {
		t.Errorf("tokenizer.ggml.token_type: %d, %v; want 512", len(types), err)
	}
	if bos, err := f.Uint("tokenizer.ggml.bos_token_id"); err != nil || bos != 1 {
		t.Errorf("bos = %d, %v; want 1", bos, err)
	}
	if eps, err := f.Float("llama.attention.layer_norm_rms_epsilon"); err != nil || eps < 0.9e-5 || eps > 1.1e-5 {
		t.Errorf("rms eps = %g, %v; want 1e-5", eps, err)
	}
	emb, ok := f.Tensor("token_embd.weight")
	if !ok {
		t.Fatal("no token_embd.weight")
	}
	if emb.Type != quant.F32 || len(emb.Dims) != 2 || emb.Dims[0] != 64 || emb.Dims[1] != 512 {
		t.Errorf("token_embd.weight: %s %v; want F32 [64 512]", emb.Type, emb.Dims)
	}
	if _, err := f.String("llama.embedding_length"); err == nil {
		t.Error("String of an integer key gave no error")
	}
	if _, err := f.Uint("no.such.key"); err == nil {
		t.Error("missing key gave no error")
	}
}

func TestTinyRandomTypes(t *testing.T) {
	// Matrix type and token_embd type per file, from the README there.
	cases := []struct {
		suffix      string
		matrix, emb quant.Type
	}{
		{"f16", quant.F16, quant.F16},
		{"q8_0", quant.Q8_0, quant.Q8_0},
		{"q4_0", quant.Q4_0, quant.Q6_K},
		{"q2_0", quant.Q2_0, quant.Q6_K},
		{"tq2_0", quant.TQ2_0, quant.Q6_K},
		{"tq1_0", quant.TQ1_0, quant.Q6_K},
	}
	for _, arch := range []string{"llama", "bitnet"} {
		for _, c := range cases {
			name := "tiny-" + arch + "-" + c.suffix + ".gguf"
			t.Run(name, func(t *testing.T) {
				f, err := Open(testfiles.Path(t, "models/tiny-random/"+name))
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if a, err := f.String("general.architecture"); err != nil || a != arch {
					t.Errorf("architecture %q, %v; want %q", a, err, arch)
				}
				if n, err := f.Uint(arch + ".embedding_length"); err != nil || n != 256 {
					t.Errorf("embedding_length %d, %v; want 256", n, err)
				}
				emb, ok := f.Tensor("token_embd.weight")
				if !ok || emb.Type != c.emb || emb.Dims[0] != 256 || emb.Dims[1] != 1024 {
					t.Errorf("token_embd.weight: %+v; want %s [256 1024]", emb, c.emb)
				}
				q, ok := f.Tensor("blk.0.attn_q.weight")
				if !ok || q.Type != c.matrix || q.Dims[0] != 256 || q.Dims[1] != 256 {
					t.Errorf("blk.0.attn_q.weight: %v; want %s [256 256]", q, c.matrix)
				}
				norm, ok := f.Tensor("blk.1.attn_norm.weight")
				if !ok || norm.Type != quant.F32 || len(norm.Dims) != 1 || norm.Dims[0] != 256 {
					t.Errorf("blk.1.attn_norm.weight: %v; want F32 [256]", norm)
				}
			})
		}
	}
}
