// Package cpu is EdgeLLM's CPU backend: it runs the whole forward pass of
// every architecture package model describes, reading the description
// (model.Config's features) in one forward step (forward.go) that serves
// prefill, decode and batched decode alike, on a persistent pool of worker
// goroutines, with a KV cache per session (float16 when the products run on
// the int8 kernels, float32 otherwise), batched prefill (matrix-matrix
// products, causal attention inside the batch, sliding windows where the
// layer has one), a decode step that allocates nothing, and a batched
// decode step for several sessions at once (Model.DecodeBatch, batch.go),
// bit for bit what each would get alone.
//
// Products go through a small internal matmul interface chosen per weight
// at load: the types package backend/cpu/kernels covers (ternary, Q8_0,
// Q5_0, Q4_0, Q6_K, F16) are repacked for its kernels, which read int8
// activations quantized once per operation; everything else (F32, odd
// widths, Options.NoKernels) runs plain-Go products on the float
// activations, exactly as the reference does. This package knows nothing
// of CUDA, tokenizers, sampling or HTTP.
package cpu

import (
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/backend/cpu/kernels"
	"github.com/edgellm/edgellm/model"
)

// Options tunes the backend.
type Options struct {
	// Threads is the number of workers (the calling goroutine included);
	// 0 means runtime.GOMAXPROCS(0): the cores this process may use (a
	// container's CPU limit included), which NumCPU ignores.
	Threads int
	// NoKernels keeps every product on the plain-Go path, which multiplies
	// the float activations by the weights exactly as the reference does.
	// By default the types package kernels covers (the ternary types,
	// Q8_0, Q5_0, Q4_0, Q6_K, F16; widths a multiple of 64) are repacked for its
	// kernels, which quantize the activations to int8 per token.
	NoKernels bool
}

// maxThreads bounds the pool so a typo cannot start a million goroutines.
const maxThreads = 1024

// Model is a network loaded for the CPU. Sessions share its worker pool;
// their forward passes take turns (one runs at a time).
type Model struct {
	cfg     model.Config
	threads int
	pool    *pool
	mu      sync.Mutex // serialises forward passes on the pool
	closed  bool
	arena   *kernels.Arena // the repacked products' memory, given back by Close

	embed  matmul
	output matmul
	out    []float32 // [Dim] final norm weight
	layers []layer
	// ropeSets are the RoPE frequencies of each set (model.RopeSets):
	// layer l rotates with ropeSets[cfg.RopeSet(l)].
	ropeSets [][]float32
	maxCol   int // widest matrix input: the per-worker scratch size
	// kvHalf keeps sessions' KV caches in float16 (as llama.cpp does by
	// default): set when the layers' products run on the int8 kernels, whose
	// activation rounding is far coarser; half the bytes attention reads
	// per token, so decode slows less as the context grows. Models on the
	// plain path keep float32, exact as the reference.
	kvHalf bool
	// repacked: some product runs on the kernels (Kernels).
	repacked bool
	// batch holds DecodeBatch's buffers (batch.go), grown on demand and
	// guarded by mu.
	batch *batchState
}

type layer struct {
	attnNorm, attnSubNorm, attnPostNorm []float32
	ffnNorm, ffnSubNorm, ffnPostNorm    []float32
	bq, bk, bv, qNorm, kNorm            []float32
	wq, wk, wv, wo, wgate, wup, wdown   matmul
}

// features are the model.Features the CPU backend implements: all of them.
var features = model.AllFeatures

var (
	_ backend.Model        = (*Model)(nil)
	_ backend.WeightMemory = (*Model)(nil)
	_ backend.WeightBytes  = (*Model)(nil)
)

// Load checks every tensor's shape and type against the config, builds the
// matmuls and starts the worker pool.
func Load(w *model.Weights, opts Options) (backend.Model, error) {
	return load(w, opts)
}

