package model

import (
	"os"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/internal/testfiles"
)

// The tiny-random-archs files (qwen2, qwen3, gemma3; F16 and Q8_0) against
// llama.cpp's teacher-forced logits and greedy continuations
// (models/tiny-random-archs/README.md in testdata or ../shared).

// archTolerance bounds the relative RMS error over all 24x1024 logits:
// F16 files by the 2e-3 (llama.cpp rounds activations to F16 and
// tabulates GELU; our float32 reference does neither), Q8_0 files by the
// same bound as the tiny-random quantized files (llama.cpp rounds
// activations to Q8_0 blocks).
var archTolerance = map[string]float64{"f16": 2e-3, "q8_0": tinyTolerance["q8_0"]}

// archDir is the folder of a tiny-random-archs file: the shared set, or
// the repository's own (tiny-random-archs2: Llama 3 RoPE factors, Gemma 3
// soft-cap, tied Qwen2; testdata/models/tiny-random-archs2/README.md).
func archDir(name string) string {
	for _, n := range []string{"llama3", "softcap", "tied"} {
		if strings.Contains(name, n) {
			return "models/tiny-random-archs2/"
		}
	}
	return "models/tiny-random-archs/"
}

func loadArch(t *testing.T, name string) (*Weights, [][]float32) {
	t.Helper()
	w := loadGGUF(t, testfiles.Path(t, archDir(name)+name+".gguf"))
	want := readFloatLines(t, testfiles.Path(t, archDir(name)+name+".logits.txt"))
	if len(want) != 24 || len(want[0]) != w.Vocab {
		t.Fatalf("%s: reference has %d lines, want 24 of %d", name, len(want), w.Vocab)
	}
	return w, want
}

// archFiles are the tiny-random-archs files: name, architecture, suffix.
var archFiles = [][3]string{
	{"tiny-qwen2-f16", "qwen2", "f16"}, {"tiny-qwen2-q8_0", "qwen2", "q8_0"},
	{"tiny-qwen3-f16", "qwen3", "f16"}, {"tiny-qwen3-q8_0", "qwen3", "q8_0"},
	{"tiny-gemma3-f16", "gemma3", "f16"}, {"tiny-gemma3-q8_0", "gemma3", "q8_0"},
	{"tiny-llama3-f16", "llama", "f16"}, {"tiny-llama3-q8_0", "llama", "q8_0"},
	{"tiny-gemma3-softcap-f16", "gemma3", "f16"}, {"tiny-qwen2-tied-f16", "qwen2", "f16"},
}

func TestTinyRandomArchs(t *testing.T) {
	for _, f := range archFiles {
		name, arch, suffix := f[0], f[1], f[2]
		{
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				w, want := loadArch(t, name)
				if string(w.Arch) != arch {
					t.Fatalf("architecture %q, want %q", w.Arch, arch)
				}
				rel, maxAbs, rel0 := tinyError(w, want, false)
				t.Logf("%s: relative RMS error %.3g (max abs %.3g, position 0 %.3g)", name, rel, maxAbs, rel0)
				if tol := archTolerance[suffix]; rel > tol {
					t.Errorf("%s: relative RMS error %.3g > %g", name, rel, tol)
				}
				if name == "tiny-qwen3-q8_0" {
					// With llama.cpp's Q8_0 activation rounding mimicked the
					// first position is exact (measured 1.3e-7). Not so for
					// gemma3 (its post-norms magnify single rounding flips)
					// nor, unexplained, qwen2 (7e-3 at positions 0, 1 and
					// 3-5, 1.6e-7 at 2), which a single rounding flip does
					// not explain; left open.
					if _, _, r0 := tinyError(w, want, true); r0 > tinyExactTol {
						t.Errorf("%s: with activation rounding, position 0 error %.3g > %g", name, r0, tinyExactTol)
					}
				}
			})
		}
	}
}

