package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/edgellm/edgellm/engine"
	"github.com/edgellm/edgellm/pull"
	"github.com/edgellm/edgellm/server"
	"github.com/edgellm/edgellm/store"
)

type serveCmd struct {
	Addr      string        `help:"Address to listen on (default: $EDGELLM_HOST, else 127.0.0.1:11434)."`
	Models    string        `help:"Models directory, the model store: NAME.gguf files or links to them, and pulled models (default: $EDGELLM_MODELS, else ~/.edgellm/models)."`
	Backend   string        `help:"auto, cpu or cuda." enum:"auto,cpu,cuda" default:"auto"`
	Threads   int           `help:"CPU threads per model (default: the cores this process may use)."`
	KeepAlive time.Duration `help:"How long an idle model stays loaded (negative: forever)." name:"keep-alive" default:"5m"`
	MaxQueue  int           `help:"Requests allowed to wait per model before 503." name:"max-queue" default:"512"`
	MaxLoaded int           `help:"Models loaded at once; loading another unloads the least recently used idle one (0: no bound)." name:"max-loaded" default:"3"`
	Parallel  int           `help:"Requests per model generating at once, their decode steps batched, on cpu and cuda (each holds a KV cache)." default:"4"`

	APIKey      string        `help:"Require 'Authorization: Bearer KEY' on every endpoint but /health (and /metrics unless --metrics-auth)." name:"api-key" env:"EDGELLM_API_KEY"`
	MetricsAuth bool          `help:"/metrics needs the API key too." name:"metrics-auth"`
	MaxBody     int64         `help:"Largest request body in bytes (larger: 413)." name:"max-body" default:"20971520"`
	BodyTimeout time.Duration `help:"Time a client has to send its request body (then 408)." name:"body-timeout" default:"60s"`
	KVBudget    int64         `help:"KV cache bytes one model may hold, all its parallel slots at num_ctx (more: 400; negative: no bound)." name:"kv-budget" default:"8589934592"`
}

const defaultAddr = "127.0.0.1:11434"

// listenAddr resolves the address: the flag, else EDGELLM_HOST (which may
// carry a scheme or omit the port, as OLLAMA_HOST may), else the default.
func listenAddr(flag string) string {
	a := flag
	if a == "" {
		a = os.Getenv("EDGELLM_HOST")
	}
	if a == "" {
		return defaultAddr
	}
	a = strings.TrimPrefix(strings.TrimPrefix(a, "http://"), "https://")
	a = strings.TrimSuffix(a, "/")
	if _, _, err := net.SplitHostPort(a); err != nil {
		a = net.JoinHostPort(a, "11434")
	}
	return a
}

// modelsDir resolves the models directory: the flag, else the store's
// (EDGELLM_MODELS, else ~/.edgellm/models).
func modelsDir(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	return store.Dir()
}

// makeModelsDir creates the models folder (and its parents) when missing, as
// Ollama does, so that a fresh machine can serve and pull at once.
func makeModelsDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("models directory: %w", err)
	}
	return nil
}

// exposureWarning is the warning for a listener beyond loopback without an
// API key (anyone who can reach the port can use the models), else "".
func exposureWarning(addr net.Addr, hasKey bool) string {
	ap, err := netip.ParseAddrPort(addr.String())
	if hasKey || (err == nil && ap.Addr().Unmap().IsLoopback()) {
		return ""
	}
	return "listening beyond loopback without an API key: anyone who can reach " + addr.String() +
		" can use the models; set --api-key or EDGELLM_API_KEY"
}

func (c *serveCmd) Run(log *slog.Logger) error {
	dir, err := modelsDir(c.Models)
	if err != nil {
		return err
	}
	if err := makeModelsDir(dir); err != nil {
		return err
	}
	srv, err := server.New(server.Config{
		ModelsDir: dir,
		Pull:      pull.Pull,
		Engine:    engine.Options{Backend: c.Backend, Threads: c.Threads},
		KeepAlive: c.KeepAlive,
		MaxQueue:  c.MaxQueue,
		MaxLoaded: c.MaxLoaded,
		Parallel:  c.Parallel,
		Logger:    log,

		APIKey:      c.APIKey,
		MetricsAuth: c.MetricsAuth,
		MaxBody:     c.MaxBody,
		BodyTimeout: c.BodyTimeout,
		KVBudget:    c.KVBudget,
		Origins:     server.OriginsFromEnv(),
	})
	if err != nil {
		return err
	}
	addr := listenAddr(c.Addr)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("serving", "addr", ln.Addr().String(), "models", dir, "backend", c.Backend, "api_key", c.APIKey != "")
	if warn := exposureWarning(ln.Addr(), c.APIKey != ""); warn != "" {
		log.Warn(warn)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return srv.Serve(ctx, ln)
}
