// Package engine is EdgeLLM's library API and its one generation path: it
// loads a model file (GGUF, or a llama2.c checkpoint with its tokenizer),
// picks a compute backend, and generates text with streaming, stop
// conditions, cancellation and statistics. The CLI and the HTTP server are
// both clients of this package.
//
// It owns sessions and their KV caches (reusing a common prompt prefix
// between requests), the prefill/decode loop, the stop conditions, and,
// with Options.Parallel > 1 on a backend that batches, the scheduler that
// runs several generations as one batch per decode step (batch.go). It
// knows nothing of HTTP or of any backend's internals. It registers the
// "cpu" backend and, unless built with -tags nocuda, "cuda" (cuda.go);
// others plug in through RegisterBackend.
package engine

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/backend/cpu"
	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/tokenizer"
)

// Options says how to load a model.
type Options struct {
	// Backend is "auto" (or ""), "cpu", or a registered name such as
	// "cuda". Auto tries "cuda" when registered and falls back to "cpu".
	Backend string
	// Threads is the CPU worker count; 0 means runtime.GOMAXPROCS(0) (the
	// cores this process may use, a container's CPU limit included).
	Threads int
	// ContextLen is the session length in tokens; 0 means the file's
	// trained context length, at most DefaultContextCap (a model trained
	// for 128K positions would otherwise take gigabytes of KV cache a
	// session; ask for more explicitly). It may exceed the file's value.
	ContextLen int
	// TokenizerPath is the llama2.c tokenizer.bin for a llama2.c
	// checkpoint; empty means tokenizer.bin beside the checkpoint. GGUF
	// files carry their own tokenizer and ignore it.
	TokenizerPath string
	// Logger receives load-time information; nil discards it.
	Logger *slog.Logger
	// Parallel is the number of generations that run at once, each in a
	// sequence slot of its own (its own KV cache), their decode steps
	// batched (continuous batching: a request joins the running batch once
	// its prompt is prefilled and leaves when it is done). 0 or 1 runs one
	// generation at a time. It takes effect only on backends that
	// implement backend.BatchDecoder; others run one at a time.
	Parallel int
	// OnStep, when set, is called after each batched decode step (Parallel
	// > 1) with the number of sequences it decoded, from the scheduler's
	// goroutine: it must be quick (a metric) and must not call the Model.
	OnStep func(batch int)
}

// maxParallel bounds Options.Parallel: every slot holds a KV cache.
const maxParallel = 256

// LoadFunc loads weights onto a backend.
type LoadFunc func(w *model.Weights, opts Options) (backend.Model, error)

var (
	regMu    sync.Mutex
	registry = map[string]LoadFunc{
		"cpu": func(w *model.Weights, o Options) (backend.Model, error) {
			return cpu.Load(w, cpu.Options{Threads: o.Threads})
		},
	}
)

// RegisterBackend makes a backend available under name, so a package can
// plug one in without this package importing it. Registering a name twice
// replaces the first (a test may stand in for "cuda").
func RegisterBackend(name string, load LoadFunc) {
	regMu.Lock()
	defer regMu.Unlock()
	registry[name] = load
}

func lookupBackend(name string) (LoadFunc, bool) {
	regMu.Lock()
	defer regMu.Unlock()
	f, ok := registry[name]
	return f, ok
}

// defaultContext is the context length when neither the caller nor the
// file gives one.
const defaultContext = 2048

// DefaultContextCap bounds the context a session gets when the caller asks
// for none: Ollama's default, what a chat on a laptop needs.
const DefaultContextCap = 4096

// maxContext bounds a requested context so that a typo is an error before
// the KV cache allocation.
const maxContext = 1 << 20

