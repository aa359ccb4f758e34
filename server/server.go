// Package server is EdgeLLM's HTTP model server: an Ollama-compatible API
// (/api/generate, /api/chat, /api/tags, /api/show, /api/ps, /api/version,
// /api/delete, /api/copy),
// an OpenAI-compatible one (/v1/chat/completions, /v1/completions,
// /v1/models) as a translation layer onto the same internal request,
// Prometheus metrics (/metrics) and /health. It owns the model registry
// (load on first use, unload after keep_alive), the fair per-model request
// queue, chat templates (through server/chattmpl) and streaming.
//
// Every endpoint goes through one generation path, (*Server).generate,
// which calls engine.Model.Generate. The package knows nothing of kernels
// or backends' internals.
//
// Facts a client may rely on:
//   - Models are those of the store in ModelsDir (package store): a file
//     ModelsDir/NAME.gguf (links followed), named NAME or NAME:latest, and
//     pulled models named as pulled ("hf.co/owner/repo:Q4_K_M", "x:latest",
//     "x"). A request names a model, never a path; errors name no path.
//   - num_ctx defaults to the file's context length; another value reloads
//     the model with that context. A prompt longer than it is a 400.
//   - Ollama endpoints default to edgellm run's sampling (temperature 0.8,
//     top_k 40, top_p 0.95, min_p 0.05, no repetition penalty); OpenAI
//     endpoints to OpenAI's (temperature 1, no filters). temperature 0 is
//     greedy.
//   - /api/generate wraps the prompt in the model's chat template unless
//     raw is set or the model has none (the plain fallback): then the
//     prompt is taken as it is, BOS added per the metadata, as edgellm run
//     does. /v1/completions never applies a template.
//   - Up to Config.Parallel requests per model (default 4) generate at
//     once, their decode steps batched (continuous batching: a request
//     joins the running batch once its prompt is prefilled, leaves when
//     done); more wait in arrival order. Batching does not change a
//     request's tokens: greedy output is the same alone or batched.
//     On the GPU the batch's tokens are picked on the device (only ids
//     cross the bus) and its KV caches live there; a backend that cannot
//     batch runs one request at a time.
package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/edgellm/edgellm/engine"
	"github.com/edgellm/edgellm/pull"
	"github.com/edgellm/edgellm/store"
)

// DefaultParallel is Config.Parallel's default.
const DefaultParallel = 4

// maxParallel bounds Config.Parallel (each slot holds a KV cache).
const maxParallel = 64

// Config says how to serve.
type Config struct {
	// ModelsDir is the model store's folder: NAME.gguf files (symbolic
	// links followed) and pulled models (package store).
	ModelsDir string
	// Pull downloads a model into ModelsDir for POST /api/pull: pull.Pull
	// (the CLI sets it; tests may fake it). The server sets the options'
	// Insecure and Progress. nil answers 501: this server does not pull.
	Pull func(ctx context.Context, dir, name string, opt pull.Options) (store.Name, *store.Manifest, error)
	// Engine is passed to engine.Load (Backend, Threads); ContextLen is set
	// per request from num_ctx.
	Engine engine.Options
	// KeepAlive is how long an idle model stays loaded; 0 means the
	// default of 5 minutes, negative means forever.
	KeepAlive time.Duration
	// MaxLoaded bounds the models loaded at once: loading another first
	// unloads the least recently used idle one. 0 means no bound.
	MaxLoaded int
	// MaxQueue bounds the requests waiting per model; past it a request
	// gets 503. 0 means 512.
	MaxQueue int
	// Parallel is how many requests per model generate at once, their
	// decode steps batched, on backends that can (engine.Options.Parallel;
	// each holds a KV cache of num_ctx). 0 means DefaultParallel; 1 serves
	// one request at a time.
	Parallel int
	// ShutdownGrace is how long Serve waits, once its context is done,
	// for running generations before cancelling them. 0 means 10 s.
	ShutdownGrace time.Duration
	Logger        *slog.Logger

	// MaxBody bounds a request body in bytes; past it a request gets 413.
	// 0 means DefaultMaxBody (20 MB).
	MaxBody int64
	// BodyTimeout bounds the time to receive a request body (headers have
	// 10 s); past it a request gets 408. 0 means DefaultBodyTimeout.
	BodyTimeout time.Duration
	// KVBudget bounds the KV cache memory of one model in bytes (every
	// slot at its num_ctx, at 4 bytes an element): a num_ctx that needs
	// more is a 400. 0 means DefaultKVBudget; negative, no bound.
	KVBudget int64
	// APIKey, when set, is required as "Authorization: Bearer KEY" by
	// every endpoint but /health (and /metrics unless MetricsAuth).
	APIKey      string
	MetricsAuth bool
	// Origins are allowed browser origins beyond the loopback defaults
	// (EDGELLM_ORIGINS; "*" allows any). Requests without Origin pass.
	Origins []string
}

// Server serves models over HTTP. Its methods are safe for concurrent use.
type Server struct {
	cfg     Config
	log     *slog.Logger
	reg     *registry
	metrics *metrics
	mux     *http.ServeMux
	handler http.Handler // mux behind the guard
	// loopbackOnly is set by Serve when it listens on loopback only: then
	// the guard checks Host (Handler alone does not know the address).
	loopbackOnly atomic.Bool
	// base is the parent of every generation's context, cancelled when a
	// shutdown's grace period is over.
	base       context.Context
	cancelBase context.CancelFunc
	// afterToken, when set (tests), runs after each generated token.
	afterToken func(ctx context.Context)
}

