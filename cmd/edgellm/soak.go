package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The soak run of `edgellm loadtest --soak DURATION`: a bounded mix of what
// a long-running server sees (streaming and not, on both APIs, clients
// that hang up mid-stream, bad requests, model reloads by keep_alive 0 and
// by another num_ctx), with the process's RSS sampled over time and its
// goroutines compared at the start and the end.

// soakKinds are the request kinds and their weights.
var soakKinds = []struct {
	name   string
	weight int
}{
	{"ollama_generate_stream", 20},
	{"ollama_chat", 10},
	{"openai_chat_stream", 15},
	{"openai_completions", 15},
	{"disconnect_mid_stream", 12},
	{"bad_request", 18},
	{"reload_keep_alive_0", 3},
	{"reload_num_ctx", 7},
}

// soakStats counts requests by kind and outcome.
type soakStats struct {
	mu     sync.Mutex
	counts map[string]map[string]int
}

func (s *soakStats) add(kind, outcome string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.counts[kind] == nil {
		s.counts[kind] = map[string]int{}
	}
	s.counts[kind][outcome]++
}

// rssBytes is this process's resident set (Linux; 0 elsewhere).
func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func (c *loadtestCmd) soak(hc *http.Client, base, model string, clients int, inProcess bool) *soakStats {
	goStart := runtime.NumGoroutine()
	rssStart := rssBytes()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), c.Soak)
	defer cancel()
	st := &soakStats{counts: map[string]map[string]int{}}

	type sample struct {
		at  time.Duration
		rss int64
		gr  int
	}
	var samples []sample
	every := max(c.Soak/12, time.Second)
	sampDone := make(chan struct{})
	go func() {
		defer close(sampDone)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				samples = append(samples, sample{time.Since(start), rssBytes(), runtime.NumGoroutine()})
			}
		}
	}()

	total := 0
	for _, k := range soakKinds {
		total += k.weight
	}
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 42))
			for ctx.Err() == nil {
				n := rng.IntN(total)
				kind := soakKinds[0].name
				for _, k := range soakKinds {
					if n < k.weight {
						kind = k.name
						break
					}
					n -= k.weight
				}
				outcome := c.soakOne(ctx, hc, base, model, kind, rng)
				if ctx.Err() != nil && outcome != "ok" {
					outcome = "cut_by_soak_end"
				}
				st.add(kind, outcome)
			}
		})
	}
	wg.Wait()
	<-sampDone
	wall := time.Since(start)
	// Let connections and handlers wind down before counting goroutines.
	hc.CloseIdleConnections()
	goEnd := runtime.NumGoroutine()
	for deadline := time.Now().Add(10 * time.Second); goEnd > goStart && time.Now().Before(deadline); goEnd = runtime.NumGoroutine() {
		time.Sleep(100 * time.Millisecond)
	}
	rssEnd := rssBytes()

	fmt.Printf("soak: %v, %d clients, model %s, %s\n", wall.Round(time.Second), clients, model, base)
	where := "this process (server and clients)"
	if !inProcess {
		where = "this process (clients only: the server runs elsewhere)"
	}
	fmt.Printf("RSS of %s:\n  %8s %10s %10s\n  %8s %10.1f %10d\n", where, "t", "RSS MiB", "goroutines", "0s", float64(rssStart)/(1<<20), goStart)
	peak := rssStart
	for _, s := range samples {
		peak = max(peak, s.rss)
		fmt.Printf("  %8s %10.1f %10d\n", s.at.Round(time.Second), float64(s.rss)/(1<<20), s.gr)
	}
	peak = max(peak, rssEnd)
	fmt.Printf("RSS start %.1f MiB, end %.1f MiB, peak sampled %.1f MiB\n", float64(rssStart)/(1<<20), float64(rssEnd)/(1<<20), float64(peak)/(1<<20))
	fmt.Printf("goroutines: %d at the start, %d at the end (idle connections closed)\n", goStart, goEnd)
	fmt.Printf("requests by kind and outcome:\n")
	kinds := make([]string, 0, len(st.counts))
	for k := range st.counts {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	sum := 0
	for _, k := range kinds {
		var parts []string
		outs := make([]string, 0, len(st.counts[k]))
		for o := range st.counts[k] {
			outs = append(outs, o)
		}
		sort.Strings(outs)
		for _, o := range outs {
			parts = append(parts, fmt.Sprintf("%s %d", o, st.counts[k][o]))
			sum += st.counts[k][o]
		}
		fmt.Printf("  %-24s %s\n", k, strings.Join(parts, ", "))
	}
	fmt.Printf("  %-24s %d (%.1f/s)\n", "total", sum, float64(sum)/wall.Seconds())
	return st
}

