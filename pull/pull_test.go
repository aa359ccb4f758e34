package pull

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgellm/edgellm/store"
)

// quick are test options: no waiting between retries.
func quick(o Options) Options {
	o.retryWait = time.Millisecond
	return o
}

// statuses records the progress statuses, each once in order of first sight.
func statuses(list *[]string) func(Progress) {
	return func(p Progress) {
		if !slices.Contains(*list, p.Status) {
			*list = append(*list, p.Status)
		}
	}
}

func readBlob(t *testing.T, dir, digest string) []byte {
	t.Helper()
	p, err := store.BlobPath(dir, digest)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("blob %s: %v", digest, err)
	}
	return b
}

func readManifest(t *testing.T, dir string, n store.Name) *store.Manifest {
	t.Helper()
	b, err := os.ReadFile(store.ManifestPath(dir, n))
	if err != nil {
		t.Fatal(err)
	}
	var m store.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return &m
}

// hfRepo is a repository of several GGUF files, listed two to a page.
func hfRepo(t *testing.T) (*hub, *cdn, map[string][]byte) {
	c := newCDN(t)
	h := newHub(t, c, "Owner/Repo")
	files := map[string][]byte{
		"ggml-model-Q4_K_M.gguf": randBytes(1, 5000),
		"ggml-model-i2_s.gguf":   randBytes(2, 70000),
		"ggml-model-f16.gguf":    randBytes(3, 9000),
		"mmproj-model-f16.gguf":  randBytes(4, 3000),
	}
	h.files = append(h.files, treeEntry{Type: "file", Path: "README.md", Size: 10}, treeEntry{Type: "directory", Path: "sub"})
	for _, name := range []string{"ggml-model-Q4_K_M.gguf", "ggml-model-i2_s.gguf", "ggml-model-f16.gguf", "mmproj-model-f16.gguf"} {
		c.add(files[name])
		h.files = append(h.files, lfsEntry(name, files[name]))
	}
	return h, c, files
}

func TestHFPull(t *testing.T) {
	h, c, files := hfRepo(t)
	dir := t.TempDir()
	var seen []string
	n, m, err := Pull(context.Background(), dir, "hf.co/Owner/Repo", quick(Options{HFEndpoint: h.srv.URL, HFToken: "secret", Progress: statuses(&seen)}))
	if err != nil {
		t.Fatal(err)
	}
	if n.String() != "hf.co/Owner/Repo:latest" {
		t.Errorf("name %q", n)
	}
	want := files["ggml-model-i2_s.gguf"] // the default order prefers I2_S
	if len(m.Layers) != 1 || m.Layers[0].MediaType != store.MediaModel || m.Layers[0].Digest != digestOf(want) || m.Layers[0].Size != int64(len(want)) {
		t.Fatalf("manifest layers %+v", m.Layers)
	}
	if !bytes.Equal(readBlob(t, dir, m.Layers[0].Digest), want) {
		t.Error("model blob differs from the file served")
	}
	var cfg map[string]string
	if err := json.Unmarshal(readBlob(t, dir, m.Config.Digest), &cfg); err != nil || cfg["hf_file"] != "ggml-model-i2_s.gguf" || cfg["file_type"] != "I2_S" {
		t.Errorf("config blob %v, %v", cfg, err)
	}
	if got := readManifest(t, dir, n); got.Layers[0] != m.Layers[0] || got.Config != m.Config {
		t.Errorf("manifest on disk %+v, returned %+v", got, m)
	}
	if h.pages != 3 {
		t.Errorf("listing read %d pages, want 3", h.pages)
	}
	for _, a := range h.seenAuth() {
		if a != "Bearer secret" {
			t.Errorf("hub saw Authorization %q", a)
		}
	}
	if _, auths := c.requests(); len(auths) != 1 || auths[0] != "" {
		t.Errorf("CDN saw Authorization %q, want one request without", auths)
	}
	if want := []string{"pulling manifest", "pulling " + m.Layers[0].Digest[7:19], "verifying sha256 digest", "writing manifest", "success"}; !slices.Equal(seen, want) {
		t.Errorf("statuses %q, want %q", seen, want)
	}
	if _, err := os.Stat(store.ManifestPath(dir, n)); err != nil {
		t.Error(err)
	}
	// Nothing but the blobs and the manifest is left behind.
	ents, _ := os.ReadDir(filepath.Join(dir, "blobs"))
	for _, e := range ents {
		if strings.Contains(e.Name(), "partial") || strings.Contains(e.Name(), "tmp") {
			t.Errorf("left behind %s", e.Name())
		}
	}
}

