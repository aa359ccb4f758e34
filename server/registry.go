package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/edgellm/edgellm/engine"
	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/server/chattmpl"
	"github.com/edgellm/edgellm/store"
)

// registry maps model names to files in the models directory and keeps the
// loaded ones. A model loads on first use and unloads keep_alive after its
// last request ends.
type registry struct {
	cfg     Config
	metrics *metrics
	log     *slog.Logger
	// stepHook, when set (tests, before the first load), runs after each
	// batched decode step with its size.
	stepHook func(n int)

	mu      sync.Mutex
	entries map[string]*entry
	closed  bool
}

// entry is one model name. Its queue holds as many slots as the loaded
// model runs generations at once (engine.Model.Parallel: Config.Parallel on
// a backend that batches, else one; one until first loaded), so requests
// past that wait here, fairly, rather than inside the engine.
type entry struct {
	name, path string
	q          *fifo
	// src is what the store said of the model when the entry was made: the
	// file and, for a pulled model, its template, system and params layers.
	// It never changes: when the name comes to name other bytes, lookup
	// makes a new entry.
	src *store.Model

	modelDefaults // an Ollama model's template, system and params layers (modeldefaults.go)

	mu        sync.Mutex // guards the fields below
	m         *engine.Model
	tmpl      *chattmpl.Template
	numCtx    int         // num_ctx the model was loaded with (0: the file's)
	fileCtx   int         // the context length a load with num_ctx 0 gives (0: not known yet)
	maxTok    int         // the loaded vocabulary's maxTokenBytes
	file      os.FileInfo // the file as it was when loaded (nil: unknown)
	lastUsed  time.Time
	expires   time.Time // zero: never
	timer     *time.Timer
	users     int
	unloadGen uint64 // invalidates timers armed before the latest use
	// removed: the model was deleted from the store; it unloads as soon
	// as its last request ends.
	removed bool
	// draining counts requests waiting to reload the model with another
	// num_ctx once its running generations end; others wait behind them.
	draining int
	changed  chan struct{} // closed (and dropped) when users or draining change
}

// wait releases e.mu until users or draining change or ctx ends; e.mu is
// held again when it returns.
func (e *entry) wait(ctx context.Context) error {
	if e.changed == nil {
		e.changed = make(chan struct{})
	}
	ch := e.changed
	e.mu.Unlock()
	defer e.mu.Lock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// signal wakes the waiters of wait; e.mu is held.
func (e *entry) signal() {
	if e.changed != nil {
		close(e.changed)
		e.changed = nil
	}
}

func newRegistry(cfg Config, m *metrics, log *slog.Logger) *registry {
	return &registry{cfg: cfg, metrics: m, log: log, entries: make(map[string]*entry)}
}

// lookup finds the entry for a model name (a store name, never a path:
// store.Lookup), creating it the first time. Names of one model ("x",
// "x:latest") share one entry, keyed by the store's name for it.
func (r *registry) lookup(name string) (*entry, error) {
	src, err := r.find(name)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, &apiError{503, "server is shutting down"}
	}
	e, ok := r.entries[src.Name]
	// A name that names other bytes now (pulled again, copied over) gets a
	// new entry once the old one is idle, which unloads; a busy one serves
	// on till then. Only try-locked: a loading entry holds its lock and
	// then takes r.mu (makeRoom).
	if ok && !sameSource(e.src, src) && e.mu.TryLock() {
		if e.users == 0 {
			e.unloadGen++
			r.unloadLocked(e)
			e.removed = true // a request still queued on it unloads it when done
			ok = false
		}
		e.mu.Unlock()
	}
	if !ok {
		md, err := newModelDefaults(src.Template, src.System, src.Params, r.log)
		if err != nil { // the model's own layers are broken (the text names no path)
			return nil, &apiError{500, fmt.Sprintf("model %q: %v", src.Name, err)}
		}
		e = &entry{name: src.Name, path: src.Path, src: src, modelDefaults: md, q: newFIFO(1, r.cfg.MaxQueue)}
		r.entries[src.Name] = e
	}
	return e, nil
}

func sameSource(a, b *store.Model) bool {
	return a.Path == b.Path && a.Template == b.Template && a.System == b.System && string(a.Params) == string(b.Params)
}

