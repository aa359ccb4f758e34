package cuda

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/synth"
)

// presetDims is the kernelDims of synth's preset name (its one definition of
// the shape) with layers of kind wk, head and embedding of kind hk, on a
// 132-multiprocessor card; the architecture's flags are the caller's.
func presetDims(name string, wk, hk kind) kernelDims {
	p := synth.Presets[name]
	return kernelDims{Dim: p.Dim, FFN: p.FFN, Heads: p.Heads, KVHeads: p.KVHeads, HeadDim: p.Dim / p.Heads, Vocab: p.Vocab,
		Eps: 1e-5, WK: wk, HK: hk, EK: hk, SubNorms: p.SubNorms, SMs: 132}
}

// ptxCases are the shapes whose kernels' PTX TestPTXDump writes, with the
// options a default Load gives them: the two presets (ternary layers,
// q8_0 head), the float16 KV cache of Options.KVHalf, and the dense kinds.
// Only kernelDims fields that every version of this package has are set,
// so the file also builds in an older tree (docs/gpu-notes.md, "Checking
// that a change leaves the kernels alone").
func ptxCases() map[string]kernelDims {
	smollm := presetDims("smollm-135m", kindTernary, kindQ8)
	bitnet := presetDims("bitnet-2b", kindTernary, kindQ8) // as BitNet b1.58 2B4T: ReLU², NeoX RoPE
	bitnet.NeoX, bitnet.ReLU2 = true, true
	bitnetHalf := bitnet
	bitnetHalf.KVHalf = true
	smollmDense := smollm
	smollmDense.WK = kindQ8
	stories := kernelDims{Dim: 64, FFN: 172, Heads: 8, KVHeads: 4, HeadDim: 8, Vocab: 512, Eps: 1e-5,
		WK: kindF32, HK: kindF32, EK: kindF32, SMs: 132}
	f16 := presetDims("smollm-135m", kindF16, kindF16)
	f16.NeoX = true
	q8 := kernelDims{Dim: 256, FFN: 512, Heads: 4, KVHeads: 2, HeadDim: 64, Vocab: 1024, Eps: 1e-5,
		WK: kindQ8, HK: kindQ8, EK: kindF16, SubNorms: true, SMs: 132}
	q8Half := q8
	q8Half.KVHalf = true
	cases := map[string]kernelDims{
		"smollm-135m": smollm, "smollm-135m-dense": smollmDense, "bitnet-2b": bitnet, "bitnet-2b-kvhalf": bitnetHalf,
		"stories260k-f32": stories, "smollm-f16": f16, "q8_0": q8, "q8_0-kvhalf": q8Half,
	}
	for name, d := range featureDims() {
		cases[name] = d
	}
	return cases
}

// ptxEntryRE finds the start of each kernel in a PTX module.
var ptxEntryRE = regexp.MustCompile(`(?m)^\.visible \.entry ([A-Za-z0-9_]+)\(`)

// ptxNames are the names NVVM numbers by the function's place in the
// module, with what they are made: every `extern __shared__ sm[]` is the
// same base address (sm, sm$1, ... in the order the module declares them),
// and branch labels and the local stack carry the function's index.
var ptxNames = []struct {
	re   *regexp.Regexp
	repl string
}{
	{regexp.MustCompile(`\bsm\$[0-9]+\b`), "sm"},
	{regexp.MustCompile(`\$L__BB[0-9]+_`), "$$L__BB_"},
	{regexp.MustCompile(`__local_depot[0-9]+`), "__local_depot"},
}

// splitPTX returns each kernel's PTX (from its .entry to the next) by
// name, with ptxNames' numbers dropped and without comments and line
// information, and the module's declarations before the first kernel
// under "_module".
func splitPTX(ptx string) map[string]string {
	norm := func(s string) string {
		var b strings.Builder
		for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
			t := strings.TrimSpace(line)
			if strings.HasPrefix(t, "//") || strings.HasPrefix(t, ".loc") || strings.HasPrefix(t, ".file") {
				continue
			}
			for _, n := range ptxNames {
				line = n.re.ReplaceAllString(line, n.repl)
			}
			b.WriteString(strings.TrimRight(line, " \t"))
			b.WriteByte('\n')
		}
		return b.String()
	}
	out := map[string]string{}
	idx := ptxEntryRE.FindAllStringSubmatchIndex(ptx, -1)
	if len(idx) == 0 {
		return out
	}
	out["_module"] = norm(ptx[:idx[0][0]])
	for i, m := range idx {
		end := len(ptx)
		if i+1 < len(idx) {
			end = idx[i+1][0]
		}
		out[ptx[m[2]:m[3]]] = norm(ptx[m[0]:end])
	}
	return out
}