func TestHFQuantTagAndPresent(t *testing.T) {
	h, c, files := hfRepo(t)
	dir := t.TempDir()
	opt := quick(Options{HFEndpoint: h.srv.URL})
	n, m, err := Pull(context.Background(), dir, "hf.co/Owner/Repo:q4_k_m", opt)
	if err != nil {
		t.Fatal(err)
	}
	if m.Layers[0].Digest != digestOf(files["ggml-model-Q4_K_M.gguf"]) {
		t.Errorf("picked %s", m.Layers[0].Digest)
	}
	// The name is kept as typed, so the manifest's path has the tag's case.
	if n.Tag != "q4_k_m" || !strings.HasSuffix(store.ManifestPath(dir, n), filepath.FromSlash("Owner/Repo/q4_k_m")) {
		t.Errorf("name %+v, path %s", n, store.ManifestPath(dir, n))
	}
	// A second pull finds the verified blob and fetches nothing.
	before, _ := c.requests()
	var last Progress
	opt.Progress = func(p Progress) {
		if p.Digest != "" {
			last = p
		}
	}
	if _, _, err := Pull(context.Background(), dir, "hf.co/Owner/Repo:Q4_K_M", opt); err != nil {
		t.Fatal(err)
	}
	if after, _ := c.requests(); len(after) != len(before) {
		t.Errorf("second pull made %d CDN requests", len(after)-len(before))
	}
	if last.Completed != last.Total || last.Total != int64(len(files["ggml-model-Q4_K_M.gguf"])) {
		t.Errorf("progress of a present blob %+v", last)
	}
}

func TestHFErrors(t *testing.T) {
	h, _, _ := hfRepo(t)
	dir := t.TempDir()
	ctx := context.Background()
	_, _, err := Pull(ctx, dir, "hf.co/Owner/Missing", quick(Options{HFEndpoint: h.srv.URL}))
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "Repository not found") {
		t.Errorf("missing repository: %v", err)
	}
	_, _, err = Pull(ctx, dir, "hf.co/Owner/Repo:Q3_K_S", quick(Options{HFEndpoint: h.srv.URL}))
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "ggml-model-Q4_K_M.gguf") {
		t.Errorf("missing quant: %v", err)
	}
	h.private = true
	_, _, err = Pull(ctx, dir, "hf.co/Owner/Repo", quick(Options{HFEndpoint: h.srv.URL}))
	if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "HF_TOKEN") {
		t.Errorf("private repository without a token: %v", err)
	}
	// The token comes from $HF_TOKEN, the endpoint from $HF_ENDPOINT.
	t.Setenv("HF_TOKEN", "secret")
	t.Setenv("HF_ENDPOINT", h.srv.URL)
	if _, _, err := Pull(ctx, dir, "hf.co/Owner/Repo", quick(Options{})); err != nil {
		t.Errorf("with $HF_TOKEN and $HF_ENDPOINT: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "manifests", "hf.co", "Owner", "Missing")); err == nil {
		t.Error("a failed pull wrote a manifest")
	}
}

func TestHFDigestMismatch(t *testing.T) {
	h, c, _ := hfRepo(t)
	// The listing's sha256 is of other bytes than the CDN sends.
	served := randBytes(9, 4000)
	claimed := randBytes(10, 4000)
	e := lfsEntry("bad-Q8_0.gguf", claimed)
	h.files = append(h.files, e)
	c.mu.Lock()
	c.blobs[digestOf(claimed)] = served
	c.mu.Unlock()
	dir := t.TempDir()
	_, _, err := Pull(context.Background(), dir, "hf.co/Owner/Repo:Q8_0", quick(Options{HFEndpoint: h.srv.URL}))
	if !errors.Is(err, ErrDigest) || !strings.Contains(err.Error(), "deleted") {
		t.Fatalf("err = %v, want a digest mismatch that says the partial file was deleted", err)
	}
	p, _ := store.BlobPath(dir, digestOf(claimed))
	for _, f := range []string{p, p + "-partial"} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is left: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "manifests")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a manifest was written: %v", err)
	}
}

