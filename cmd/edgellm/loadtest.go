package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgellm/edgellm/engine"
	"github.com/edgellm/edgellm/server"
	"github.com/edgellm/edgellm/store"
)

type loadtestCmd struct {
	URL         string        `help:"Server to load (loopback only); empty starts one in this process on 127.0.0.1."`
	Model       string        `help:"With --url: the model name. Without: a GGUF file to serve." short:"m" required:""`
	Clients     string        `help:"Concurrency levels, comma-separated." default:"1,4,16"`
	Requests    int           `help:"Requests per level (at least one per client)." default:"32"`
	MaxTime     time.Duration `help:"Time limit per level." name:"max-time" default:"60s"`
	NumPredict  int           `help:"Tokens generated per request." name:"num-predict" default:"32"`
	Prompt      string        `help:"Prompt of every request." default:"Once upon a time"`
	Backend     string        `help:"Backend of an in-process server: auto, cpu or cuda." enum:"auto,cpu,cuda" default:"auto"`
	Threads     int           `help:"CPU threads of an in-process server (default: the cores this process may use)."`
	Parallel    int           `help:"Requests per model generating at once in an in-process server (1: one at a time, no batching)." default:"4"`
	Soak        time.Duration `help:"Instead of the levels: a soak run this long (mixed APIs, streaming and not, hang-ups, bad requests, reloads), reporting RSS over time, goroutines and requests by outcome."`
	SoakClients int           `help:"Concurrent clients of the soak run." name:"soak-clients" default:"8"`
}

// loadResult is one concurrency level's figures.
type loadResult struct {
	clients, done, failed int
	wall                  time.Duration
	tokens                int
	ttft                  []time.Duration
}

func (c *loadtestCmd) Run(log *slog.Logger) error {
	levels, err := parseLevels(c.Clients)
	if err != nil {
		return err
	}
	// Bounded by construction: a load test must stop by itself.
	if c.Requests <= 0 || c.Requests > 100000 || c.NumPredict <= 0 || c.NumPredict > 1<<16 || c.MaxTime <= 0 || c.MaxTime > time.Hour {
		return errors.New("loadtest: --requests (1..100000), --num-predict (1..65536) and --max-time (up to 1h) must be in range")
	}
	if c.Soak < 0 || c.Soak > 24*time.Hour || c.SoakClients <= 0 || c.SoakClients > 1024 {
		return errors.New("loadtest: --soak (up to 24h) and --soak-clients (1..1024) must be in range")
	}
	base, model := c.URL, c.Model
	if base == "" {
		src, err := resolveModel(c.Model)
		if err != nil {
			return err
		}
		stop, addr, name, err := startLocal(log, src, c.Backend, c.Threads, c.Parallel)
		if err != nil {
			return err
		}
		defer stop()
		base, model = "http://"+addr, name
	} else if err := checkLoopback(base); err != nil {
		return err
	}
	base = strings.TrimSuffix(base, "/")
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

	// One warm-up request loads the model, so level 1 does not time the load.
	wctx, wcancel := context.WithTimeout(context.Background(), c.MaxTime)
	_, _, err = c.one(wctx, hc, base, model)
	wcancel()
	if err != nil {
		return fmt.Errorf("loadtest: warm-up request: %w", err)
	}
	if c.Soak > 0 {
		c.soak(hc, base, model, c.SoakClients, c.URL == "")
		return nil
	}
	fmt.Printf("model %s, prompt %q, %d tokens per request, greedy, %s\n", model, c.Prompt, c.NumPredict, base)
	fmt.Printf("%8s %9s %7s %10s %10s %12s %12s\n", "clients", "requests", "failed", "req/s", "tok/s", "TTFT p50", "TTFT p99")
	for _, n := range levels {
		r := c.level(hc, base, model, n)
		slices.Sort(r.ttft)
		secs := r.wall.Seconds()
		fmt.Printf("%8d %9d %7d %10.2f %10.1f %12s %12s\n", n, r.done, r.failed,
			float64(r.done)/secs, float64(r.tokens)/secs, pct(r.ttft, 50), pct(r.ttft, 99))
	}
	return nil
}