// New makes a server; models are not loaded until first used.
func New(cfg Config) (*Server, error) {
	if cfg.ModelsDir == "" {
		return nil, errors.New("server: no models directory")
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = 5 * time.Minute
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = 512
	}
	if cfg.Parallel == 0 {
		cfg.Parallel = DefaultParallel
	}
	if cfg.Parallel < 0 || cfg.Parallel > maxParallel {
		return nil, fmt.Errorf("server: parallel %d out of range [1, %d]", cfg.Parallel, maxParallel)
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.BodyTimeout <= 0 {
		cfg.BodyTimeout = DefaultBodyTimeout
	}
	if cfg.KVBudget == 0 {
		cfg.KVBudget = DefaultKVBudget
	}
	s := &Server{cfg: cfg, log: cfg.Logger, metrics: newMetrics()}
	s.base, s.cancelBase = context.WithCancel(context.Background())
	s.reg = newRegistry(cfg, s.metrics, s.log)
	s.routes()
	return s, nil
}

func (s *Server) routes() {
	m := http.NewServeMux()
	handle := func(pattern, endpoint string, h func(http.ResponseWriter, *http.Request)) {
		m.Handle(pattern, s.wrap(endpoint, h))
	}
	handle("POST /api/generate", "generate", s.handleGenerate)
	handle("POST /api/chat", "chat", s.handleChat)
	handle("GET /api/tags", "tags", s.handleTags)
	handle("POST /api/show", "show", s.handleShow)
	handle("GET /api/ps", "ps", s.handlePs)
	handle("DELETE /api/delete", "delete", s.handleDelete)
	handle("POST /api/copy", "copy", s.handleCopy)
	handle("POST /api/pull", "pull", s.handlePull)
	handle("GET /api/version", "version", s.handleVersion)
	handle("POST /v1/chat/completions", "v1_chat", s.handleOAIChat)
	handle("POST /v1/completions", "v1_completions", s.handleOAICompletions)
	handle("GET /v1/models", "v1_models", s.handleOAIModels)
	handle("GET /health", "health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	handle("GET /{$}", "root", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "EdgeLLM is running")
	})
	m.Handle("GET /metrics", s.metrics.handler())
	s.mux = m
	s.handler = s.guard(m)
}

// Handler is the server's HTTP handler. It checks Origin, the API key and
// bodies; Host only once Serve has seen a loopback listener.
func (s *Server) Handler() http.Handler { return s.handler }

// statusWriter remembers the status and whether anything was written, so
// the recovery path knows whether it can still send an error.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// wrap counts requests and, as a last resort behind validation, turns a
// panic in a handler into a 500 instead of a dead server.
func (s *Server) wrap(endpoint string, h func(http.ResponseWriter, *http.Request)) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w := &statusWriter{ResponseWriter: rw}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.Error("handler panic", "endpoint", endpoint, "panic", p, "stack", string(debug.Stack()))
				if w.status == 0 {
					writeAPIError(w, r, fmt.Errorf("handler panic: %v", p))
				}
			}
			code := w.status
			if code == 0 {
				code = http.StatusOK
			}
			s.metrics.requests.WithLabelValues(endpoint, fmt.Sprint(code)).Inc()
		}()
		h(w, r)
	})
}

// Serve answers on ln until ctx is done, then shuts down gracefully: it
// stops accepting, lets running requests finish for ShutdownGrace, cancels
// the rest, and unloads every model.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.loopbackOnly.Store(listenerIsLoopback(ln.Addr()))
	hs := &http.Server{
		Handler: s.handler,
		// Slow clients: headers within 10 s, bodies within BodyTimeout
		// (the guard's read deadline), idle connections closed.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return s.base },
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		s.Close()
		return fmt.Errorf("server: %w", err)
	case <-ctx.Done():
	}
	s.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownGrace)
	defer cancel()
	err := hs.Shutdown(sctx)
	if err != nil {
		// Grace is over: cancel the generations still running, then wait
		// briefly for their handlers to return.
		s.cancelBase()
		hctx, hcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer hcancel()
		err = hs.Shutdown(hctx)
	}
	s.Close()
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("server: shutdown: %w", err)
	}
	return nil
}

// Close cancels running generations and unloads every model.
func (s *Server) Close() error {
	s.cancelBase()
	return s.reg.close()
}

// apiError is an error with the HTTP status it deserves.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &apiError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &apiError{http.StatusNotFound, fmt.Sprintf(format, args...)}
}

// statusOf maps an error to its HTTP status (500 unless it says otherwise).
func statusOf(err error) int {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.status
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return 499 // client closed the request (nginx's code); rarely seen by anyone
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// writeError sends Ollama's error shape: {"error": "..."}; msg must be
// fit for the client (see publicMessage).
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// decodeBody reads one JSON object into v; a bad body is a 400 naming the problem.
func decodeBody(r *http.Request, v any) error {
	if bb, ok := r.Body.(bufferedBody); ok {
		// Read in full by the guard: parsed in place, no second buffer.
		if err := json.Unmarshal(bb.b, v); err != nil {
			if _, ok := err.(*json.SyntaxError); ok && json.Valid(firstValue(bb.b)) {
				return badRequest("invalid JSON body: more than one value")
			}
			return badRequest("invalid JSON body: %v", err)
		}
		return nil
	}
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &apiError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", mbe.Limit)}
		}
		return badRequest("invalid JSON body: %v", err)
	}
	if dec.More() {
		return badRequest("invalid JSON body: more than one value")
	}
	return nil
}

// firstValue is b up to the end of its first JSON value (all of b when
// that cannot be found), to tell "two values" from a syntax error.
func firstValue(b []byte) []byte {
	dec := json.NewDecoder(bytes.NewReader(b))
	var raw json.RawMessage
	if dec.Decode(&raw) != nil {
		return b
	}
	return b[:dec.InputOffset()]
}