// TestResumeAfterCut cuts the connection mid-file: the partial file stays,
// and the next Pull asks for the rest with Range and verifies the whole.
func TestResumeAfterCut(t *testing.T) {
	h, c, files := hfRepo(t)
	want := files["ggml-model-i2_s.gguf"]
	dir := t.TempDir()
	opt := quick(Options{HFEndpoint: h.srv.URL, Retries: -1})
	c.cutAfter = 30000
	_, _, err := Pull(context.Background(), dir, "hf.co/Owner/Repo", opt)
	if err == nil || !isRetryable(err) {
		t.Fatalf("cut transfer: err = %v", err)
	}
	p, _ := store.BlobPath(dir, digestOf(want))
	fi, err := os.Stat(p + "-partial")
	if err != nil || fi.Size() == 0 || fi.Size() > 30000 {
		t.Fatalf("partial file after the cut: %v, %v", fi, err)
	}
	have := fi.Size()
	_, m, err := Pull(context.Background(), dir, "hf.co/Owner/Repo", opt)
	if err != nil {
		t.Fatal(err)
	}
	ranges, _ := c.requests()
	if len(ranges) != 2 || ranges[0] != "" || ranges[1] != "bytes="+strconv.FormatInt(have, 10)+"-" {
		t.Errorf("CDN requests' Range %q, want none then bytes=%d-", ranges, have)
	}
	if !bytes.Equal(readBlob(t, dir, m.Layers[0].Digest), want) {
		t.Error("resumed blob differs")
	}
	if _, err := os.Stat(p + "-partial"); !errors.Is(err, os.ErrNotExist) {
		t.Error("partial file left after success")
	}
}

// TestAutoRetry: one Pull resumes by itself after a cut.
func TestAutoRetry(t *testing.T) {
	h, c, files := hfRepo(t)
	c.cutAfter = 20000
	dir := t.TempDir()
	_, m, err := Pull(context.Background(), dir, "hf.co/Owner/Repo", quick(Options{HFEndpoint: h.srv.URL}))
	if err != nil {
		t.Fatal(err)
	}
	ranges, _ := c.requests()
	if len(ranges) != 2 || !strings.HasPrefix(ranges[1], "bytes=") {
		t.Errorf("Range headers %q, want a resumed second request", ranges)
	}
	if !bytes.Equal(readBlob(t, dir, m.Layers[0].Digest), files["ggml-model-i2_s.gguf"]) {
		t.Error("blob differs")
	}
}

// A server that ignores Range (200, the whole file) makes the pull start over.
func TestServerIgnoresRange(t *testing.T) {
	h, c, files := hfRepo(t)
	want := files["ggml-model-i2_s.gguf"]
	dir := t.TempDir()
	p, _ := store.BlobPath(dir, digestOf(want))
	os.MkdirAll(filepath.Dir(p), 0o755)
	// A stale partial file whose bytes are wrong: only a restart can verify.
	os.WriteFile(p+"-partial", randBytes(77, 1000), 0o644)
	c.noRange = true
	_, m, err := Pull(context.Background(), dir, "hf.co/Owner/Repo", quick(Options{HFEndpoint: h.srv.URL}))
	if err != nil {
		t.Fatal(err)
	}
	if ranges, _ := c.requests(); len(ranges) != 1 || ranges[0] != "bytes=1000-" {
		t.Errorf("Range headers %q", ranges)
	}
	if !bytes.Equal(readBlob(t, dir, m.Layers[0].Digest), want) {
		t.Error("blob differs")
	}
}

// A blob longer than the listing says is refused before it is written.
func TestSizeChecked(t *testing.T) {
	h, c, _ := hfRepo(t)
	c.extra = 10
	c.noRange = true
	_, _, err := Pull(context.Background(), t.TempDir(), "hf.co/Owner/Repo", quick(Options{HFEndpoint: h.srv.URL}))
	if err == nil || !strings.Contains(err.Error(), "the manifest says") {
		t.Fatalf("err = %v", err)
	}
}

