package main

import (
	"bufio"
	"bytes"
	"encoding/json"
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
	"github.com/edgellm/edgellm/synth"
	"github.com/edgellm/edgellm/tokenizer"
)

// binary builds the CLI once per test run.
func binary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "edgellm")
	build(t, bin)
	return bin
}

// build builds the CLI as README says (CGO_ENABLED=0) to bin, with more go
// build flags.
func build(t *testing.T, bin string, flags ...string) {
	t.Helper()
	args := append(append([]string{"build", "-o", bin}, flags...), ".")
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %v: %v\n%s", args, err, out)
	}
}

// edgellm runs the binary and returns stdout and stderr.
func edgellm(t *testing.T, bin, stdin string, args ...string) (string, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	// No GPU in tests: the CPU is what we check here.
	cmd.Env = append(os.Environ(), "XDG_CACHE_HOME="+t.TempDir())
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("edgellm %v: %v\nstderr: %s", args, err, errb.String())
	}
	return out.String(), errb.String()
}

// referenceIDs reads llama.cpp's greedy ids for a prompt from reference-greedy.md.
func referenceIDs(t *testing.T, prompt string) []int32 {
	f, err := os.Open(testfiles.Path(t, "models/stories260K/reference-greedy.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in := false
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "## prompt: ") {
			in = line == "## prompt: "+strconv.Quote(prompt)
		}
		if rest, ok := strings.CutPrefix(line, "generated_ids (100): "); ok && in {
			var ids []int32
			for _, s := range strings.Fields(rest) {
				n, _ := strconv.Atoi(s)
				ids = append(ids, int32(n))
			}
			return ids
		}
	}
	t.Fatalf("no reference for %q", prompt)
	return nil
}