func load(w *model.Weights, opts Options) (_ *Model, err error) {
	if w == nil {
		return nil, errors.New("cpu: nil weights")
	}
	cfg := w.Config
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cpu: %w", err)
	}
	if err := model.CheckFeatures(&cfg, "cpu", features...); err != nil {
		return nil, err
	}
	threads := opts.Threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	if threads > maxThreads {
		return nil, fmt.Errorf("cpu: %d threads is more than the limit %d", threads, maxThreads)
	}
	m := &Model{cfg: cfg, threads: threads, ropeSets: model.RopeSets(&cfg)}
	qDim := cfg.QDim()
	kvDim := cfg.KVDim()
	m.maxCol = max(cfg.Dim, cfg.FFNDim, qDim)

	kern := !opts.NoKernels
	if len(w.Layers) != cfg.Layers {
		return nil, fmt.Errorf("cpu: %d layers of weights, config says %d", len(w.Layers), cfg.Layers)
	}
	m.layers = make([]layer, cfg.Layers)
	prods := m.products(w)
	// The repacked matrices lie one after another in the order a token
	// reads them (the LM head, then each layer's in turn, then the head
	// again for the next token): a token's products stream one run of
	// memory (kernels.Arena), sized to hold them exactly.
	var arena *kernels.Arena
	if kern {
		size := 0
		for _, p := range prods {
			size += kernelFootprint(p.t)
		}
		arena = kernels.NewArena(size)
		m.arena = arena
		defer func() {
			if err != nil {
				arena.Release()
			}
		}()
	}
	// A repacked tensor's file pages are released, so the model is not
	// resident twice (the plain path reads the file's bytes in place).
	for _, p := range prods {
		mm, err := newMatmul(p.t, p.rows, p.cols, kern, arena)
		if err != nil {
			if p.layer >= 0 {
				return nil, fmt.Errorf("cpu: layer %d: %w", p.layer, err)
			}
			return nil, err
		}
		if _, repacked := mm.(*kernelMat); repacked {
			w.ReleaseTensor(p.t)
			m.repacked = true
		}
		*p.dst = mm
	}
	if arena != nil {
		arena.Built()
	}
	// A tied embedding whose LM head was repacked into rows we can read
	// back shares that one copy; otherwise it stays as it is in the file,
	// read a row at a time.
	tied := w.Tied || (len(w.Embed.Data) > 0 && len(w.Output.Data) > 0 &&
		&w.Embed.Data[0] == &w.Output.Data[0] && w.Embed.Type == w.Output.Type && w.Embed.Scale == w.Output.Scale)
	if km, ok := m.output.(*kernelMat); ok && tied {
		if _, ok := km.k.(rowReader); ok {
			m.embed = km
		}
	}
	if m.embed == nil {
		if m.embed, err = newMatmul(&w.Embed, cfg.Vocab, cfg.Dim, false, nil); err != nil {
			return nil, err
		}
	}
	if m.out, err = norm(w.OutNorm, cfg.Dim, "output_norm"); err != nil {
		return nil, err
	}
	for i := range w.Layers {
		src, dst := &w.Layers[i], &m.layers[i]
		vecs := []struct {
			dst  *[]float32
			src  []float32
			n    int
			name string
			on   bool
		}{
			{&dst.attnNorm, src.AttnNorm, cfg.Dim, "attn_norm", true},
			{&dst.ffnNorm, src.FFNNorm, cfg.Dim, "ffn_norm", true},
			// attn_sub_norm sits on the attention output, QDim wide.
			{&dst.attnSubNorm, src.AttnSubNorm, qDim, "attn_sub_norm", cfg.SubNorms},
			{&dst.ffnSubNorm, src.FFNSubNorm, cfg.FFNDim, "ffn_sub_norm", cfg.SubNorms},
			{&dst.attnPostNorm, src.AttnPostNorm, cfg.Dim, "post_attention_norm", cfg.PostNorms},
			{&dst.ffnPostNorm, src.FFNPostNorm, cfg.Dim, "post_ffw_norm", cfg.PostNorms},
			{&dst.bq, src.Bq, qDim, "attn_q.bias", cfg.QKVBias},
			{&dst.bk, src.Bk, kvDim, "attn_k.bias", cfg.QKVBias},
			{&dst.bv, src.Bv, kvDim, "attn_v.bias", cfg.QKVBias},
			{&dst.qNorm, src.QNorm, cfg.HeadDim, "attn_q_norm", cfg.QKNorm},
			{&dst.kNorm, src.KNorm, cfg.HeadDim, "attn_k_norm", cfg.QKNorm},
		}
		for _, v := range vecs {
			if !v.on {
				continue
			}
			if *v.dst, err = norm(v.src, v.n, v.name); err != nil {
				return nil, fmt.Errorf("cpu: layer %d: %w", i, err)
			}
		}
	}
	for _, l := range m.layers {
		if _, ok := l.wk.(*kernelMat); ok {
			m.kvHalf = true
		}
	}
	m.pool = newPool(threads)
	return m, nil
}