func TestCancel(t *testing.T) {
	h, c, _ := hfRepo(t)
	hang := make(chan struct{})
	defer close(hang)
	c.hang = hang
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opt := quick(Options{HFEndpoint: h.srv.URL, Progress: func(p Progress) {
		if p.Completed > 0 {
			cancel()
		}
	}})
	start := time.Now()
	_, _, err := Pull(ctx, dir, "hf.co/Owner/Repo", opt)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cancelled pull took %v", d)
	}
	if ranges, _ := c.requests(); len(ranges) != 1 {
		t.Errorf("cancelled pull retried: %q", ranges)
	}
}

// TestStall: a server that stops sending without closing is given up on
// after the stall time and the transfer resumed.
func TestStall(t *testing.T) {
	h, c, files := hfRepo(t)
	hang := make(chan struct{})
	defer close(hang)
	c.hang = hang
	dir := t.TempDir()
	opt := quick(Options{HFEndpoint: h.srv.URL})
	opt.stall = 200 * time.Millisecond
	_, m, err := Pull(context.Background(), dir, "hf.co/Owner/Repo", opt)
	if err != nil {
		t.Fatal(err)
	}
	if ranges, _ := c.requests(); len(ranges) != 2 || ranges[1] != "bytes=35000-" {
		t.Errorf("Range headers %q, want a second request for the second half", ranges)
	}
	if !bytes.Equal(readBlob(t, dir, m.Layers[0].Digest), files["ggml-model-i2_s.gguf"]) {
		t.Error("blob differs")
	}
}

func TestPickGGUF(t *testing.T) {
	f := func(paths ...string) []hfFile {
		var out []hfFile
		for _, p := range paths {
			out = append(out, hfFile{Path: p, Size: 1, SHA256: strings.Repeat("0", 64)})
		}
		return out
	}
	for _, c := range []struct {
		files []string
		quant string
		want  string // the path picked, or "error: " and a piece of the message
	}{
		{[]string{"m-Q4_K_M.gguf", "m-Q8_0.gguf", "m-TQ2_0.gguf"}, "", "m-TQ2_0.gguf"},
		{[]string{"m-Q4_K_M.gguf", "m-Q8_0.gguf", "m-f16.gguf"}, "", "m-Q4_K_M.gguf"},
		{[]string{"m-bf16.gguf", "m-f32.gguf"}, "", "m-bf16.gguf"}, // "f16" is not inside "bf16"
		{[]string{"ggml-model-i2_s.gguf", "mmproj-i2_s.gguf"}, "", "ggml-model-i2_s.gguf"},
		{[]string{"Model.Q4_K_M.gguf", "Model.Q4_K_S.gguf"}, "q4_k_m", "Model.Q4_K_M.gguf"},
		{[]string{"m-Q4_K_M.gguf", "m-Q4_K_S.gguf"}, "Q4_K", "error: matches 2 files"},
		{[]string{"m-Q4_K_M.gguf"}, "Q4_K", "m-Q4_K_M.gguf"},
		{[]string{"m-IQ4_XS.gguf", "m-Q4_0.gguf"}, "q4_0", "m-Q4_0.gguf"},
		{[]string{"m-IQ4_XS.gguf"}, "Q4_0", "error: no GGUF file matches"},
		{[]string{"a-Q8_0.gguf", "b-Q8_0.gguf"}, "", "error: matches 2 files"},
		{[]string{"m-Q8_0-00001-of-00002.gguf", "m-Q8_0-00002-of-00002.gguf"}, "Q8_0", "error: split GGUF"},
		{[]string{"m-Q8_0-00001-of-00002.gguf", "m-Q8_0-00002-of-00002.gguf", "m-f16.gguf"}, "", "m-f16.gguf"},
		{[]string{"m-Q8_0-00001-of-00002.gguf", "m-Q8_0-00002-of-00002.gguf", "m-IQ3_M.gguf"}, "", "error: split GGUF"},
		{[]string{"only-custom.gguf"}, "", "only-custom.gguf"},
		{[]string{"a-IQ3_M.gguf", "b-IQ2_M.gguf"}, "", "error: choose one with :QUANT"},
		{[]string{"mmproj-f16.gguf"}, "", "error: no GGUF model file"},
		{nil, "Q4_0", "error: no GGUF model file"},
		{[]string{"sub/dir/m-Q2_0.gguf", "m-Q4_0.gguf"}, "", "sub/dir/m-Q2_0.gguf"},
	} {
		got, err := pickGGUF(f(c.files...), c.quant)
		if msg, isErr := strings.CutPrefix(c.want, "error: "); isErr {
			if err == nil || !strings.Contains(err.Error(), msg) {
				t.Errorf("pickGGUF(%q, %q) = %q, %v; want an error with %q", c.files, c.quant, got.Path, err, msg)
			}
			continue
		}
		if err != nil || got.Path != c.want {
			t.Errorf("pickGGUF(%q, %q) = %q, %v; want %q", c.files, c.quant, got.Path, err, c.want)
		}
	}
}