// Model is a loaded model ready to generate. With Parallel 1 Generate calls
// are serialised: the model keeps one session and reuses its KV cache
// across requests that share a prompt prefix. With Parallel N > 1 (on a
// backend that batches) up to N run at once, each in its own slot (a
// session, reused the same way), and more wait their turn.
type Model struct {
	path    string
	file    *gguf.File // nil for llama2.c checkpoints
	weights *model.Weights
	tok     *tokenizer.Tokenizer
	be      backend.Model
	ctxLen  int
	threads int
	loadDur time.Duration
	log     *slog.Logger

	// sched runs the generations when Parallel > 1 on a batching
	// backend; nil otherwise. Set by Load, never changed.
	sched   *scheduler
	running sync.WaitGroup // generations in flight on sched

	mu     sync.Mutex      // serial path: one generation at a time; guards everything below
	seq    seq             // the serial path's one sequence
	lat    []time.Duration // per-token latencies, cap ctxLen+1
	closed bool
}

// seq is one sequence: a session, the tokens in its KV cache and the
// logits of its last position.
type seq struct {
	sess   backend.Session // nil until first used
	hist   []int32         // the tokens in sess's KV cache, cap ctxLen
	logits []float32       // len Vocab
}

// Load opens a model file and loads it onto a backend.
func Load(path string, opts Options) (*Model, error) {
	start := time.Now()
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.ContextLen < 0 || opts.ContextLen > maxContext {
		return nil, fmt.Errorf("engine: context length %d out of range [0, %d]", opts.ContextLen, maxContext)
	}
	if opts.Parallel < 0 || opts.Parallel > maxParallel {
		return nil, fmt.Errorf("engine: parallel %d out of range [0, %d]", opts.Parallel, maxParallel)
	}
	if opts.Threads <= 0 {
		opts.Threads = runtime.GOMAXPROCS(0)
	}
	m := &Model{path: path, threads: opts.Threads, log: log}
	ok := false
	defer func() {
		if !ok {
			m.closeAll()
		}
	}()

	isGGUF, err := hasGGUFMagic(path)
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	if isGGUF {
		if m.file, err = gguf.Open(path); err != nil {
			return nil, fmt.Errorf("engine: %w", err)
		}
		if m.weights, err = model.FromGGUF(m.file); err != nil {
			return nil, fmt.Errorf("engine: %s: %w", path, err)
		}
		if m.tok, err = tokenizer.FromGGUF(m.file); err != nil {
			return nil, fmt.Errorf("engine: %s: %w", path, err)
		}
	} else {
		if m.weights, err = model.LoadLlama2C(path); err != nil {
			return nil, fmt.Errorf("engine: %w", err)
		}
		tp := opts.TokenizerPath
		if tp == "" {
			tp = filepath.Join(filepath.Dir(path), "tokenizer.bin")
		}
		if m.tok, err = tokenizer.FromLlama2C(tp, m.weights.Vocab); err != nil {
			return nil, fmt.Errorf("engine: llama2.c tokenizer: %w", err)
		}
	}
	if n := m.tok.VocabSize(); n != m.weights.Vocab {
		return nil, fmt.Errorf("engine: %s: tokenizer has %d tokens, the model %d", path, n, m.weights.Vocab)
	}

	m.ctxLen = opts.ContextLen
	if m.ctxLen == 0 {
		m.ctxLen = min(m.weights.ContextLen, DefaultContextCap)
		if m.weights.ContextLen > DefaultContextCap {
			log.Info("context length capped; ask for more to use the model's trained length", "ctx", m.ctxLen, "trained", m.weights.ContextLen)
		}
	}
	if m.ctxLen <= 0 {
		m.ctxLen = defaultContext
	}
	if fileCtx := m.weights.ContextLen; fileCtx > 0 && m.ctxLen > fileCtx {
		log.Warn("context length exceeds the model's trained length", "ctx", m.ctxLen, "trained", fileCtx)
	}

	if m.be, err = pickBackend(m.weights, opts, log); err != nil {
		return nil, err
	}
	m.seq = newSeq(m.ctxLen, m.weights.Vocab)
	m.lat = make([]time.Duration, 0, m.ctxLen+1)
	if opts.Parallel > 1 {
		if bd, ok := backend.Batches(m.be); ok {
			m.sched = newScheduler(m, bd, opts.Parallel, opts.OnStep)
			go m.sched.loop()
		} else {
			log.Info("backend decodes one sequence at a time: parallel ignored", "backend", m.be.Name(), "parallel", opts.Parallel)
		}
	}
	m.loadDur = time.Since(start)
	log.Info("model loaded", "path", path, "arch", m.weights.Arch, "backend", m.be.Name(),
		"ctx", m.ctxLen, "threads", m.threads, "parallel", m.Parallel(), "ms", m.loadDur.Milliseconds())
	ok = true
	return m, nil
}