func TestCLI(t *testing.T) {
	stories := testfiles.Path(t, "models/stories260K/stories260K-f32.gguf")
	bin := binary(t)

	t.Run("run prints only the continuation", func(t *testing.T) {
		f, err := gguf.Open(stories)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		tok, err := tokenizer.FromGGUF(f)
		if err != nil {
			t.Fatal(err)
		}
		ids := referenceIDs(t, "Once upon a time")[:64]
		var want strings.Builder
		for _, id := range ids {
			want.Write(tok.Piece(id))
		}
		want.WriteString("\n")
		out, errOut := edgellm(t, bin, "", "run", "-m", stories, "-p", "Once upon a time", "--temp", "0", "-n", "64", "--backend", "cpu")
		if out != want.String() {
			t.Fatalf("stdout:\n%q\nwant:\n%q", out, want.String())
		}
		if !strings.Contains(errOut, "tok/s") {
			t.Errorf("no figures on stderr: %q", errOut)
		}
	})

	t.Run("tokenize", func(t *testing.T) {
		out, _ := edgellm(t, bin, "Once upon a time", "tokenize", "-m", stories)
		if out != "1 403 407 261 378\n" {
			t.Fatalf("got %q", out)
		}
		out, _ = edgellm(t, bin, "Once upon a time", "tokenize", "--no-special", "-m", stories)
		if out != "403 407 261 378\n" {
			t.Fatalf("--no-special got %q", out)
		}
	})

	t.Run("show json", func(t *testing.T) {
		out, _ := edgellm(t, bin, "", "show", "--json", "-m", stories)
		var r map[string]any
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("not one JSON object: %v\n%s", err, out)
		}
		if r["architecture"] != "llama" || r["llama_cpp_can_read"] != true {
			t.Fatalf("got %v %v", r["architecture"], r["llama_cpp_can_read"])
		}
	})

	t.Run("bench json", func(t *testing.T) {
		out, _ := edgellm(t, bin, "", "bench", "--json", "-m", stories, "-p", "8", "-n", "16", "--repeat", "2", "--backend", "cpu", "--threads", "1")
		var r map[string]any
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("stdout is not one JSON object: %v\n%s", err, out)
		}
		for _, k := range []string{"model", "backend", "threads", "prompt_tokens", "gen_tokens", "load_ms", "prefill_tok_per_s",
			"decode_tok_per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms", "peak_rss_bytes", "weight_bytes_per_token", "weight_gb_per_s",
			"stream_gb_per_s", "bandwidth_fraction", "control_p99_p50", "p99_p50_detrended"} {
			if _, ok := r[k]; !ok {
				t.Errorf("JSON lacks %q", k)
			}
		}
		if r["backend"] != "cpu" || r["gen_tokens"] != 16.0 || r["threads"] != 1.0 {
			t.Errorf("backend %v gen %v threads %v", r["backend"], r["gen_tokens"], r["threads"])
		}
		if v, _ := r["decode_tok_per_s"].(float64); v <= 0 {
			t.Errorf("decode_tok_per_s %v", r["decode_tok_per_s"])
		}
		// stories260K's 1.2 MB fit any last-level cache: a buffer is streamed.
		if r["stream_buffer"] != true {
			t.Errorf("stream_buffer %v for a 1.2 MB model", r["stream_buffer"])
		}
	})

	t.Run("synth show run", func(t *testing.T) {
		if testing.Short() {
			t.Skip("writes a 60 MB model")
		}
		path := filepath.Join(t.TempDir(), "smol.gguf")
		edgellm(t, bin, "", "synth", "--preset", "smollm-135m", "-o", path)
		out, _ := edgellm(t, bin, "", "show", "-m", path)
		if !strings.Contains(out, "Q2_0 x210") || !strings.Contains(out, "llama.cpp:     true") {
			t.Fatalf("show:\n%s", out)
		}
		out, _ = edgellm(t, bin, "", "run", "-m", path, "-p", "1 2 3", "-n", "4", "--temp", "0", "--backend", "cpu")
		if len(strings.Fields(out)) != 4 {
			t.Fatalf("want 4 ids, got %q", out)
		}
	})

	t.Run("quantize show", func(t *testing.T) {
		in := testmodel.Write(t, synth.Preset{Name: "q", Arch: "bitnet", Dim: 128, FFN: 256, Layers: 1, Heads: 2,
			KVHeads: 1, Vocab: 256, Context: 64, RopeBase: 10000, SubNorms: true, Type: quant.F16, EmbedType: quant.F16})
		dir := t.TempDir()
		for _, c := range []struct {
			args     []string
			llamaCpp bool
			layout   string
		}{
			{[]string{"--type", "i2_s", "--i2s-layout", "arm"}, false, "arm (edgellm.i2_s.layout)"},
			{[]string{"--type", "i2_s"}, false, "x86 (edgellm.i2_s.layout)"},
			{[]string{"--type", "tq2_0"}, true, ""},
		} {
			out := filepath.Join(dir, strings.Join(c.args, "")+".gguf")
			_, errOut := edgellm(t, bin, "", append([]string{"quantize", in, out}, c.args...)...)
			if !strings.Contains(errOut, "tensors: ") || !strings.Contains(errOut, "bytes: ") {
				t.Errorf("quantize %v: no summary on stderr:\n%s", c.args, errOut)
			}
			js, _ := edgellm(t, bin, "", "show", "--json", "-m", out)
			var r struct {
				LlamaCpp bool   `json:"llama_cpp_can_read"`
				Note     string `json:"llama_cpp_note"`
				Layout   string `json:"i2s_layout"`
			}
			if err := json.Unmarshal([]byte(js), &r); err != nil {
				t.Fatal(err)
			}
			if r.LlamaCpp != c.llamaCpp || r.Layout != c.layout || (!c.llamaCpp && !strings.Contains(r.Note, "only bitnet.cpp")) {
				t.Errorf("quantize %v, show: llama.cpp %v (%s), layout %q; want %v, %q", c.args, r.LlamaCpp, r.Note, r.Layout, c.llamaCpp, c.layout)
			}
		}
		cmd := exec.Command(bin, "quantize", in, filepath.Join(dir, "x.gguf"), "--type", "q5_k")
		if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "unknown or unwritable type") {
			t.Errorf("--type q5_k: %v %s", err, b)
		}
	})

	t.Run("errors", func(t *testing.T) {
		cmd := exec.Command(bin, "run", "-m", stories, "-p", strings.Repeat("Once upon a time ", 100), "-n", "1")
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Run(); err == nil {
			t.Fatal("a prompt longer than the context was accepted")
		}
		if !strings.Contains(errb.String(), "context") {
			t.Errorf("unclear error: %s", errb.String())
		}
	})
}
