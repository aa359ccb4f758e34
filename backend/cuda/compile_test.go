package cuda

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// testDims are shapes that exercise every code path of the kernels: odd
// widths (padding), tiny heads, GQA, both RoPE styles and activations.
func testDims() []kernelDims {
	// BitNet 2B shape: ternary layers, q8_0 head, ReLU², sub-norms, 128-wide heads.
	bitnet := presetDims("bitnet-2b", kindTernary, kindQ8)
	bitnet.ReLU2, bitnet.KVHalf = true, true
	// f16 layers, NeoX RoPE, SmolLM shape.
	f16 := presetDims("smollm-135m", kindF16, kindF16)
	f16.NeoX, f16.SMs = true, 0
	// The smollm-135m preset's shape: ternary layers (QKV and attention
	// fused, epilogue values before the wait), q8_0 head.
	smollm := presetDims("smollm-135m", kindTernary, kindQ8)
	smollm.ReLU2, smollm.SubNorms = true, true
	return []kernelDims{
		bitnet,
		// stories260K: f32 everywhere, 8-wide heads, FFN 172 (padding).
		{Dim: 64, FFN: 172, Heads: 8, KVHeads: 4, HeadDim: 8, Vocab: 512, Eps: 1e-5, WK: kindF32, HK: kindF32, EK: kindF32},
		f16,
		// q8_0 layers (the fallback), untied f16 embedding.
		{Dim: 256, FFN: 512, Heads: 4, KVHeads: 2, HeadDim: 64, Vocab: 1024, Eps: 1e-5, WK: kindQ8, HK: kindQ8, EK: kindF16, SubNorms: true, KVHalf: true},
		smollm,
		featureDims()["qwen2-q8_0"], featureDims()["qwen3-f16"], featureDims()["gemma3-q8_0"],
	}
}

// featureDims are shapes with the newer architectures' features: Qwen2's
// q/k/v biases, Qwen3's per-head q/k norms with q wider than the model,
// and every Gemma 3 feature (GELU, q/k norms, post-norms, a sliding window,
// its attention scale and a logit soft-cap) on 32-wide heads.
func featureDims() map[string]kernelDims {
	base := kernelDims{Dim: 256, FFN: 512, Heads: 4, KVHeads: 2, HeadDim: 64, Vocab: 1024, Eps: 1e-6, NeoX: true,
		WK: kindQ8, HK: kindQ8, EK: kindQ8, SMs: 132}
	qwen2 := base
	qwen2.QKVBias = true
	qwen3 := base
	qwen3.Dim, qwen3.HeadDim, qwen3.QKNorm, qwen3.WK, qwen3.HK, qwen3.EK = 128, 64, true, kindF16, kindF16, kindF16
	gemma := base
	gemma.KVHeads, gemma.HeadDim, gemma.GELU, gemma.QKNorm, gemma.PostNorms = 1, 32, true, true, true
	gemma.Window, gemma.AttnScale, gemma.LogitCap = 8, 0.125, 30
	return map[string]kernelDims{"qwen2-q8_0": qwen2, "qwen3-f16": qwen3, "gemma3-q8_0": gemma}
}

// testNVRTC returns libnvrtc, or skips the test where there is none (CI
// installs it); with heavy, also under -short.
func testNVRTC(t *testing.T, heavy bool) *nvrtcAPI {
	t.Helper()
	n, err := loadNVRTC()
	if err != nil {
		t.Skipf("libnvrtc not available, kernels not compiled: %v", err)
	}
	if heavy && testing.Short() {
		t.Skip("compiles the kernels")
	}
	return n
}

// TestCompile compiles the kernels with NVRTC for sm_80 and sm_90 in
// every kind combination. It needs only libnvrtc (no GPU): CI installs
// Debian's libnvrtc11.2.
func TestCompile(t *testing.T) {
	n := testNVRTC(t, false)
	t.Logf("NVRTC %d from %s", n.version(), n.path)
	dims := testDims()
	if testing.Short() {
		dims = dims[:2]
	}
	for _, arch := range []string{"sm_80", "sm_90"} {
		for _, d := range dims {
			cubin, err := n.compile(kernelSource, kernelProgram, d.options(arch))
			if err != nil {
				t.Fatalf("%s %+v: %v", arch, d, err)
			}
			if len(cubin) < 4 || string(cubin[1:4]) != "ELF" {
				t.Fatalf("%s %+v: result is not an ELF CUBIN", arch, d)
			}
			for _, k := range kernelNames {
				if !strings.Contains(string(cubin), k) {
					t.Fatalf("%s %+v: CUBIN lacks kernel %s", arch, d, k)
				}
			}
		}
	}
}

// TestCompileKnobs compiles the smollm-135m preset's kernels with the
// harness's switches that change code paths (common.cuh: exact math,
// every kernel starting its successor early; attention.cu: the phase
// trace), so the variants docs/gpu-notes.md compares against still build.
func TestCompileKnobs(t *testing.T) {
	n := testNVRTC(t, true)
	d := testDims()[4]
	d.Defines = "FASTM=0,FAST_EXP=0,PDL_EARLY=127,FA_TRACE=1"
	if _, err := n.compile(kernelSource, kernelProgram, d.options("sm_90")); err != nil {
		t.Fatal(err)
	}
}