// storeError turns a store lookup's error into the client's: never a path
// of the models directory (the log has the detail).
func (r *registry) storeError(name string, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrName):
		return notFound("model %q not found", name)
	case errors.Is(err, store.ErrDamaged):
		return &apiError{500, err.Error()} // says what is wrong without paths
	}
	r.log.Error("model store", "model", name, "err", err)
	return &apiError{500, fmt.Sprintf("model %q: cannot read the model store (the server's log says why)", name)}
}

// remove deletes a model from the store, unloading it first (Ollama's
// DELETE /api/delete). A model in use is unloaded when its last request
// ends; on Unix its open mapping keeps the deleted bytes readable till then.
func (r *registry) remove(name string) (string, error) {
	src, err := store.Lookup(r.cfg.ModelsDir, name)
	key := ""
	if err == nil {
		key = src.Name
	} else if !errors.Is(err, store.ErrDamaged) {
		return "", r.storeError(name, err)
	}
	r.mu.Lock()
	e := r.entries[key]
	delete(r.entries, key)
	r.mu.Unlock()
	if e != nil {
		e.mu.Lock()
		e.removed = true
		if e.users == 0 {
			e.unloadGen++
			r.unloadLocked(e)
		}
		e.mu.Unlock()
	}
	removed, err := store.Remove(r.cfg.ModelsDir, name)
	if err != nil {
		return "", r.storeError(name, err)
	}
	return removed, nil
}

// fileInfo is a model of the models directory.
type fileInfo struct {
	name    string
	path    string
	size    int64
	modTime time.Time
	digest  string // a pulled model's manifest digest ("" for a plain file)
}

// list returns the store's models, sorted by name: plain *.gguf files and
// pulled models (store.Scan).
func (r *registry) list() ([]fileInfo, error) {
	es, err := store.Scan(r.cfg.ModelsDir)
	if err != nil {
		r.log.Error("model store", "err", err)
		return nil, errors.New("cannot read the model store (the server's log says why)")
	}
	out := make([]fileInfo, 0, len(es))
	for _, e := range es {
		out = append(out, fileInfo{name: e.Name, path: e.Path, size: e.Size, modTime: e.Modified, digest: e.Digest})
	}
	return out, nil
}

// find resolves a model name in the store, with the client's error.
func (r *registry) find(name string) (*store.Model, error) {
	if name == "" {
		return nil, badRequest("model name is required")
	}
	src, err := store.Lookup(r.cfg.ModelsDir, name)
	if err != nil {
		return nil, r.storeError(name, err)
	}
	return src, nil
}

// lease is a held generation slot on a loaded model.
type lease struct {
	e       *entry
	m       *engine.Model
	tmpl    *chattmpl.Template
	loadDur time.Duration // this request's load time (0 when it was loaded)
	maxTok  int           // maxTokenBytes of the model's vocabulary
	r       *registry
	done    bool
}

