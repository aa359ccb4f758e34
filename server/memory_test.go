package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgellm/edgellm/engine"
)

// childEnv makes the test binary a bare server (TestServeChild) on the
// models directory it names, so that its peak RSS is the server's alone.
const childEnv = "EDGELLM_TEST_SERVE_CHILD"

// TestServeChild is the server process of TestBoundedMemory: it serves
// until its stdin closes, after printing its address.
func TestServeChild(t *testing.T) {
	dir := os.Getenv(childEnv)
	if dir == "" {
		t.Skip("the server process of TestBoundedMemory")
	}
	s, err := New(Config{ModelsDir: dir, Engine: engine.Options{Backend: "cpu", Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("ADDR %s\n", ln.Addr())
	ctx, cancel := context.WithCancel(context.Background())
	go func() { io.Copy(io.Discard, os.Stdin); cancel() }()
	if err := s.Serve(ctx, ln); err != nil {
		t.Fatal(err)
	}
}

// vmHWM is a process's peak resident set in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// Sixteen concurrent 10 MB prompts on a 512-position model all get a 4xx,
// and the server's peak RSS stays under 1 GiB over the whole test: the
// work and memory a request causes are bounded by the context, not by the
// body.
func TestBoundedMemory(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	if testing.Short() {
		t.Skip("sends 160 MB")
	}
	dir := modelsDir(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestServeChild$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
		}
	}()
	var addr string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "ADDR "); ok {
			addr = a
			break
		}
	}
	if addr == "" {
		t.Fatal("the server process printed no address")
	}
	go io.Copy(io.Discard, stdout)
	pid := cmd.Process.Pid
	before := vmHWM(t, pid)

	// Varied text (words, spaces, non-ASCII) so that no tokenizer shortcut
	// applies.
	var sb strings.Builder
	for i := 0; sb.Len() < 10<<20; i++ {
		fmt.Fprintf(&sb, "Once upon a time %d, a cat named Tom — «ça va» — saw %x birds.\n", i, i*7919)
	}
	text := sb.String()
	bodies := []func() any{
		func() any { return map[string]any{"model": "stories", "prompt": text, "stream": false} },
		func() any { return map[string]any{"model": "stories", "prompt": text, "raw": true} },
		func() any {
			return map[string]any{"model": "stories", "messages": []any{map[string]any{"role": "user", "content": text}}}
		},
		func() any { return map[string]any{"model": "stories", "prompt": text, "max_tokens": 5} },
	}
	paths := []string{"/api/generate", "/api/generate", "/api/chat", "/v1/completions"}
	var wg sync.WaitGroup
	codes := make([]int, 16)
	msgs := make([]string, 16)
	for i := range 16 {
		b, err := json.Marshal(bodies[i%4]())
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Post("http://"+addr+paths[i%4], "application/json", bytes.NewReader(b))
			if err != nil {
				msgs[i] = err.Error()
				return
			}
			defer resp.Body.Close()
			rb, _ := io.ReadAll(resp.Body)
			codes[i], msgs[i] = resp.StatusCode, string(rb)
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c < 400 || c >= 500 {
			t.Errorf("request %d (%s): %d %.200s", i, paths[i%4], c, msgs[i])
		}
	}
	// The model was loaded and a small request still works.
	resp, err := http.Post("http://"+addr+"/api/generate", "application/json",
		strings.NewReader(`{"model":"stories","prompt":"Once","stream":false,"options":{"num_predict":3}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("small request after: %d", resp.StatusCode)
	}
	peak := vmHWM(t, pid)
	t.Logf("server VmHWM: %d MiB at start, %d MiB at the end (16 x %d MB prompts)", before>>20, peak>>20, len(text)>>20)
	if peak >= 1<<30 {
		t.Errorf("server peak RSS %d MiB, want < 1024", peak>>20)
	}
}