// manifestFor builds a registry manifest of a model, a template and a
// params blob plus the config, all on the CDN.
func manifestFor(c *cdn) (store.Manifest, map[string][]byte) {
	blobs := map[string][]byte{
		store.MediaModel:    randBytes(20, 40000),
		store.MediaTemplate: []byte("{{ .System }} {{ .Prompt }}"),
		store.MediaParams:   []byte(`{"stop":["<|end|>"]}`),
		store.MediaConfig:   []byte(`{"model_format":"gguf"}`),
	}
	m := store.Manifest{SchemaVersion: 2, MediaType: store.MediaManifest}
	for _, mt := range []string{store.MediaModel, store.MediaTemplate, store.MediaParams} {
		m.Layers = append(m.Layers, store.Layer{MediaType: mt, Digest: c.add(blobs[mt]), Size: int64(len(blobs[mt]))})
	}
	m.Config = store.Layer{MediaType: store.MediaConfig, Digest: c.add(blobs[store.MediaConfig]), Size: int64(len(blobs[store.MediaConfig]))}
	return m, blobs
}

func TestRegistryPull(t *testing.T) {
	c := newCDN(t)
	g := newRegistry(t, c, false)
	g.auth = true
	mf, blobs := manifestFor(c)
	b, _ := json.Marshal(mf)
	g.manifests["NS/Model:V1"] = b
	dir := t.TempDir()
	var seen []string
	name := g.host() + "/NS/Model:V1"
	n, m, err := Pull(context.Background(), dir, name, quick(Options{Insecure: true, Progress: statuses(&seen)}))
	if err != nil {
		t.Fatal(err)
	}
	if n.Display() != name || n.Namespace != "NS" {
		t.Errorf("name %q", n.Display())
	}
	got := readManifest(t, dir, n)
	if !slices.Equal(got.Layers, mf.Layers) || got.Config != mf.Config || !slices.Equal(m.Layers, mf.Layers) {
		t.Errorf("manifest written %+v, want %+v", got, mf)
	}
	for _, l := range append(mf.Layers, mf.Config) {
		if !bytes.Equal(readBlob(t, dir, l.Digest), blobs[l.MediaType]) {
			t.Errorf("blob %s differs", l.MediaType)
		}
	}
	// The token was fetched once, anonymously, with the challenge's scope,
	// and sent to the registry but never to the CDN.
	if len(g.tokenReq) != 1 || !strings.Contains(g.tokenReq[0], "scope=repository%3ANS%2FModel%3Apull") || !strings.Contains(g.tokenReq[0], "service=fake") {
		t.Errorf("token requests %q", g.tokenReq)
	}
	auths := g.seenAuth()
	if auths[0] != "" || slices.Contains(auths[1:], "") {
		t.Errorf("registry saw Authorization %q; want none on the first request only", auths)
	}
	if _, cdnAuth := c.requests(); len(cdnAuth) != 4 || slices.ContainsFunc(cdnAuth, func(a string) bool { return a != "" }) {
		t.Errorf("CDN saw Authorization %q", cdnAuth)
	}
	want := []string{"pulling manifest"}
	for _, l := range append(mf.Layers, mf.Config) {
		want = append(want, "pulling "+l.Digest[7:19])
	}
	want = append(want, "verifying sha256 digest", "writing manifest", "success")
	if !slices.Equal(seen, want) {
		t.Errorf("statuses %q, want %q", seen, want)
	}
}

func TestRegistryTLS(t *testing.T) {
	c := newCDN(t)
	g := newRegistry(t, c, true)
	mf, _ := manifestFor(c)
	b, _ := json.Marshal(mf)
	g.manifests["library/tiny:latest"] = b
	if _, _, err := Pull(context.Background(), t.TempDir(), g.host()+"/library/tiny", quick(Options{Client: g.srv.Client()})); err != nil {
		t.Fatal(err)
	}
}