// TestTinyRandomArchsGreedy continues the 24 ids greedily for 20 tokens and
// compares with llama.cpp's (every choice there beats the runner-up by at
// least 0.01, far more than our F16 files' logit error).
func TestTinyRandomArchsGreedy(t *testing.T) {
	for _, f := range archFiles {
		name := f[0]
		if f[2] != "f16" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			w, _ := loadArch(t, name)
			b, err := os.ReadFile(testfiles.Path(t, archDir(name)+name+".greedy.txt"))
			if err != nil {
				t.Fatal(err)
			}
			want := parseIDs(t, strings.TrimSpace(string(b)))
			got := greedy(w, 64, tinyIDs(), len(want))
			if !slicesEqual(got, want) {
				t.Errorf("greedy\n got %v\nwant %v", got, want)
			}
		})
	}
}

func inverse(v []float32) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = 1 / x
	}
	return out
}

// TestTinyRandomArchsDetectWrongGraph checks that the F16 bound catches
// each feature turned off or changed: the tests above would notice a
// backend or a description that forgot it.
func TestTinyRandomArchsDetectWrongGraph(t *testing.T) {
	variants := map[string]map[string]func(w *Weights){
		"tiny-qwen2-f16": {
			"no q/k/v biases": func(w *Weights) { w.QKVBias = false },
			"adjacent RoPE":   func(w *Weights) { w.RopeStyle = RopeNorm },
			"RoPE base 1e4":   func(w *Weights) { w.RopeBase = 10000 },
		},
		"tiny-qwen3-f16": {
			"no q/k norm": func(w *Weights) { w.QKNorm = false },
		},
		"tiny-llama3-f16": {
			"no RoPE factors":       func(w *Weights) { w.RopeFreqFactors = nil },
			"factors multiplied in": func(w *Weights) { w.RopeFreqFactors = inverse(w.RopeFreqFactors) },
		},
		"tiny-gemma3-softcap-f16": {
			"no soft-cap":     func(w *Weights) { w.LogitSoftcap = 0 },
			"window period 6": func(w *Weights) { w.Local = []bool{true, true, true, true} },
			"no window":       func(w *Weights) { w.Local = nil },
			"soft-cap 20":     func(w *Weights) { w.LogitSoftcap = 20 },
			"local base 1e6":  func(w *Weights) { w.LocalRopeBase = 1e6 },
		},
		"tiny-qwen2-tied-f16": {
			"no q/k/v biases": func(w *Weights) { w.QKVBias = false },
		},
		"tiny-gemma3-f16": {
			"no post-norms":        func(w *Weights) { w.PostNorms = false },
			"no q/k norm":          func(w *Weights) { w.QKNorm = false },
			"no embedding scale":   func(w *Weights) { w.EmbedScale = 0 },
			"SiLU":                 func(w *Weights) { w.Act = SiLU },
			"window 9":             func(w *Weights) { w.Window = 9 },
			"all layers global":    func(w *Weights) { w.Local = nil },
			"no linear RoPE scale": func(w *Weights) { w.RopeScale = 1 },
			"local base = global":  func(w *Weights) { w.LocalRopeBase = w.RopeBase },
			"all layers local":     func(w *Weights) { w.Local = []bool{true, true, true, true, true, true} },
			"attention scale 1/16": func(w *Weights) { w.AttnScale = 1.0 / 16 },
			"logits soft-capped 1": func(w *Weights) { w.LogitSoftcap = 1 },
		},
	}
	for name, changes := range variants {
		t.Run(name, func(t *testing.T) {
			w, want := loadArch(t, name)
			for what, change := range changes {
				bad := *w
				bad.Config.Local = append([]bool(nil), w.Local...)
				change(&bad)
				rel, _, _ := tinyError(&bad, want, false)
				t.Logf("%s with %s: relative RMS error %.3g", name, what, rel)
				if tol := archTolerance["f16"]; rel < 3*tol {
					t.Errorf("%s with %s: relative RMS error %.3g is within 3x the tolerance %g", name, what, rel, tol)
				}
			}
		})
	}
}