// acquire waits (FIFO) for the model's slot, then loads the model if it is
// not loaded or was loaded with another num_ctx.
func (r *registry) acquire(ctx context.Context, e *entry, numCtx int) (*lease, error) {
	g := r.metrics.queueDepth.WithLabelValues(e.name)
	g.Inc()
	err := e.q.acquire(ctx)
	g.Dec()
	if err != nil {
		if errors.Is(err, errQueueFull) {
			return nil, &apiError{503, fmt.Sprintf("model %q: %v", e.name, err)}
		}
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	// A request for another num_ctx reloads the model, which must wait for
	// the generations running on it; requests arriving meanwhile wait
	// behind it rather than keep the model busy for ever.
	reloading := false
	for {
		if e.m != nil && e.users > 0 && !e.fits(numCtx) {
			if !reloading {
				reloading = true
				e.draining++
			}
		} else if reloading || e.draining == 0 {
			break
		}
		if err := e.wait(ctx); err != nil {
			if reloading {
				e.draining--
				e.signal()
			}
			e.q.release()
			return nil, err
		}
	}
	if reloading {
		e.draining--
		e.signal()
	}
	e.users++
	e.unloadGen++
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	l := &lease{e: e, r: r}
	if e.m != nil && !e.fits(numCtx) {
		r.log.Info("reloading model for a new context length", "model", e.name, "from", e.numCtx, "to", numCtx)
		r.unloadLocked(e)
	} else if e.m != nil && e.users == 1 && e.changedInPlace() {
		// Its mapping may now end before the data it reads (SIGBUS):
		// drop it untouched and load the file as it is now.
		r.log.Warn("model file changed in place since it was loaded; reloading", "model", e.name)
		r.unloadLocked(e)
	}
	if e.m == nil {
		start := time.Now()
		r.makeRoom(e)
		if err := r.loadLocked(e, numCtx); err != nil {
			e.users--
			e.q.release()
			return nil, err
		}
		l.loadDur = time.Since(start)
	}
	l.m, l.tmpl, l.maxTok = e.m, e.tmpl, e.maxTok
	return l, nil
}

// fits reports whether the loaded model serves a request's num_ctx (0: the
// file's) without a reload.
func (e *entry) fits(numCtx int) bool {
	have := e.m.ContextLen()
	if numCtx == 0 {
		return e.numCtx == 0 || (e.fileCtx != 0 && have == e.fileCtx)
	}
	return numCtx == have
}

func (r *registry) loadLocked(e *entry, numCtx int) error {
	opts := r.cfg.Engine
	opts.ContextLen = numCtx
	opts.Logger = r.log
	opts.Parallel = r.cfg.Parallel
	batch := r.metrics.batchSize.WithLabelValues(e.name)
	hook := r.stepHook
	opts.OnStep = func(n int) {
		batch.Observe(float64(n))
		if hook != nil {
			hook(n)
		}
	}
	fi, _ := os.Stat(e.path)
	m, err := engine.Load(e.path, opts)
	if err != nil {
		return &loadError{e.name, err}
	}
	if err := checkKVBudget(m, r.cfg.KVBudget); err != nil {
		m.Close()
		return err
	}
	tm, err := modelTemplate(e.ollamaTemplate, func() (*chattmpl.Template, error) { return templateFor(e.path, m) })
	if err != nil {
		// A broken file template falls back to a built-in one; say so.
		r.log.Warn("chat template", "model", e.name, "err", err, "using", tm.Name())
	}
	e.m, e.tmpl, e.numCtx = m, tm, numCtx
	e.maxTok, e.file = maxTokenBytes(m.Tokenizer()), fi
	if numCtx == 0 {
		e.fileCtx = m.ContextLen()
	}
	e.q.resize(m.Parallel())
	r.metrics.loads.WithLabelValues(e.name).Inc()
	r.metrics.loaded.Inc()
	return nil
}

// changedInPlace reports whether the loaded file was rewritten or
// truncated in place (same file, other size or time). A file replaced by
// rename is another file: the loaded model keeps its old mapping until
// unloaded, and the next load takes the new one.
func (e *entry) changedInPlace() bool {
	if e.file == nil {
		return false
	}
	fi, err := os.Stat(e.path)
	if err != nil {
		return false // removed: the mapping keeps the old data
	}
	return os.SameFile(fi, e.file) && (fi.Size() != e.file.Size() || !fi.ModTime().Equal(e.file.ModTime()))
}

// bound is what checkFits needs before the model is acquired, while it
// is loaded (ctx 0: not known; an unloaded file may have changed).
func (e *entry) bound(numCtx int) (ctx, maxTok int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		return 0, 0
	}
	if numCtx == 0 {
		numCtx = e.fileCtx
	}
	return numCtx, e.maxTok
}

// templateFor picks a loaded model's chat template from its file's metadata.
func templateFor(path string, m *engine.Model) (*chattmpl.Template, error) {
	tok := m.Tokenizer()
	cm := chattmpl.Model{BOS: tok.Token(tok.BOS()), EOS: tok.Token(tok.EOS())}
	if f, err := gguf.Open(path); err == nil {
		cm.ChatTemplate, _ = f.String("tokenizer.chat_template")
		cm.Name, _ = f.String("general.name")
		f.Close()
	}
	// The family is recognised by its special tokens' texts; which ids are
	// flagged special varies between converters, so pass them all.
	cm.Tokens = make([]string, tok.VocabSize())
	for id := range cm.Tokens {
		cm.Tokens[id] = tok.Token(int32(id))
	}
	tm, err := chattmpl.ForModel(cm)
	if tm == nil {
		// Unreachable with the built-in set; keep chat working regardless.
		tm, _ = chattmpl.Builtin(chattmpl.Plain, cm.BOS, cm.EOS)
	}
	return tm, err
}

