// Package synth writes deterministic synthetic models at the shapes the
// benchmarks use (SmolLM-135M, BitNet b1.58 2B4T) as GGUF files that both
// EdgeLLM and llama.cpp load. Speed does not depend on the weights' values,
// so fixed-seed weights at a real shape are an honest benchmark input.
// It knows nothing of backends.
package synth

import (
	"bytes"
	"cmp"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/quant"
)

// Preset is a model shape.
type Preset struct {
	Name      string
	Arch      string // general.architecture
	Dim       int
	FFN       int
	Layers    int
	Heads     int
	KVHeads   int
	Vocab     int
	Context   int
	RopeBase  float32
	SubNorms  bool       // BitNet's attention and FFN sub-norms
	Type      quant.Type // default matrix type: the fastest ternary type llama.cpp reads at this shape
	EmbedType quant.Type // default embedding (tied LM head) type
}

// Presets are the reference shapes of docs/architecture.md.
var Presets = map[string]Preset{
	"smollm-135m": {Name: "smollm-135m", Arch: "llama", Dim: 576, FFN: 1536, Layers: 30, Heads: 9, KVHeads: 3,
		Vocab: 49152, Context: 2048, RopeBase: 10000, Type: quant.Q2_0, EmbedType: quant.Q8_0},
	"bitnet-2b": {Name: "bitnet-2b", Arch: "bitnet", Dim: 2560, FFN: 6912, Layers: 30, Heads: 20, KVHeads: 5,
		Vocab: 128256, Context: 4096, RopeBase: 500000, SubNorms: true, Type: quant.TQ2_0, EmbedType: quant.Q8_0},
}