// TestSourceFiles: every .cu and .cuh file of the package is one of
// kernelFiles (so none is left out of the program), and the program
// names each file before its text.
func TestSourceFiles(t *testing.T) {
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	var onDisk []string
	for _, e := range entries {
		if ext := filepath.Ext(e.Name()); ext == ".cu" || ext == ".cuh" {
			onDisk = append(onDisk, e.Name())
		}
	}
	listed := slices.Sorted(slices.Values(kernelFiles))
	if !slices.Equal(onDisk, listed) {
		t.Fatalf("kernel files on disk %v, in kernelFiles %v", onDisk, listed)
	}
	at := 0
	for _, f := range kernelFiles {
		i := strings.Index(kernelSource[at:], "#line 1 \""+f+"\"\n")
		if i < 0 {
			t.Fatalf("kernelSource lacks %s after offset %d", f, at)
		}
		at += i + 1
	}
}

// NVRTC 12.4 and 13.0 misparse an unbraced if constexpr body in some
// places that NVRTC 11.8 (CI's) accepts: a discarded body that starts with
// #pragma unroll, and a for loop under one inside a lambda, end the
// enclosing block early (mm.cu failed so on the H100's NVRTC 13.0). Every
// if constexpr body is braced, so CI catches the pattern without those
// compilers.
func TestIfConstexprBraced(t *testing.T) {
	for i, line := range strings.Split(kernelSource, "\n") {
		code, _, _ := strings.Cut(line, "//")
		code = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(code), "\\"))
		if strings.Contains(code, "if constexpr") && !strings.HasSuffix(code, "{") {
			t.Errorf("kernel source line %d: if constexpr without a braced body: %s", i+1, strings.TrimSpace(line))
		}
	}
}

func TestOptionsEps(t *testing.T) {
	d := kernelDims{Eps: 1e-5}
	for _, o := range d.options("sm_90") {
		if strings.HasPrefix(o, "-DEPS=") && o != "-DEPS=1e-05f" {
			t.Fatalf("eps option %q", o)
		}
	}
}

// TestCompileCache checks that a second compile of the same kernels comes
// from the disk cache, byte for byte.
func TestCompileCache(t *testing.T) {
	n := testNVRTC(t, true)
	t.Setenv("EDGELLM_CUDA_CACHE", t.TempDir())
	d := testDims()[1]
	a, cached, err := compileCached(n, d, "sm_80", 13000)
	if err != nil || cached {
		t.Fatalf("first compile: cached=%v err=%v", cached, err)
	}
	b, cached, err := compileCached(n, d, "sm_80", 13000)
	if err != nil || !cached || string(a) != string(b) {
		t.Fatalf("second compile: cached=%v err=%v same=%v", cached, err, string(a) == string(b))
	}
}

// TestProducts pins the launch shapes chosen for the two presets' shapes
// on a 132-multiprocessor card: big matrices take two rows an item, small
// ones one, and only products with blocks enough grow past 256 threads.
func TestProducts(t *testing.T) {
	bitnet := testDims()[0]
	smollm := presetDims("smollm-135m", kindTernary, kindQ8)
	for _, tc := range []struct {
		name string
		d    kernelDims
		want [5]product
	}{
		{"bitnet-2b", bitnet, [5]product{{256, 1, 1920}, {256, 2, 1280}, {512, 2, 3456}, {256, 2, 1280}, {512, 1, 32064}}},
		{"smollm-135m", smollm, [5]product{{256, 1, 480}, {256, 1, 576}, {256, 1, 1536}, {256, 1, 576}, {512, 1, 12288}}},
	} {
		var got [5]product
		got[0], got[1], got[2], got[3], got[4] = tc.d.products()
		if got != tc.want {
			t.Errorf("%s: products() = %+v, want %+v", tc.name, got, tc.want)
		}
		for _, p := range got {
			if p.items*p.rows == 0 || p.bt%32 != 0 {
				t.Errorf("%s: bad shape %+v", tc.name, p)
			}
		}
	}
}

// TestOptionsDefines checks that the harness's definitions replace the
// host's of the same name (one -D each) and add the others.
func TestOptionsDefines(t *testing.T) {
	d := kernelDims{Eps: 1e-5, Defines: "PRE_LOAD=1, PDL_EARLY=127,"}
	count := map[string]int{}
	for _, o := range d.options("sm_90") {
		name, _, _ := strings.Cut(o, "=")
		count[name]++
		switch name {
		case "-DPRE_LOAD":
			if o != "-DPRE_LOAD=1" {
				t.Errorf("%q: the harness's value should win", o)
			}
		case "-DPDL_EARLY":
			if o != "-DPDL_EARLY=127" {
				t.Errorf("%q, want -DPDL_EARLY=127", o)
			}
		}
	}
	if count["-DPRE_LOAD"] != 1 || count["-DPDL_EARLY"] != 1 || count["-D"] != 0 {
		t.Errorf("definitions %v: want PRE_LOAD and PDL_EARLY once each and no empty one", count)
	}
}

