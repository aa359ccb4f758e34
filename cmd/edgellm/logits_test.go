package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/internal/testfiles"
	"github.com/edgellm/edgellm/internal/testmodel"
	"github.com/edgellm/edgellm/quant"
)

var quiet = slog.New(slog.DiscardHandler)

// parseLogits reads the command's output: one line a position, Vocab
// numbers a line, nothing else.
func parseLogits(t *testing.T, out string, positions, vocab int) []float32 {
	t.Helper()
	if !strings.HasSuffix(out, "\n") {
		t.Fatalf("output does not end with a newline")
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != positions {
		t.Fatalf("%d lines for %d ids", len(lines), positions)
	}
	logits := make([]float32, 0, positions*vocab)
	for p, line := range lines {
		fields := strings.Split(line, " ")
		if len(fields) != vocab {
			t.Fatalf("line %d has %d numbers, want %d", p, len(fields), vocab)
		}
		for _, f := range fields {
			x, err := strconv.ParseFloat(f, 32)
			if err != nil {
				t.Fatalf("line %d: %v", p, err)
			}
			logits = append(logits, float32(x))
		}
	}
	return logits
}

// The command's output parses, has a line per id and Vocab numbers a line,
// and is the reference forward pass's logits within a stated tolerance.
func TestLogitsCommand(t *testing.T) {
	var ids []int32
	var spelled []string
	for i := range 20 {
		ids = append(ids, int32((37*i+5)%testmodel.Vocab))
		spelled = append(spelled, strconv.Itoa(int(ids[i])))
	}
	// Space- and comma-separated alike.
	arg := strings.Join(spelled[:10], " ") + ", " + strings.Join(spelled[10:], ",")
	// Relative RMS, the largest over positions: F32 models differ from the
	// reference only in the order of sums (and the print's 7 digits), F16
	// models also by the CPU's F16 KV cache, as llama.cpp keeps it; 2e-3 is
	// the bound F16 files are held to against llama.cpp.
	for _, tc := range []struct {
		arch string
		typ  quant.Type
		tol  float64
	}{{"llama", quant.F32, 1e-5}, {"bitnet", quant.F16, 2e-3}} {
		t.Run(tc.arch, func(t *testing.T) {
			path := testmodel.Write(t, testmodel.Tiny(tc.arch, tc.typ))
			var out bytes.Buffer
			c := logitsCmd{Model: path, IDs: arg, Threads: 1, Backend: "cpu"}
			if err := c.write(&out, quiet); err != nil {
				t.Fatal(err)
			}
			w := testmodel.Weights(t, path)
			logits := parseLogits(t, out.String(), len(ids), w.Vocab)
			if rms := testmodel.RefRMS(t, w, ids, logits); rms > tc.tol {
				t.Fatalf("relative RMS %.3g from the reference, want <= %g", rms, tc.tol)
			}
		})
	}
}

// Bad ids are clear errors, and nothing reaches stdout.
func TestLogitsBadIDs(t *testing.T) {
	path := testmodel.Write(t, testmodel.Tiny("llama", quant.F32))
	for _, tc := range []struct{ ids, want string }{
		{"", "no token ids"},
		{" , ", "no token ids"},
		{"5 x 7", `"x"`},
		{"5 1.5", `"1.5"`},
		{"5 99999999999", "not a token id"},
		{"5 -1", "vocabulary"},
		{fmt.Sprint(testmodel.Vocab), "vocabulary"},
		{"1 2 3 4 5", "context"},
	} {
		var out bytes.Buffer
		c := logitsCmd{Model: path, IDs: tc.ids, Ctx: 4, Threads: 1, Backend: "cpu"}
		err := c.write(&out, quiet)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--ids %q: error %v, want one about %s", tc.ids, err, tc.want)
		}
		if out.Len() != 0 {
			t.Errorf("--ids %q: %d bytes on stdout", tc.ids, out.Len())
		}
	}
}

// appendG7 prints as C's printf("%.7g") (expected strings from glibc).
func TestAppendG7(t *testing.T) {
	for _, tc := range []struct {
		v    float32
		want string
	}{
		{0, "0"}, {float32(math.Copysign(0, -1)), "-0"}, {1, "1"}, {100, "100"}, {0.5, "0.5"},
		{1234567, "1234567"}, {12345678, "1.234568e+07"}, {9999999.5, "1e+07"}, {999999.94, "999999.9"},
		{0.0001, "0.0001"}, {0.00001, "1e-05"}, {9.99999999e-05, "0.0001"}, {-8.492917e-05, "-8.492917e-05"},
		{1.0 / 3, "0.3333333"}, {-1e-7, "-1e-07"}, {3.4e38, "3.4e+38"}, {1e-45, "1.401298e-45"},
		{float32(math.Inf(1)), "inf"}, {float32(math.Inf(-1)), "-inf"}, {float32(math.NaN()), "nan"},
	} {
		if got := string(appendG7(nil, tc.v)); got != tc.want {
			t.Errorf("%g: %q, want %q", tc.v, got, tc.want)
		}
	}
}

// On llama.cpp's own files: every number of its logits prints back the same,
// and the CPU backend's logits of the F16 files are within 2e-3 relative RMS
// of llama.cpp's over all positions and the whole vocabulary.
func TestLogitsLlamaCpp(t *testing.T) {
	const ids = "5 42 79 116 153 190 227 264 301 338 375 412 449 486 523 560 597 634 671 708 745 782 819 856"
	// Every architecture's F16 file: tiny-random's (../shared only),
	// tiny-random-archs' (qwen3 committed) and the repository's own.
	for _, name := range []string{"tiny-random/tiny-llama-f16", "tiny-random/tiny-bitnet-f16",
		"tiny-random-archs/tiny-qwen2-f16", "tiny-random-archs/tiny-qwen3-f16", "tiny-random-archs/tiny-gemma3-f16",
		"tiny-random-archs2/tiny-llama3-f16", "tiny-random-archs2/tiny-gemma3-softcap-f16", "tiny-random-archs2/tiny-qwen2-tied-f16"} {
		t.Run(name, func(t *testing.T) {
			path := testfiles.Path(t, "models/"+name+".gguf")
			b, err := os.ReadFile(testfiles.Path(t, "models/"+name+".logits.txt"))
			if err != nil {
				t.Fatal(err)
			}
			want := string(b)
			var out bytes.Buffer
			c := logitsCmd{Model: path, IDs: ids, Threads: 1, Backend: "cpu"}
			if err := c.write(&out, quiet); err != nil {
				t.Fatal(err)
			}
			vocab := testmodel.Weights(t, path).Vocab
			positions := len(strings.Fields(ids))
			got, ref := parseLogits(t, out.String(), positions, vocab), parseLogits(t, want, positions, vocab)
			for _, f := range strings.Fields(want) {
				x, _ := strconv.ParseFloat(f, 32)
				if back := string(appendG7(nil, float32(x))); back != f {
					t.Fatalf("llama.cpp's %s prints back as %s", f, back)
				}
			}
			var d2, r2 float64
			for i := range ref {
				d := float64(got[i]) - float64(ref[i])
				d2 += d * d
				r2 += float64(ref[i]) * float64(ref[i])
			}
			if rms := math.Sqrt(d2 / r2); rms > 2e-3 {
				t.Errorf("relative RMS %.3g from llama.cpp, want <= 2e-3", rms)
			}
		})
	}
}