// cubinKernels returns each kernel's machine code in a CUBIN (its .text
// section) and the bytes of its static shared memory. Symbol indices and
// the like in the other sections shift with the module's other kernels.
func cubinKernels(cubin []byte) (code map[string][]byte, shared map[string]uint64, err error) {
	b := bytes.Clone(cubin)
	if len(b) < 24 {
		return nil, nil, fmt.Errorf("CUBIN of %d bytes", len(b))
	}
	b[6] = 1 // CUBINs carry NVIDIA's own ELF version numbers, which debug/elf refuses
	b[20], b[21], b[22], b[23] = 1, 0, 0, 0
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return nil, nil, err
	}
	code, shared = map[string][]byte{}, map[string]uint64{}
	for _, sec := range f.Sections {
		if k, ok := strings.CutPrefix(sec.Name, ".text."); ok {
			if code[k], err = sec.Data(); err != nil {
				return nil, nil, err
			}
		}
		if k, ok := strings.CutPrefix(sec.Name, ".nv.shared."); ok {
			shared[k] = sec.Size
		}
	}
	return code, shared, nil
}

// TestPTXDump writes the PTX of every kernel of ptxCases, for sm_80 and
// sm_90, into $EDGELLM_PTX_DUMP/<case>/<arch>/<kernel>.ptx, and the machine
// code NVRTC's ptxas makes of it (<kernel>.sass, with its static shared
// bytes in <kernel>.shared); skipped when that is unset. Run in two trees,
// `diff -r` of the two directories shows which kernels' code a change of
// the source or of the host's options changed (docs/gpu-notes.md says how).
func TestPTXDump(t *testing.T) {
	dir := os.Getenv("EDGELLM_PTX_DUMP")
	if dir == "" {
		t.Skip("EDGELLM_PTX_DUMP not set")
	}
	n := testNVRTC(t, true)
	cases := ptxCases()
	names := make([]string, 0, len(cases))
	for name := range cases {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		for _, arch := range []string{"sm_80", "sm_90"} {
			ptx, err := n.ptx(kernelSource, kernelProgram, cases[name].options(arch))
			if err != nil {
				t.Fatalf("%s %s: %v", name, arch, err)
			}
			out := filepath.Join(dir, name, arch)
			if err := os.MkdirAll(out, 0o755); err != nil {
				t.Fatal(err)
			}
			kernels := splitPTX(ptx)
			for _, k := range kernelNames {
				if _, ok := kernels[k]; !ok {
					t.Errorf("%s %s: no kernel %s in the PTX", name, arch, k)
				}
			}
			for k, text := range kernels {
				if err := os.WriteFile(filepath.Join(out, k+".ptx"), []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			cubin, err := n.compile(kernelSource, kernelProgram, cases[name].options(arch))
			if err != nil {
				t.Fatalf("%s %s: %v", name, arch, err)
			}
			code, shared, err := cubinKernels(cubin)
			if err != nil {
				t.Fatalf("%s %s: CUBIN: %v", name, arch, err)
			}
			for _, k := range kernelNames {
				if len(code[k]) == 0 {
					t.Errorf("%s %s: no code for kernel %s in the CUBIN", name, arch, k)
				}
			}
			for k, c := range code {
				if err := os.WriteFile(filepath.Join(out, k+".sass"), c, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(out, k+".shared"), fmt.Appendf(nil, "%d\n", shared[k]), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// TestSplitPTX: splitPTX cuts a module at its entries and drops only what
// names a function's place in the module.
func TestSplitPTX(t *testing.T) {
	ptx := ".version 7.8\n.extern .shared .align 16 .b8 sm$1[];\n\n\t// .globl\tk_a\n.visible .entry k_a(\n)\n{\n\tmov.u64 %rd1, sm$1;\n" +
		"\t@%p1 bra \t$L__BB3_2;\n$L__BB3_2:\n\tmov.u64 %SPL, __local_depot3;\n\t.loc 1 2 3\n\tret;\n}\n\t// .globl\tk_b\n" +
		".visible .entry k_b(\n)\n{\n\tret;\n}\n"
	got := splitPTX(ptx)
	want := map[string]string{
		"_module": ".version 7.8\n.extern .shared .align 16 .b8 sm[];\n\n",
		"k_a": ".visible .entry k_a(\n)\n{\n\tmov.u64 %rd1, sm;\n\t@%p1 bra \t$L__BB_2;\n$L__BB_2:\n\tmov.u64 %SPL, __local_depot;\n" +
			"\tret;\n}\n",
		"k_b": ".visible .entry k_b(\n)\n{\n\tret;\n}\n",
	}
	if len(got) != len(want) {
		t.Fatalf("parts %v", got)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s:\n%q\nwant\n%q", k, got[k], w)
		}
	}
}