// TestKVHalf: lossy layer kinds keep a float16 KV cache, exact ones
// float32, and a KVH definition (kernel harness) overrides the cache's
// size as it does the kernels'.
func TestKVHalf(t *testing.T) {
	for k, want := range map[kind]bool{kindTernary: true, kindQ8: true, kindF16: false, kindF32: false} {
		if got := kvHalfFor(k); got != want {
			t.Errorf("kvHalfFor(%v) = %v, want %v", k, got, want)
		}
	}
	for _, c := range []struct {
		d    kernelDims
		want int
	}{
		{kernelDims{KVHalf: true}, 2},
		{kernelDims{}, 4},
		{kernelDims{KVHalf: true, Defines: "PDL_EARLY=1, KVH=0"}, 4},
		{kernelDims{Defines: "KVH=1"}, 2},
	} {
		if got := c.d.kvElemBytes(); got != c.want {
			t.Errorf("%+v: kvElemBytes %d, want %d", c.d, got, c.want)
		}
		opts := strings.Join(c.d.options("sm_90"), " ")
		wantDef := "-DKVH=0"
		if c.want == 2 {
			wantDef = "-DKVH=1"
		}
		if !strings.Contains(opts, wantDef) {
			t.Errorf("%+v: options %q lack %s", c.d, opts, wantDef)
		}
	}
}

// TestPreLoad: the short-row shapes (SmolLM) load their epilogue's values
// before the wait, the long-row ones (BitNet 2B) do not, and a PRE_LOAD
// definition overrides both ways.
func TestPreLoad(t *testing.T) {
	dims := testDims()
	smol := presetDims("smollm-135m", kindTernary, kindQ8)
	if !smol.preLoad() || dims[0].preLoad() {
		t.Fatalf("preLoad: smollm %v, bitnet %v; want true, false", smol.preLoad(), dims[0].preLoad())
	}
	smol.Defines = "PRE_LOAD=0"
	bit := dims[0]
	bit.Defines = "PRE_LOAD=1"
	if smol.preLoad() || !bit.preLoad() {
		t.Fatalf("PRE_LOAD definitions not honoured")
	}
	if !strings.Contains(strings.Join(bit.options("sm_90"), " "), "-DPRE_LOAD=1") {
		t.Fatalf("options lack -DPRE_LOAD=1")
	}
}

// TestFusedAttention: the decode step fuses QKV and attention on short-row
// layers (SmolLM, stories260K) and not on BitNet 2B's; FUSE_ATT overrides
// both ways, and the launch shape the host uses is the one NVRTC is given,
// out-of-range definitions included.
func TestFusedAttention(t *testing.T) {
	dims := testDims()
	smol, bit := dims[4], dims[0]
	if on, _, _ := smol.fusedAttention(); !on {
		t.Fatal("smollm-135m shape: attention not fused")
	}
	if on, _, _ := dims[1].fusedAttention(); !on {
		t.Fatal("stories260K shape: attention not fused")
	}
	if on, _, _ := bit.fusedAttention(); on {
		t.Fatal("bitnet-2b shape: attention fused")
	}
	smol.Defines, bit.Defines = "FUSE_ATT=0", "FUSE_ATT=1"
	if on, _, _ := smol.fusedAttention(); on {
		t.Fatal("FUSE_ATT=0 not honoured")
	}
	if on, _, _ := bit.fusedAttention(); !on {
		t.Fatal("FUSE_ATT=1 not honoured")
	}
	for _, c := range []struct {
		defines         string
		splits, threads int
	}{
		{"", fusedSplits, fusedThreads},
		{"FA_S=8,FA_BT=256", 8, 256},
		{"FA_S=1,FA_BT=4096", fusedSplits, fusedThreads},
		{"FA_S=x", fusedSplits, fusedThreads},
	} {
		d := dims[4]
		d.Defines = c.defines
		_, splits, threads := d.fusedAttention()
		if splits != c.splits || threads != c.threads {
			t.Fatalf("%q: shape %d, %d; want %d, %d", c.defines, splits, threads, c.splits, c.threads)
		}
		opts := strings.Join(d.options("sm_90"), " ")
		for _, want := range []string{"-DFUSE_ATT=1", "-DFA_S=" + strconv.Itoa(splits), "-DFA_BT=" + strconv.Itoa(threads)} {
			if !strings.Contains(opts+" ", want+" ") {
				t.Fatalf("%q: options lack %s: %s", c.defines, want, opts)
			}
		}
		if strings.Count(opts, "-DFA_S=") != 1 || strings.Count(opts, "-DFA_BT=") != 1 {
			t.Fatalf("%q: the launch shape defined twice: %s", c.defines, opts)
		}
	}
}