// PresetNames lists the presets in a stable order.
func PresetNames() []string {
	names := make([]string, 0, len(Presets))
	for n := range Presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ParseType reads a type name such as "tq2_0" or "Q8_0".
func ParseType(s string) (quant.Type, error) {
	for _, t := range writable {
		if strings.EqualFold(t.String(), s) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("synth: unknown or unwritable type %q (want one of %v)", s, writable)
}

// writable are the types synth can write.
var writable = []quant.Type{quant.F32, quant.F16, quant.BF16, quant.Q8_0, quant.Q4_0, quant.Q6_K,
	quant.Q2_0, quant.TQ1_0, quant.TQ2_0, quant.I2_S}

// Options choose the types and the seed.
type Options struct {
	Type      quant.Type // 0 means the preset's default
	EmbedType quant.Type // 0 means the preset's default
	Seed      uint64
}

// Fallback records a matrix written in another type than asked, because the
// asked type cannot hold its rows (as llama-quantize falls back).
type Fallback struct {
	Tensor   string
	Asked    quant.Type
	Written  quant.Type
	RowWidth int
}

// Report says what was written.
type Report struct {
	Bytes     int64
	Fallbacks []Fallback
}

// fallbackType is what llama-quantize writes when t cannot hold rows of n.
func fallbackType(t quant.Type, n int) quant.Type {
	if _, err := t.RowBytes(n); err == nil {
		return t
	}
	switch t {
	case quant.TQ1_0, quant.TQ2_0, quant.I2_S, quant.Q6_K, quant.Q4_K:
		if _, err := quant.Q2_0.RowBytes(n); err == nil && quant.IsTernary(t) {
			// Keep ternary weights ternary where a 64-wide ternary block fits.
			return quant.Q2_0
		}
		return quant.Q4_0
	}
	return quant.F16
}

// Write writes the preset as GGUF to w.
func Write(w io.Writer, p Preset, o Options) (Report, error) {
	var rep Report
	if o.Type == 0 {
		o.Type = p.Type
	}
	if o.EmbedType == 0 {
		o.EmbedType = p.EmbedType
	}
	if p.Dim%p.Heads != 0 || p.Heads%p.KVHeads != 0 {
		return rep, fmt.Errorf("synth: preset %s: heads do not divide the shape", p.Name)
	}
	headDim := p.Dim / p.Heads
	g := gguf.NewWriter()
	arch := p.Arch
	g.AddString("general.architecture", arch)
	g.AddString("general.name", "edgellm-synth-"+p.Name)
	g.AddUint32("general.quantization_version", 2)
	g.AddUint32(arch+".context_length", uint32(p.Context))
	g.AddUint32(arch+".embedding_length", uint32(p.Dim))
	g.AddUint32(arch+".feed_forward_length", uint32(p.FFN))
	g.AddUint32(arch+".block_count", uint32(p.Layers))
	g.AddUint32(arch+".attention.head_count", uint32(p.Heads))
	g.AddUint32(arch+".attention.head_count_kv", uint32(p.KVHeads))
	g.AddFloat32(arch+".attention.layer_norm_rms_epsilon", 1e-5)
	g.AddFloat32(arch+".rope.freq_base", p.RopeBase)
	g.AddUint32(arch+".rope.dimension_count", uint32(headDim))
	g.AddUint32(arch+".vocab_size", uint32(p.Vocab))
	g.AddString("tokenizer.ggml.model", "none")

	// Tensors are generated in parallel (each has its own seeded generator,
	// so the bytes do not depend on the order) and added in file order.
	var jobs []tensorJob
	add := func(name string, t quant.Type, rows, cols int, gen func(row []float32, r *rand.Rand)) error {
		wt := fallbackType(t, cols)
		if wt != t {
			rep.Fallbacks = append(rep.Fallbacks, Fallback{Tensor: name, Asked: t, Written: wt, RowWidth: cols})
		}
		jobs = append(jobs, tensorJob{name: name, t: wt, rows: rows, cols: cols, gen: gen})
		return nil
	}
	ones := func(row []float32, _ *rand.Rand) {
		for i := range row {
			row[i] = 1
		}
	}
	gauss := func(std float64) func([]float32, *rand.Rand) {
		return func(row []float32, r *rand.Rand) {
			for i := range row {
				row[i] = float32(r.NormFloat64() * std)
			}
		}
	}
	// Ternary matrices: codes -1/0/+1 with equal odds, one scale per tensor
	// chosen so a unit-RMS input gives a unit-RMS output.
	matrix := func(cols int) func([]float32, *rand.Rand) {
		scale := float32(math.Sqrt(1.5 / float64(cols)))
		if !quant.IsTernary(o.Type) {
			return gauss(float64(scale) * math.Sqrt(2.0/3))
		}
		// An fp16-exact scale, so every ternary type stores it exactly.
		scale = quant.F16ToF32(quant.F32ToF16(scale))
		return func(row []float32, r *rand.Rand) {
			for i := range row {
				row[i] = float32(int(r.Uint32()%3)-1) * scale
			}
		}
	}

	if err := add("token_embd.weight", o.EmbedType, p.Vocab, p.Dim, gauss(0.02*50)); err != nil {
		return rep, err
	}
	if err := add("output_norm.weight", quant.F32, 1, p.Dim, ones); err != nil {
		return rep, err
	}
	kv := p.KVHeads * headDim
	for l := 0; l < p.Layers; l++ {
		b := fmt.Sprintf("blk.%d.", l)
		steps := []step{
			{"attn_norm.weight", quant.F32, 1, p.Dim, ones},
			{"attn_q.weight", o.Type, p.Heads * headDim, p.Dim, matrix(p.Dim)},
			{"attn_k.weight", o.Type, kv, p.Dim, matrix(p.Dim)},
			{"attn_v.weight", o.Type, kv, p.Dim, matrix(p.Dim)},
			{"attn_output.weight", o.Type, p.Dim, p.Heads * headDim, matrix(p.Heads * headDim)},
			{"ffn_norm.weight", quant.F32, 1, p.Dim, ones},
			{"ffn_gate.weight", o.Type, p.FFN, p.Dim, matrix(p.Dim)},
			{"ffn_up.weight", o.Type, p.FFN, p.Dim, matrix(p.Dim)},
			{"ffn_down.weight", o.Type, p.Dim, p.FFN, matrix(p.FFN)},
		}
		if p.SubNorms {
			steps = append(steps,
				step{"attn_sub_norm.weight", quant.F32, 1, p.Dim, ones},
				step{"ffn_sub_norm.weight", quant.F32, 1, p.FFN, ones})
		}
		for _, s := range steps {
			if err := add(b+s.name, s.t, s.rows, s.cols, s.gen); err != nil {
				return rep, err
			}
		}
	}
	if err := generate(jobs, o.Seed); err != nil {
		return rep, err
	}
	for _, j := range jobs {
		dims := []uint64{uint64(j.cols)}
		if j.rows > 1 {
			dims = append(dims, uint64(j.rows))
		}
		if err := g.AddTensor(j.name, j.t, dims, j.data); err != nil {
			return rep, fmt.Errorf("synth: %w", err)
		}
	}
	if len(rep.Fallbacks) > 0 {
		notes := make([]string, 0, len(rep.Fallbacks))
		for _, f := range rep.Fallbacks {
			notes = append(notes, fmt.Sprintf("%s: %s cannot hold rows of %d, wrote %s", f.Tensor, f.Asked, f.RowWidth, f.Written))
		}
		g.AddStrings("edgellm.synth.fallbacks", notes)
	}
	n, err := g.WriteTo(w)
	rep.Bytes = n
	if err != nil {
		return rep, fmt.Errorf("synth: writing %s: %w", p.Name, err)
	}
	return rep, nil
}

// Weights builds the preset in memory: the model Write's file holds, as
// model.FromGGUF reads it, for harnesses that want the model, not a file.
func Weights(p Preset, o Options) (*model.Weights, error) {
	var buf bytes.Buffer
	if _, err := Write(&buf, p, o); err != nil {
		return nil, err
	}
	f, err := gguf.Parse(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("synth: reading %s back: %w", p.Name, err)
	}
	w, err := model.FromGGUF(f)
	if err != nil {
		return nil, fmt.Errorf("synth: reading %s back: %w", p.Name, err)
	}
	return w, nil
}

// step is one tensor of a layer: its name, type, shape and generator.
type step struct {
	name       string
	t          quant.Type
	rows, cols int
	gen        func([]float32, *rand.Rand)
}

// tensorJob is one tensor to generate and, once generated, its bytes.
type tensorJob struct {
	name       string
	t          quant.Type
	rows, cols int
	gen        func([]float32, *rand.Rand)
	data       []byte
}

// generate fills every job's data, one goroutine per CPU.
func generate(jobs []tensorJob, seed uint64) error {
	var (
		wg    sync.WaitGroup
		next  atomic.Int64
		mu    sync.Mutex
		first error
	)
	for range min(runtime.GOMAXPROCS(0), len(jobs)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(jobs) {
					return
				}
				j := &jobs[i]
				data, err := tensorData(j.name, j.t, j.rows, j.cols, seed, j.gen)
				if err != nil {
					mu.Lock()
					first = cmp.Or(first, err)
					mu.Unlock()
					return
				}
				j.data = data
			}
		})
	}
	wg.Wait()
	return first
}