// product is one of the model's matrices to build: where it goes, its
// tensor, its shape, and its layer (-1 for the LM head).
type product struct {
	dst        *matmul
	t          *model.Tensor
	rows, cols int
	layer      int
}

// products lists w's matrices in the order a token reads them from the
// second token on: the LM head, then each layer's (m.layers made).
func (m *Model) products(w *model.Weights) []product {
	cfg := &m.cfg
	qDim, kvDim := cfg.QDim(), cfg.KVDim()
	ps := []product{{&m.output, &w.Output, cfg.Vocab, cfg.Dim, -1}}
	for i := range w.Layers {
		src, dst := &w.Layers[i], &m.layers[i]
		ps = append(ps,
			product{&dst.wq, &src.Wq, qDim, cfg.Dim, i},
			product{&dst.wk, &src.Wk, kvDim, cfg.Dim, i},
			product{&dst.wv, &src.Wv, kvDim, cfg.Dim, i},
			product{&dst.wo, &src.Wo, cfg.Dim, qDim, i},
			product{&dst.wgate, &src.Wgate, cfg.FFNDim, cfg.Dim, i},
			product{&dst.wup, &src.Wup, cfg.FFNDim, cfg.Dim, i},
			product{&dst.wdown, &src.Wdown, cfg.Dim, cfg.FFNDim, i},
		)
	}
	return ps
}

func norm(w []float32, n int, name string) ([]float32, error) {
	if len(w) != n {
		return nil, fmt.Errorf("cpu: %s has %d weights, want %d", name, len(w), n)
	}
	return w, nil
}

// Name implements backend.Model.
func (m *Model) Name() string { return "cpu" }

// Config implements backend.Model.
func (m *Model) Config() *model.Config { return &m.cfg }

// Threads is the size of the worker pool.
func (m *Model) Threads() int { return m.threads }

// Kernels names the kernel set the products run on, for reports:
// kernels.Path() ("avx512-vnni", "avx-vnni", "avx2" or "go"), or
// "reference" where no product was repacked for them (Options.NoKernels,
// or only types and widths they do not take).
func (m *Model) Kernels() string {
	if !m.repacked {
		return "reference"
	}
	return kernels.Path()
}

// RunThreads implements backend.ThreadRunner on the worker pool.
func (m *Model) RunThreads(fn func(w, n int)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		m.pool.run(threadFunc(fn))
	}
}

// threadFunc is a function run as a pool task.
type threadFunc func(w, n int)

func (f threadFunc) run(w, n int) { f(w, n) }

// Close stops the worker pool. Sessions must be closed first.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	m.pool.close()
	if m.arena != nil {
		m.arena.Release() // no pass runs now, and none will
	}
	return nil
}

// VisitWeightMemory implements backend.WeightMemory: every product's
// resident bytes (a tied embedding shares the LM head's, visited once; a
// decode step reads one row of an embedding of its own, left out).
func (m *Model) VisitWeightMemory(fn func([]byte)) {
	for _, mm := range m.matmuls() {
		mm.memory(fn)
	}
}

// WeightBytesPerToken implements backend.WeightBytes: the resident bytes a
// decode step reads, every product's and one embedding row. It differs
// from the file's where the repacking does (Q5_0 and Q6_K become int8 rows;
// ternary rows keep one scale), so bench's bandwidth figures count
// what is read.
func (m *Model) WeightBytesPerToken() int64 {
	var n, e int64
	m.VisitWeightMemory(func(b []byte) { n += int64(len(b)) })
	m.embed.memory(func(b []byte) { e += int64(len(b)) })
	return n + e/int64(max(m.cfg.Vocab, 1))
}

// matmuls lists every product of the model.
func (m *Model) matmuls() []matmul {
	out := []matmul{m.output}
	for i := range m.layers {
		l := &m.layers[i]
		out = append(out, l.wq, l.wk, l.wv, l.wo, l.wgate, l.wup, l.wdown)
	}
	return out
}