// makeRoom unloads the least recently used idle models until loading one
// more stays within MaxLoaded. Busy models are never unloaded: when all are
// busy the new one loads anyway, past the bound, rather than wait. The
// caller holds e.mu; other entries are only try-locked, so two loads
// cannot deadlock on each other.
func (r *registry) makeRoom(e *entry) {
	if r.cfg.MaxLoaded <= 0 {
		return
	}
	r.mu.Lock()
	others := make([]*entry, 0, len(r.entries))
	for _, o := range r.entries {
		if o != e {
			others = append(others, o)
		}
	}
	r.mu.Unlock()
	for {
		var idle []*entry
		loaded := 0
		for _, o := range others {
			if !o.mu.TryLock() {
				loaded++ // busy loading or in use: count it, keep it
				continue
			}
			if o.m != nil {
				loaded++
				if o.users == 0 {
					idle = append(idle, o)
				}
			}
			o.mu.Unlock()
		}
		if loaded < r.cfg.MaxLoaded || len(idle) == 0 {
			return
		}
		lru := idle[0]
		for _, o := range idle[1:] {
			if o.lastUsed.Before(lru.lastUsed) {
				lru = o
			}
		}
		if !lru.mu.TryLock() {
			return
		}
		if lru.m != nil && lru.users == 0 {
			lru.unloadGen++
			r.log.Info("unloading to make room", "model", lru.name, "for", e.name)
			r.unloadLocked(lru)
		}
		lru.mu.Unlock()
	}
}

func (r *registry) unloadLocked(e *entry) {
	if e.m == nil {
		return
	}
	if err := e.m.Close(); err != nil {
		r.log.Warn("closing model", "model", e.name, "err", err)
	}
	e.m, e.tmpl = nil, nil
	e.expires = time.Time{}
	r.metrics.loaded.Dec()
	r.log.Info("model unloaded", "model", e.name)
}

// release gives the slot back and arms the unload timer: keepAlive 0
// unloads now, negative never.
func (l *lease) release(keepAlive time.Duration) {
	if l.done {
		return
	}
	l.done = true
	e, r := l.e, l.r
	e.mu.Lock()
	e.users--
	if e.users == 0 {
		e.signal()
	}
	e.unloadGen++
	e.lastUsed = time.Now()
	gen := e.unloadGen
	switch {
	case e.users > 0 || e.m == nil:
	case keepAlive == 0 || e.removed:
		r.unloadLocked(e)
	case keepAlive < 0:
		e.expires = time.Time{}
	default:
		e.expires = time.Now().Add(keepAlive)
		e.timer = time.AfterFunc(keepAlive, func() {
			e.mu.Lock()
			defer e.mu.Unlock()
			if e.unloadGen == gen && e.users == 0 {
				r.unloadLocked(e)
			}
		})
	}
	e.mu.Unlock()
	e.q.release()
}

// loadedModel describes a loaded model for /api/ps.
type loadedModel struct {
	name, path string
	digest     string // a pulled model's manifest digest (store.Model.Digest)
	ctx        int
	expires    time.Time
	size       int64
}

func (r *registry) loaded() []loadedModel {
	r.mu.Lock()
	es := make([]*entry, 0, len(r.entries))
	for _, e := range r.entries {
		es = append(es, e)
	}
	r.mu.Unlock()
	var out []loadedModel
	for _, e := range es {
		e.mu.Lock()
		if e.m != nil {
			lm := loadedModel{name: e.name, path: e.path, digest: e.src.Digest, ctx: e.m.ContextLen(), expires: e.expires}
			if fi, err := os.Stat(e.path); err == nil {
				lm.size = fi.Size()
			}
			out = append(out, lm)
		}
		e.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// unload drops a model now if no request uses it (Ollama's keep_alive 0
// with an empty prompt).
func (r *registry) unload(e *entry) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.users == 0 {
		e.unloadGen++
		r.unloadLocked(e)
	}
}

// close unloads everything; running generations must have been cancelled.
func (r *registry) close() error {
	r.mu.Lock()
	r.closed = true
	es := make([]*entry, 0, len(r.entries))
	for _, e := range r.entries {
		es = append(es, e)
	}
	r.mu.Unlock()
	for _, e := range es {
		// Wait for a slot so a serial generation is not closed under its
		// feet; batched ones (cancelled by now) end at the engine's Close,
		// which waits for them.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := e.q.acquire(ctx)
		cancel()
		e.mu.Lock()
		e.unloadGen++
		if e.timer != nil {
			e.timer.Stop()
		}
		r.unloadLocked(e)
		e.mu.Unlock()
		if err == nil {
			e.q.release()
		}
	}
	return nil
}
