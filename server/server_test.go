package server

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgellm/edgellm/engine"
	"github.com/edgellm/edgellm/internal/testfiles"
)

// storiesPath is the stories260K model's absolute path.
func storiesPath(t testing.TB) string {
	t.Helper()
	return testfiles.Path(t, "models/stories260K/stories260K-f32.gguf")
}

// modelsDir makes a models directory holding "stories.gguf", a symbolic
// link to the stories260K file.
func modelsDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Symlink(storiesPath(t), filepath.Join(dir, "stories.gguf")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// newTestServer makes a server on a models dir with stories260K, one
// CPU thread (the machine has two cores and tests run in parallel).
func newTestServer(t testing.TB, mod func(*Config)) *Server {
	t.Helper()
	cfg := Config{ModelsDir: modelsDir(t), Engine: engine.Options{Backend: "cpu", Threads: 1}}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// holdFirstToken makes the first token generated on s wait until release
// is closed (20 s at most); holding is closed when it starts waiting.
func holdFirstToken(s *Server) (holding, release chan struct{}) {
	holding, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	s.afterToken = func(ctx context.Context) {
		once.Do(func() {
			close(holding)
			select {
			case <-release:
			case <-time.After(20 * time.Second):
			}
		})
	}
	return holding, release
}

// startServer serves s on 127.0.0.1:0 and returns its base URL.
func startServer(t testing.TB, s *Server) *url.URL {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	u, _ := url.Parse("http://" + ln.Addr().String())
	return u
}

// referenceGreedy reads llama.cpp's greedy ids and text for "Once upon a time".
func referenceGreedy(t testing.TB) (ids []int32, text string) {
	t.Helper()
	b, err := os.ReadFile(testfiles.Path(t, "models/stories260K/reference-greedy.md"))
	if err != nil {
		t.Fatal(err)
	}
	sec := string(b)
	sec = sec[strings.Index(sec, `## prompt: "Once upon a time"`):]
	m := regexp.MustCompile(`generated_ids \(\d+\): ([0-9 ]+)`).FindStringSubmatch(sec)
	if m == nil {
		t.Fatal("reference-greedy.md: no generated_ids")
	}
	for _, f := range strings.Fields(m[1]) {
		n, _ := strconv.Atoi(f)
		ids = append(ids, int32(n))
	}
	tm := regexp.MustCompile(`generated_text \(C-escaped\): "(.*)"`).FindStringSubmatch(sec)
	if tm == nil {
		t.Fatal("reference-greedy.md: no generated_text")
	}
	text = strings.NewReplacer(`\n`, "\n", `\"`, `"`).Replace(tm[1])
	return ids, text
}

// metricValue reads one sample from /metrics ("" when absent).
func metricValue(t testing.TB, base *url.URL, name string) string {
	t.Helper()
	resp, err := http.Get(base.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return metricLine(sb.String(), name)
}

func metricLine(text, name string) string {
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, name+" ") {
			return strings.TrimPrefix(line, name+" ")
		}
	}
	return ""
}

func readAll(resp *http.Response) (string, error) {
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			if err.Error() == "EOF" {
				return sb.String(), nil
			}
			return sb.String(), err
		}
	}
}

func waitABit() { time.Sleep(time.Millisecond) }