// soakBad are bad requests and the status each must get.
var soakBad = []struct {
	path, body string
	status     int
}{
	{"/api/generate", `{"model":`, 400},
	{"/api/generate", `{"model":"nope","prompt":"x"}`, 404},
	{"/v1/chat/completions", `{"model":"MODEL","max_tokens":0,"messages":[{"role":"user","content":"x"}]}`, 400},
	{"/v1/chat/completions", `{"model":"MODEL","n":3,"messages":[{"role":"user","content":"x"}]}`, 400},
	{"/api/generate", `{"model":"MODEL","prompt":"x","options":{"top_p":7}}`, 400},
	{"/api/chat", `{"model":"MODEL","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]}`, 400},
	{"/api/generate", `{"model":"MODEL","raw":true,"prompt":"LONG"}`, 400},
}

// soakOne runs one request of a kind and names its outcome.
func (c *loadtestCmd) soakOne(ctx context.Context, hc *http.Client, base, model, kind string, rng *rand.Rand) string {
	np := 1 + rng.IntN(c.NumPredict)
	opts := map[string]any{"num_predict": np, "temperature": 0.8, "seed": rng.IntN(1000)}
	var path string
	var body any
	stream, hangUp := false, false
	switch kind {
	case "ollama_generate_stream":
		path, stream = "/api/generate", true
		body = map[string]any{"model": model, "prompt": c.Prompt, "raw": true, "options": opts}
	case "ollama_chat":
		path = "/api/chat"
		body = map[string]any{"model": model, "stream": false, "options": opts,
			"messages": []any{map[string]any{"role": "user", "content": c.Prompt}}}
	case "openai_chat_stream":
		path, stream = "/v1/chat/completions", true
		body = map[string]any{"model": model, "stream": true, "max_tokens": np,
			"messages": []any{map[string]any{"role": "user", "content": c.Prompt}}}
	case "openai_completions":
		path = "/v1/completions"
		body = map[string]any{"model": model, "prompt": c.Prompt, "max_tokens": np}
	case "disconnect_mid_stream":
		path, stream, hangUp = "/api/generate", true, true
		opts["num_predict"] = c.NumPredict * 4
		body = map[string]any{"model": model, "prompt": c.Prompt, "raw": true, "options": opts}
	case "bad_request":
		b := soakBad[rng.IntN(len(soakBad))]
		raw := strings.ReplaceAll(b.body, "MODEL", model)
		raw = strings.ReplaceAll(raw, "LONG", strings.Repeat("a", 1<<20))
		code, err := post(ctx, hc, base+b.path, []byte(raw), func(r io.Reader) error { _, err := io.Copy(io.Discard, r); return err })
		switch {
		case err != nil:
			return "transport_error"
		case code == b.status:
			return "refused_as_expected"
		}
		return fmt.Sprintf("status_%d_want_%d", code, b.status)
	case "reload_keep_alive_0":
		path = "/api/generate"
		body = map[string]any{"model": model, "keep_alive": 0}
	case "reload_num_ctx":
		path = "/api/generate"
		ctxs := []int{256, 512}
		opts["num_ctx"] = ctxs[rng.IntN(len(ctxs))]
		opts["num_predict"] = min(np, 8)
		body = map[string]any{"model": model, "prompt": c.Prompt, "raw": true, "stream": false, "options": opts}
	}
	b, _ := json.Marshal(body)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	code, err := post(rctx, hc, base+path, b, func(r io.Reader) error {
		if !stream {
			_, err := io.Copy(io.Discard, r)
			return err
		}
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for lines := 0; sc.Scan(); lines++ {
			line := sc.Bytes()
			if bytes.Contains(line, []byte(`"error"`)) {
				return errors.New("stream error")
			}
			if hangUp && lines == 2 {
				cancel() // the client goes away mid-stream
				return errHungUp
			}
		}
		return sc.Err()
	})
	switch {
	case errors.Is(err, errHungUp):
		return "hung_up"
	case err != nil && err.Error() == "stream error":
		return "stream_error"
	case err != nil:
		return "transport_error"
	case code == 200:
		return "ok"
	}
	return fmt.Sprintf("status_%d", code)
}

var errHungUp = errors.New("hung up")

// post sends body and hands the response body to read.
func post(ctx context.Context, hc *http.Client, url string, body []byte, read func(io.Reader) error) (int, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if err := read(resp.Body); err != nil {
		return resp.StatusCode, err
	}
	return resp.StatusCode, nil
}