func TestRegistryErrors(t *testing.T) {
	c := newCDN(t)
	g := newRegistry(t, c, false)
	mf, _ := manifestFor(c)
	b, _ := json.Marshal(mf)
	g.manifests["ns/m:t"] = b
	ctx := context.Background()
	opt := quick(Options{Insecure: true})

	// Plain http needs --insecure.
	_, _, err := Pull(ctx, t.TempDir(), g.host()+"/ns/m:t", quick(Options{}))
	if !errors.Is(err, ErrInsecure) {
		t.Errorf("http registry without Insecure: %v", err)
	}
	_, _, err = Pull(ctx, t.TempDir(), g.host()+"/ns/m:nope", opt)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "manifest unknown") {
		t.Errorf("missing tag: %v", err)
	}
	// A token the registry does not accept: a clear 401 after one exchange.
	g.auth, g.token = true, "wrong"
	_, _, err = Pull(ctx, t.TempDir(), g.host()+"/ns/m:t", opt)
	if !errors.Is(err, ErrUnauthorized) || len(g.tokenReq) != 1 {
		t.Errorf("refused token: %v (%d token requests)", err, len(g.tokenReq))
	}
	// A realm on another host is not followed.
	g.token, g.realm = "tok-1", "http://elsewhere.invalid/token"
	_, _, err = Pull(ctx, t.TempDir(), g.host()+"/ns/m:t", opt)
	if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "not the registry's") {
		t.Errorf("foreign realm: %v", err)
	}
	// A model layer missing from the CDN.
	g.auth, g.realm = false, ""
	bad := mf
	bad.Layers = slices.Clone(mf.Layers)
	bad.Layers[0].Digest = digestOf([]byte("absent"))
	b, _ = json.Marshal(bad)
	g.manifests["ns/m:absent"] = b
	_, _, err = Pull(ctx, t.TempDir(), g.host()+"/ns/m:absent", opt)
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("absent blob: %v", err)
	}
	// A manifest body beyond the cap.
	g.manifests["ns/m:huge"] = append([]byte(`{"schemaVersion":2,"x":"`), bytes.Repeat([]byte("a"), maxManifest)...)
	_, _, err = Pull(ctx, t.TempDir(), g.host()+"/ns/m:huge", opt)
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("huge manifest: %v", err)
	}
	// A manifest whose digest tries to leave the blobs folder.
	g.manifests["ns/m:trick"] = []byte(`{"schemaVersion":2,"layers":[{"mediaType":"` + store.MediaModel + `","digest":"sha256:../../../etc/passwd","size":5}]}`)
	dir := t.TempDir()
	_, _, err = Pull(ctx, dir, g.host()+"/ns/m:trick", opt)
	if err == nil || !strings.Contains(err.Error(), "bad digest") {
		t.Errorf("path trick: %v", err)
	}
	// Names with path tricks never reach the network.
	for _, name := range []string{g.host() + "/../m:t", g.host() + "/ns/m:../../x", "a/b/c/d"} {
		if _, _, err := Pull(ctx, dir, name, opt); !errors.Is(err, store.ErrName) {
			t.Errorf("name %q: %v", name, err)
		}
	}
}

func TestParseManifestRejects(t *testing.T) {
	d := digestOf([]byte("x"))
	for _, c := range []struct{ body, want string }{
		{`not json`, "manifest"},
		{`{"schemaVersion":1,"layers":[]}`, "schema version"},
		{`{"schemaVersion":2,"layers":[]}`, "0 layers"},
		{`{"schemaVersion":2,"layers":[{"mediaType":"` + store.MediaTemplate + `","digest":"` + d + `","size":1}]}`, "0 GGUF model layers"},
		{`{"schemaVersion":2,"layers":[{"mediaType":"` + store.MediaModel + `","digest":"` + d + `","size":1},{"mediaType":"` + store.MediaModel + `","digest":"` + d + `","size":1}]}`, "2 GGUF model layers"},
		{`{"schemaVersion":2,"layers":[{"mediaType":"` + store.MediaModel + `","digest":"` + d + `","size":-1}]}`, "out of range"},
		{`{"schemaVersion":2,"layers":[{"mediaType":"` + store.MediaModel + `","digest":"` + d + `","size":0}]}`, "empty"},
		{`{"schemaVersion":2,"layers":[{"mediaType":"` + store.MediaModel + `","digest":"` + d + `","size":1}],"config":{"digest":"sha256:ZZ"}}`, "config"},
		{`{"schemaVersion":2,"layers":[{"mediaType":"application/vnd.ollama.image.tensor","digest":"` + d + `","size":1}]}`, "tensor layers"},
	} {
		if _, err := parseManifest([]byte(c.body)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("parseManifest(%s) = %v, want an error with %q", c.body, err, c.want)
		}
	}
}