// hasGGUFMagic reports whether the file starts with "GGUF".
func hasGGUFMagic(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var magic [4]byte
	if _, err := io.ReadFull(f, magic[:]); err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	return bytes.Equal(magic[:], []byte("GGUF")), nil
}

func pickBackend(w *model.Weights, opts Options, log *slog.Logger) (backend.Model, error) {
	name := opts.Backend
	if name == "" || name == "auto" {
		if load, ok := lookupBackend("cuda"); ok {
			be, err := load(w, opts)
			if err == nil {
				return be, nil
			}
			log.Info("cuda backend unavailable, using cpu", "err", err)
		}
		name = "cpu"
	}
	load, ok := lookupBackend(name)
	if !ok {
		if name == "cuda" && cudaLeftOut != "" {
			return nil, fmt.Errorf("engine: backend cuda: %s", cudaLeftOut)
		}
		return nil, fmt.Errorf("engine: unknown backend %q (is its package imported?)", name)
	}
	be, err := load(w, opts)
	if err != nil {
		return nil, fmt.Errorf("engine: %s backend: %w", name, err)
	}
	return be, nil
}

func newSeq(ctxLen, vocab int) seq {
	return seq{hist: make([]int32, 0, ctxLen), logits: make([]float32, vocab)}
}

// Close frees the sessions, the backend and the file mapping. Running
// generations end first: the serial one is waited for, parallel ones end
// with an error at their next step.
func (m *Model) Close() error {
	if m.sched != nil {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return nil
		}
		m.closed = true
		m.mu.Unlock()
		m.sched.stop()
		m.running.Wait()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed && m.sched == nil {
		return nil
	}
	m.closed = true
	return m.closeAll()
}

func (m *Model) closeAll() error {
	var errs []error
	if m.seq.sess != nil {
		errs = append(errs, m.seq.sess.Close())
		m.seq.sess = nil
	}
	if m.sched != nil {
		errs = append(errs, m.sched.closeSessions())
	}
	if m.be != nil {
		errs = append(errs, m.be.Close())
	}
	if m.file != nil {
		errs = append(errs, m.file.Close())
	}
	return errors.Join(errs...)
}

// Tokenizer is the model's tokenizer.
func (m *Model) Tokenizer() *tokenizer.Tokenizer { return m.tok }

// Config is the network's description.
func (m *Model) Config() *model.Config { return &m.weights.Config }

// Weights are the network's weights (views into the file).
func (m *Model) Weights() *model.Weights { return m.weights }

// Backend is the backend the model runs on.
func (m *Model) Backend() backend.Model { return m.be }

// Threads is the CPU worker count the model was loaded with.
func (m *Model) Threads() int { return m.threads }

// Parallel is the number of generations that can run at once (1 unless
// Options.Parallel asked for more on a backend that batches).
func (m *Model) Parallel() int {
	if m.sched == nil {
		return 1
	}
	return len(m.sched.slots)
}

// ContextLen is the session length in tokens.
func (m *Model) ContextLen() int { return m.ctxLen }

// LoadDuration is how long Load took.
func (m *Model) LoadDuration() time.Duration { return m.loadDur }

// Path is the file the model was loaded from.
func (m *Model) Path() string { return m.path }

// commonPrefix is the length of the longest common prefix of a and b.
func commonPrefix(a, b []int32) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}