// tensorData generates rows×cols values row by row from a generator seeded
// by the tensor's name, and encodes them as t.
func tensorData(name string, t quant.Type, rows, cols int, seed uint64, gen func([]float32, *rand.Rand)) ([]byte, error) {
	h := fnv.New64a()
	h.Write([]byte(name))
	r := rand.New(rand.NewPCG(seed, h.Sum64()))
	rowBytes, err := t.RowBytes(cols)
	if err != nil {
		return nil, fmt.Errorf("synth: tensor %q: %w", name, err)
	}
	size := rows * rowBytes
	if t == quant.I2_S {
		size += quant.I2SScaleBytes
	}
	data := make([]byte, size)
	row := make([]float32, cols)
	if t == quant.I2_S {
		// One scale per tensor: generate it all, then quantize at once.
		all := make([]float32, rows*cols)
		for i := 0; i < rows; i++ {
			gen(all[i*cols:(i+1)*cols], r)
		}
		if err := quant.Quantize(t, data, all); err != nil {
			return nil, fmt.Errorf("synth: tensor %q: %w", name, err)
		}
		return data, nil
	}
	for i := 0; i < rows; i++ {
		gen(row, r)
		if err := quant.Quantize(t, data[i*rowBytes:(i+1)*rowBytes], row); err != nil {
			return nil, fmt.Errorf("synth: tensor %q: %w", name, err)
		}
	}
	return data, nil
}