func TestParseTreeRejects(t *testing.T) {
	oid := strings.Repeat("a", 64)
	for _, c := range []struct{ body, want string }{
		{`{}`, "file listing"},
		{`[{"type":"file","path":"../x.gguf","size":1,"lfs":{"oid":"` + oid + `","size":1}}]`, "bad path"},
		{`[{"type":"file","path":"/abs.gguf","size":1,"lfs":{"oid":"` + oid + `","size":1}}]`, "bad path"},
		{`[{"type":"file","path":"small.gguf","size":1}]`, "not stored with LFS"},
		{`[{"type":"file","path":"m.gguf","size":1,"lfs":{"oid":"abc","size":1}}]`, "bad LFS oid"},
		{`[{"type":"file","path":"m.gguf","size":2,"lfs":{"oid":"` + oid + `","size":1}}]`, "size"},
	} {
		if _, _, err := parseTree([]byte(c.body)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("parseTree(%s) = %v, want an error with %q", c.body, err, c.want)
		}
	}
	fs, n, err := parseTree([]byte(`[{"type":"file","path":"README.md","size":3},{"type":"file","path":"a/M.GGUF","size":1,"lfs":{"oid":"` + oid + `","size":1}}]`))
	if err != nil || n != 2 || len(fs) != 1 || fs[0].Path != "a/M.GGUF" {
		t.Errorf("parseTree = %+v, %d, %v", fs, n, err)
	}
}

func TestHFListingNextOffHost(t *testing.T) {
	h, _, _ := hfRepo(t)
	h.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", `<http://elsewhere.invalid/api/x>; rel="next"`)
		w.Write([]byte(`[]`))
	})
	_, _, err := Pull(context.Background(), t.TempDir(), "hf.co/Owner/Repo", quick(Options{HFEndpoint: h.srv.URL}))
	if err == nil || !strings.Contains(err.Error(), "is not on") {
		t.Errorf("err = %v", err)
	}
}

// A file name with characters that URLs escape is asked for by its name.
func TestHFOddFileName(t *testing.T) {
	h, c, _ := hfRepo(t)
	content := randBytes(30, 3000)
	c.add(content)
	h.files = append(h.files, lfsEntry("sub dir/m 100%#1?-Q8_0.gguf", content))
	dir := t.TempDir()
	_, m, err := Pull(context.Background(), dir, "hf.co/Owner/Repo:Q8_0", quick(Options{HFEndpoint: h.srv.URL}))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readBlob(t, dir, m.Layers[0].Digest), content) {
		t.Error("blob differs")
	}
}

// Two pulls of one model at once (two /api/pull requests) take turns on
// each blob instead of writing one partial file together.
func TestConcurrentPulls(t *testing.T) {
	h, c, files := hfRepo(t)
	dir := t.TempDir()
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, _, err := Pull(context.Background(), dir, "hf.co/Owner/Repo", quick(Options{HFEndpoint: h.srv.URL}))
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	want := files["ggml-model-i2_s.gguf"]
	if !bytes.Equal(readBlob(t, dir, digestOf(want)), want) {
		t.Error("blob differs")
	}
	if ranges, _ := c.requests(); len(ranges) != 1 {
		t.Errorf("%d CDN requests, want 1 (the second pull finds the blob in place)", len(ranges))
	}
}

// A blob host that refuses connections fails at once: only transfers that
// broke on the way are retried.
func TestRefusedNotRetried(t *testing.T) {
	h, c, _ := hfRepo(t)
	c.srv.Close()
	start := time.Now()
	_, _, err := Pull(context.Background(), t.TempDir(), "hf.co/Owner/Repo", Options{HFEndpoint: h.srv.URL})
	if err == nil || isRetryable(err) {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 900*time.Millisecond {
		t.Errorf("took %v: retried a refused connection", d)
	}
}