func parseLevels(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 || n > 1024 {
			return nil, fmt.Errorf("loadtest: bad concurrency level %q (1..1024)", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// checkLoopback refuses anything but a loopback address: this is a tool to
// measure one's own server, not to load someone else's.
func checkLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("loadtest: bad --url %q", raw)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("loadtest: %s is not a loopback address", host)
	}
	return nil
}

// startLocal serves one model: a store model from its store folder, a file
// from a temporary folder holding a link to it.
func startLocal(log *slog.Logger, src *store.Model, backend string, threads, parallel int) (stop func(), addr, name string, err error) {
	dir, name := src.Dir, src.Name
	cleanup := func() {}
	if dir == "" {
		abs, err := filepath.Abs(src.Path)
		if err != nil {
			return nil, "", "", err
		}
		if dir, err = os.MkdirTemp("", "edgellm-loadtest-"); err != nil {
			return nil, "", "", err
		}
		cleanup = func() { os.RemoveAll(dir) }
		name = strings.TrimSuffix(filepath.Base(abs), ".gguf")
		if err := os.Symlink(abs, filepath.Join(dir, name+".gguf")); err != nil {
			cleanup()
			return nil, "", "", err
		}
	}
	srv, err := server.New(server.Config{ModelsDir: dir, Engine: engine.Options{Backend: backend, Threads: threads},
		KeepAlive: -1, Parallel: parallel, Logger: log})
	if err != nil {
		cleanup()
		return nil, "", "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cleanup()
		return nil, "", "", err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(done) }()
	return func() { cancel(); <-done; cleanup() }, ln.Addr().String(), name, nil
}

// level runs n clients until the level's requests are done or its time is up.
func (c *loadtestCmd) level(hc *http.Client, base, model string, n int) loadResult {
	total := max(c.Requests, n)
	ctx, cancel := context.WithTimeout(context.Background(), c.MaxTime)
	defer cancel()
	var next atomic.Int64
	var mu sync.Mutex
	r := loadResult{clients: n}
	var wg sync.WaitGroup
	start := time.Now()
	for range n {
		wg.Go(func() {
			for next.Add(1) <= int64(total) && ctx.Err() == nil {
				ttft, toks, err := c.one(ctx, hc, base, model)
				mu.Lock()
				if err != nil {
					r.failed++
				} else {
					r.done++
					r.tokens += toks
					r.ttft = append(r.ttft, ttft)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	r.wall = time.Since(start)
	return r
}

// one streams a greedy /api/generate and returns the time to its first
// token and its generated-token count.
func (c *loadtestCmd) one(ctx context.Context, hc *http.Client, base, model string) (time.Duration, int, error) {
	body, _ := json.Marshal(map[string]any{
		"model": model, "prompt": c.Prompt, "raw": true,
		"options": map[string]any{"temperature": 0, "num_predict": c.NumPredict},
	})
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, "POST", base+"/api/generate", bytes.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, 0, fmt.Errorf("status %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	var ttft time.Duration
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var ch struct {
			Response  string `json:"response"`
			Done      bool   `json:"done"`
			EvalCount int    `json:"eval_count"`
			Error     string `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &ch); err != nil {
			return 0, 0, err
		}
		if ch.Error != "" {
			return 0, 0, errors.New(ch.Error)
		}
		if ttft == 0 && (ch.Response != "" || ch.Done) {
			ttft = time.Since(start)
		}
		if ch.Done {
			return ttft, ch.EvalCount, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	return 0, 0, errors.New("stream ended without a final object")
}

func pct(d []time.Duration, p float64) string {
	if len(d) == 0 {
		return "-"
	}
	i := int(p / 100 * float64(len(d)-1))
	return fmt.Sprintf("%.2f ms", float64(d[i])/float64(time.Millisecond))
}
