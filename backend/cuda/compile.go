package cuda

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/edgellm/edgellm/internal/atomicfile"
)

// kernelFiles are the kernels' source files, in the order they are joined
// into one NVRTC program: each may use what the files before it define
// (common.cuh says what each holds).
var kernelFiles = []string{"common.cuh", "stage.cu", "products.cu", "attention.cu", "step.cu", "rows.cu", "mm.cu", "mattn.cu", "sample.cu"}

//go:embed common.cuh stage.cu products.cu attention.cu step.cu rows.cu mm.cu mattn.cu sample.cu
var kernelFS embed.FS

// kernelSource is the kernels' one program: kernelFiles joined, each after
// a #line directive, so NVRTC's messages name the file and line.
var kernelSource = joinKernels(kernelFS, kernelFiles)

// kernelProgram is the name NVRTC is given for kernelSource.
const kernelProgram = "kernels"

func joinKernels(fs embed.FS, files []string) string {
	var b strings.Builder
	for _, f := range files {
		src, err := fs.ReadFile(f)
		if err != nil {
			panic("cuda: embedded kernel source: " + err.Error()) // the embed list and kernelFiles disagree
		}
		fmt.Fprintf(&b, "#line 1 %q\n%s", f, src)
		if len(src) > 0 && src[len(src)-1] != '\n' {
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// Weight kinds on the device (the WK/HK/EK constants of common.cuh).
type kind int

const (
	kindTernary kind = 0
	kindF32     kind = 1
	kindF16     kind = 2
	kindQ8      kind = 3
)

func (k kind) String() string {
	switch k {
	case kindTernary:
		return "ternary"
	case kindF32:
		return "f32"
	case kindF16:
		return "f16"
	case kindQ8:
		return "q8_0"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// kernelDims are the compile-time constants of one model's kernels: its
// sizes and what its layers do (model.Config's description, compiled into
// the kernels' switches).
type kernelDims struct {
	Dim, FFN, Heads, KVHeads, HeadDim, Vocab int
	Eps                                      float32
	NeoX, ReLU2, GELU, SubNorms              bool
	QKVBias, QKNorm, PostNorms               bool    // q/k/v biases, per-head q/k norms (k_qkv_post); post-norms (k_postnorm)
	Window                                   int     // sliding window of the local layers (k_attn_w), 0: none
	AttnScale                                float32 // q·k's scale; 0: 1/sqrt(HeadDim), the kernels' own
	LogitCap                                 float32 // the logits' soft-cap, 0: none
	WK, HK, EK                               kind
	SMs                                      int    // multiprocessors (block sizes depend on it)
	KVHalf                                   bool   // the KV cache holds float16 (common.cuh KVH)
	Defines                                  string // the harness's NAME=VALUE definitions, comma-separated, replacing the host's of that name (knobs.Knobs)
}

// The products' launch limits: the largest block, and the most rows a work
// item of the output projection, FFN gate/up and FFN down takes.
const (
	productMaxBlock = 512
	productMaxRows  = 2
)

// product is the launch shape of one product kernel.
type product struct {
	bt    int // threads a block (BT_*)
	rows  int // rows a work item takes (R_*; k_gateup: gate/up row pairs)
	items int // work items
}

// products are the launch shapes of the separate kernels' products, passed
// to the kernels as BT_* and R_*. A work item of the output projection,
// FFN gate/up and FFN down takes 1 or 2 rows: as many as still leave every
// multiprocessor a block of 256 threads, so big matrices keep more weight
// loads in flight per thread and fewer blocks repeat the input's staging.
// (The QKV item is a rotation pair, the LM head's 4 rows, both fixed.)
// Blocks grow to productMaxBlock threads where there are blocks enough.
func (d kernelDims) products() (qkv, wo, gateUp, down, lmHead product) {
	sms := max(d.SMs, 1)
	shape := func(k kind, cols, n, maxRows int) product {
		tpr := threadsPerRow(k, cols)
		r := 1
		for r*2 <= maxRows && n%(r*2) == 0 && n/(r*2)/(256/tpr) >= sms {
			r *= 2
		}
		return product{bt: gemvBlock(n/r, tpr, sms, productMaxBlock), rows: r, items: n / r}
	}
	qd, kvd := d.Heads*d.HeadDim, d.KVHeads*d.HeadDim
	qkv = shape(d.WK, d.Dim, (qd+2*kvd)/2, 1)
	wo = shape(d.WK, qd, d.Dim, productMaxRows)
	gateUp = shape(d.WK, d.Dim, d.FFN, productMaxRows)
	down = shape(d.WK, d.FFN, d.Dim, productMaxRows)
	lmHead = shape(d.HK, d.Dim, lmHeadItems(d.Vocab), 1)
	return qkv, wo, gateUp, down, lmHead
}

// preLoad tells whether the decode step's layer products load their first
// item's row scales, RoPE rotation and residual before the kernel's wait
// (products.cu Pre, PRE_LOAD): where every row of the layer matrices is at
// most 32 16-byte chunks, so the products are short latency chains whose
// epilogue round trips weigh. Longer rows would pay registers for nothing
// (docs/gpu-notes.md v10). Prefill runs the products' batch entry points,
// which never hold them.
func (d kernelDims) preLoad() bool {
	if v, ok := d.define("PRE_LOAD"); ok {
		return v != "0"
	}
	return d.shortRow(d.Dim) && d.shortRow(d.Heads*d.HeadDim) && d.shortRow(d.FFN)
}

// shortRow tells whether a layer matrix row of cols weights is at most 32
// 16-byte chunks: SmolLM-sized, where a product is a short latency chain
// (preLoad, fusedAttention).
func (d kernelDims) shortRow(cols int) bool { return padK(cols)/chunkElems(d.WK) <= 32 }

// fusedAttention tells whether the decode step runs QKV and attention as
// one kernel (attention.cu k_qkv_attn, FUSE_ATT) and its launch shape:
// blocks a query head and threads a block. It does where the QKV rows are
// short (at most 32 16-byte chunks: SmolLM's ternary 576, stories260K), so
// that the two kernels' boundary and round trips, not bytes, are most of a
// layer's attention. Every block stages the input and computes its head's
// rows itself, which long rows (BitNet 2B's 2560) would make dear, so
// there the two kernels stay. Prefill always runs them (their batch entry
// points).
func (d kernelDims) fusedAttention() (on bool, splits, threads int) {
	on = d.shortRow(d.Dim) && !d.rawQKV() && d.Window == 0
	if v, ok := d.define("FUSE_ATT"); ok {
		on = v != "0"
	}
	return on, d.defineInt("FA_S", fusedSplits, 2, 64), d.defineInt("FA_BT", fusedThreads, 64, 1024)
}

// rawQKV tells whether k_qkv leaves its products to k_qkv_post (biases or
// q/k norms: common.cuh QKV_RAW); k_qkv_attn, which finishes them itself,
// then does not apply.
func (d kernelDims) rawQKV() bool { return d.QKVBias || d.QKNorm }

// fusedBlocks is k_qkv_attn's blocks a query head (attention.cu FA_B): the
// splits that attend, then the KV head's k and v blocks.
func fusedBlocks(splits int) int { return splits + 2 }

// fusedPartials is the floats of k_qkv_attn's partials a query head
// (attention.cu FA_SLOTS * FA_PART): each attending block's and this
// position's, a head's output, maximum and sum each.
func fusedPartials(splits, headDim int) int { return (splits + 1) * (headDim + 2) }

// The fused attention's default launch shape (attention.cu FA_S, FA_BT).
const (
	fusedSplits  = 4
	fusedThreads = 512
)

// defineInt is Defines' integer value of name, def when it has none or one
// outside [lo, hi] (NVRTC then gets def too: options writes what this says).
func (d kernelDims) defineInt(name string, def, lo, hi int) int {
	if v, ok := d.define(name); ok {
		if n, err := strconv.Atoi(v); err == nil && n >= lo && n <= hi {
			return n
		}
	}
	return def
}

// kvHalfFor tells whether layers of kind k may keep a float16 KV cache
// (Options.KVHalf): the lossy kinds may (their activations are rounded to
// int8 anyway), f32 and f16 layers keep float32, which holds their logits
// within 1e-6 of the reference.
func kvHalfFor(k kind) bool { return k == kindTernary || k == kindQ8 }

// kvElemBytes is the bytes of one cached key or value element (KVH, as
// Defines may set it).
func (d kernelDims) kvElemBytes() int {
	half := d.KVHalf
	if v, ok := d.define("KVH"); ok {
		half = v != "0"
	}
	if half {
		return 2
	}
	return 4
}

// definitions are Defines' NAME=VALUE entries, trimmed, empty ones left out.
func (d kernelDims) definitions() []string {
	var defs []string
	for _, def := range strings.Split(d.Defines, ",") {
		if def = strings.TrimSpace(def); def != "" {
			defs = append(defs, def)
		}
	}
	return defs
}

// define returns the value Defines gives name, if it does.
func (d kernelDims) define(name string) (string, bool) {
	for _, def := range d.definitions() {
		if n, v, _ := strings.Cut(def, "="); n == name {
			return v, true
		}
	}
	return "", false
}

// lmHeadItems is the LM head's work items (products.cu R_HEAD: 4 rows an item).
func lmHeadItems(vocab int) int { return (vocab + 3) / 4 }

// floatDefine writes v as a C float literal: the shortest form that
// round-trips a float32, with the f suffix that keeps it single precision.
func floatDefine(v float32) string { return strconv.FormatFloat(float64(v), 'e', -1, 32) + "f" }

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// options returns NVRTC's command line for an architecture such as "sm_90".
func (d kernelDims) options(arch string) []string {
	qkv, wo, gateUp, down, lmHead := d.products()
	itoa := strconv.Itoa
	opts := []string{
		"--gpu-architecture=" + arch,
		"--std=c++17",
		"-default-device",
		"-DDIM=" + strconv.Itoa(d.Dim),
		"-DFFN=" + strconv.Itoa(d.FFN),
		"-DNH=" + strconv.Itoa(d.Heads),
		"-DNKV=" + strconv.Itoa(d.KVHeads),
		"-DHD=" + strconv.Itoa(d.HeadDim),
		"-DVOCAB=" + strconv.Itoa(d.Vocab),
		"-DEPS=" + floatDefine(d.Eps),
		"-DROPE_NEOX=" + strconv.Itoa(b2i(d.NeoX)),
		"-DACT_RELU2=" + strconv.Itoa(b2i(d.ReLU2)),
		"-DACT_GELU=" + itoa(b2i(d.GELU)),
		"-DSUBNORM=" + strconv.Itoa(b2i(d.SubNorms)),
		"-DQKV_BIAS=" + itoa(b2i(d.QKVBias)),
		"-DQK_NORM=" + itoa(b2i(d.QKNorm)),
		"-DPOST_NORM=" + itoa(b2i(d.PostNorms)),
		"-DWIN=" + itoa(d.Window),
		"-DLOGIT_CAP=" + floatDefine(d.LogitCap),
		"-DWK=" + strconv.Itoa(int(d.WK)),
		"-DHK=" + strconv.Itoa(int(d.HK)),
		"-DEK=" + strconv.Itoa(int(d.EK)),
		"-DBT_QKV=" + itoa(qkv.bt), "-DBT_WO=" + itoa(wo.bt), "-DBT_GATEUP=" + itoa(gateUp.bt),
		"-DBT_DOWN=" + itoa(down.bt), "-DBT_LMHEAD=" + itoa(lmHead.bt),
		"-DR_WO=" + itoa(wo.rows), "-DR_GU=" + itoa(gateUp.rows), "-DR_DOWN=" + itoa(down.rows),
		"-DKVH=" + itoa(b2i(d.KVHalf)),
		"-DPRE_LOAD=" + itoa(b2i(d.preLoad())),
	}
	if d.AttnScale != 0 {
		opts = append(opts, "-DATT_SCALE="+floatDefine(d.AttnScale))
	}
	fused, splits, threads := d.fusedAttention()
	opts = append(opts, "-DFUSE_ATT="+itoa(b2i(fused)), "-DFA_S="+itoa(splits), "-DFA_BT="+itoa(threads))
next:
	for _, def := range d.definitions() {
		name, _, _ := strings.Cut(def, "=")
		if name == "FA_S" || name == "FA_BT" {
			continue // as fusedAttention read them, out-of-range values replaced
		}
		for i, o := range opts {
			if strings.HasPrefix(o, "-D"+name+"=") {
				opts[i] = "-D" + def
				continue next
			}
		}
		opts = append(opts, "-D"+def)
	}
	return opts
}

// kernelNames are the entry points every module must have.
var kernelNames = slices.Concat([]string{"k_embed", "k_qkv", "k_qkv_post", "k_attn", "k_attn_w", "k_qkv_attn", "k_wo", "k_postnorm",
	"k_gateup", "k_down", "k_lmhead", "k_sample"}, batchNames(), rowsKernels, mmKernels, rowAttnKernels)

// batchKernels are the products with a prefill entry point of their own.
var batchKernels = []string{"k_qkv", "k_wo", "k_gateup", "k_down"}

// batchNames are batchKernels' prefill entry points.
func batchNames() []string {
	names := make([]string, len(batchKernels))
	for i, k := range batchKernels {
		names[i] = k + batchSuffix
	}
	return names
}

// batchSuffix names a product's prefill entry point (step.cu
// PRODUCT_KERNELS): the decode step's k_X holds its epilogue's values in
// registers (Pre), which a prefill's many waves of blocks want back.
const batchSuffix = "_b"

// cacheKey identifies a CUBIN: source, options (dimensions and arch), and
// the NVRTC and driver versions that made and will load it.
func cacheKey(src string, opts []string, nvrtcVer, driverVer int) string {
	h := sha256.New()
	fmt.Fprintf(h, "edgellm-cuda-v1\x00%s\x00", src)
	for _, o := range opts {
		fmt.Fprintf(h, "%s\x00", o)
	}
	fmt.Fprintf(h, "nvrtc=%d driver=%d", nvrtcVer, driverVer)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// cacheDir is where compiled kernels are kept ("" disables the cache).
func cacheDir() string {
	if d := os.Getenv("EDGELLM_CUDA_CACHE"); d != "" {
		if d == "off" {
			return ""
		}
		return d
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(base, "edgellm", "cuda")
}

// compileCached returns the CUBIN for dims on arch, from the disk cache when
// present, else compiled by NVRTC and stored. A cache that cannot be
// written is not an error: the kernels are simply compiled next time too.
func compileCached(n *nvrtcAPI, dims kernelDims, arch string, driverVer int) (cubin []byte, cached bool, err error) {
	opts := dims.options(arch)
	dir := cacheDir()
	var path string
	if dir != "" {
		path = filepath.Join(dir, cacheKey(kernelSource, opts, n.version(), driverVer)+".cubin")
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return b, true, nil
		}
	}
	cubin, err = n.compile(kernelSource, kernelProgram, opts)
	if err != nil {
		return nil, false, err
	}
	if path != "" && os.MkdirAll(dir, 0o755) == nil {
		_ = atomicfile.WriteFile(path, cubin) // readers (other processes) never see half a file
	}
	return cubin, false, nil
}
