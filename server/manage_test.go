package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/internal/testmodel"
	"github.com/edgellm/edgellm/pull"
	"github.com/edgellm/edgellm/store"
	"github.com/ollama/ollama/api"
)

// The official Ollama client manages the store: List shows plain files and
// pulled models, a pulled name generates and shows its layers, Copy and
// Delete work (Delete unloading the model first), and errors are Ollama's.
func TestOllamaClientManage(t *testing.T) {
	s := newTestServer(t, nil)
	dir := s.cfg.ModelsDir
	const pulled = "hf.co/Owner/Stories-GGUF:F32"
	testmodel.AddPulled(t, dir, pulled, storiesPath(t), map[string]string{
		store.MediaTemplate: "{{ .System }} {{ .Prompt }}",
		store.MediaSystem:   "Tell a story.",
		store.MediaParams:   `{"stop":["a","b"],"temperature":0.5}`,
	})
	c := api.NewClient(startServer(t, s), http.DefaultClient)
	ctx := context.Background()
	_, refText := referenceGreedy(t)

	names := func() []string {
		t.Helper()
		l, err := c.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, m := range l.Models {
			out = append(out, m.Name)
		}
		return out
	}
	l, err := c.List(ctx)
	if err != nil || len(l.Models) != 2 {
		t.Fatalf("List = %+v, %v", l, err)
	}
	p, f := l.Models[0], l.Models[1]
	n, _ := store.ParseName(pulled)
	man, _ := os.ReadFile(store.ManifestPath(dir, n))
	h := sha256.Sum256(man)
	fi, _ := os.Stat(storiesPath(t))
	if p.Name != pulled || p.Model != pulled || p.Digest != hex.EncodeToString(h[:]) || p.Size <= fi.Size() ||
		p.Details.Family != "llama" || p.Details.QuantizationLevel != "F32" || p.Details.Format != "gguf" || p.ModifiedAt.IsZero() {
		t.Errorf("pulled model listed as %+v", p)
	}
	if f.Name != "stories" || f.Size != fi.Size() || f.Details.Family != "llama" {
		t.Errorf("plain file listed as %+v", f)
	}

	gen := func(model string, n int) (string, error) {
		var text strings.Builder
		no := false
		err := c.Generate(ctx, &api.GenerateRequest{Model: model, Prompt: "Once upon a time", Raw: true, Stream: &no,
			Options: greedy(map[string]any{"num_predict": n})}, func(r api.GenerateResponse) error {
			text.WriteString(r.Response)
			return nil
		})
		return text.String(), err
	}
	if got, err := gen(pulled, 8); err != nil || got == "" || !strings.HasPrefix(refText, got) {
		t.Errorf("generate with %s: %q, %v; want a prefix of %q", pulled, got, err, refText)
	}
	// ListRunning gives each loaded model the digest List gives it: a
	// pulled model's manifest's, not its blob's.
	if _, err := gen("stories", 1); err != nil {
		t.Fatal(err)
	}
	running, err := c.ListRunning(ctx)
	if err != nil || len(running.Models) != 2 || running.Models[0].Digest != p.Digest || running.Models[1].Digest != f.Digest {
		t.Errorf("ListRunning = %+v, %v; want digests %s, %s", running, err, p.Digest, f.Digest)
	}
	do(t, s.Handler(), "POST", "/api/generate", `{"model":"stories","keep_alive":0}`) // unloaded again

	// Show describes the pulled model's GGUF (its layers' part is the
	// template code's: modelDefaults).
	show, err := c.Show(ctx, &api.ShowRequest{Model: pulled})
	if err != nil || show.Details.Family != "llama" || show.ModelInfo["llama.context_length"] != float64(128) {
		t.Errorf("Show(%s) = %+v, %v", pulled, show, err)
	}

	// Copy: a new name for the same blobs, usable at once, with and
	// without its tag.
	if err := c.Copy(ctx, &api.CopyRequest{Source: "stories", Destination: "mine"}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(names(), ","); got != pulled+",mine:latest,stories" {
		t.Errorf("after Copy: %s", got)
	}
	for _, name := range []string{"mine", "mine:latest", "registry.ollama.ai/library/mine:latest"} {
		if got, err := gen(name, 4); err != nil || !strings.HasPrefix(refText, got) || got == "" {
			t.Errorf("generate with %s: %q, %v", name, got, err)
		}
	}
	status := func(err error) int {
		var se api.StatusError
		if errors.As(err, &se) {
			return se.StatusCode
		}
		return 0
	}
	for _, bad := range []struct {
		src, dst string
		code     int
	}{
		{"nope", "x", 404}, {"stories", "../x", 400}, {"stories", "a/b/c/d", 400}, {"stories", "stories", 400}, {"", "x", 400},
	} {
		if err := c.Copy(ctx, &api.CopyRequest{Source: bad.src, Destination: bad.dst}); status(err) != bad.code {
			t.Errorf("Copy(%q, %q) = %v, want a %d", bad.src, bad.dst, err, bad.code)
		}
	}

	// Delete unloads a loaded model first.
	ps, err := c.ListRunning(ctx)
	if err != nil || len(ps.Models) != 2 {
		t.Fatalf("running before Delete: %+v, %v", ps, err)
	}
	if err := c.Delete(ctx, &api.DeleteRequest{Model: "mine"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, &api.DeleteRequest{Model: pulled}); err != nil {
		t.Fatal(err)
	}
	ps, _ = c.ListRunning(ctx)
	if len(ps.Models) != 0 {
		t.Errorf("running after Delete: %+v", ps.Models)
	}
	if got := strings.Join(names(), ","); got != "stories" {
		t.Errorf("after Delete: %s", got)
	}
	if ents, _ := os.ReadDir(dir + "/blobs"); len(ents) != 0 {
		t.Errorf("blobs left: %v", ents)
	}
	if _, err := gen("mine", 2); status(err) != 404 {
		t.Errorf("generate with a deleted model: %v, want a 404", err)
	}
	for _, name := range []string{"mine", "nope", "../stories", "a:b:c"} {
		err := c.Delete(ctx, &api.DeleteRequest{Model: name})
		if status(err) != 404 || strings.Contains(err.Error(), dir) {
			t.Errorf("Delete(%q) = %v, want a 404 naming no path", name, err)
		}
	}
}

// A model deleted while it generates finishes its request, then is
// unloaded; and a damaged pulled model's errors name no path.
func TestDeleteInUseAndDamaged(t *testing.T) {
	s := newTestServer(t, nil)
	dir := s.cfg.ModelsDir
	m := testmodel.AddPulled(t, dir, "busy", storiesPath(t), nil)
	c := api.NewClient(startServer(t, s), http.DefaultClient)
	ctx := context.Background()
	holding, release := holdFirstToken(s)
	done := make(chan error, 1)
	go func() {
		no := false
		done <- c.Generate(ctx, &api.GenerateRequest{Model: "busy", Prompt: "Once upon a time", Stream: &no,
			Options: greedy(map[string]any{"num_predict": 4})}, func(api.GenerateResponse) error { return nil })
	}()
	<-holding
	if err := c.Delete(ctx, &api.DeleteRequest{Model: "busy"}); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("the running generation failed: %v", err)
	}
	if ps, _ := c.ListRunning(ctx); len(ps.Models) != 0 {
		t.Errorf("a deleted model stays loaded: %+v", ps.Models)
	}

	testmodel.AddPulled(t, dir, "damaged", storiesPath(t), nil)
	p, _ := store.BlobPath(dir, m.Layers[0].Digest)
	os.Truncate(p, 100)
	_, err := c.Show(ctx, &api.ShowRequest{Model: "damaged"})
	var se api.StatusError
	if !errors.As(err, &se) || se.StatusCode != 500 || !strings.Contains(se.ErrorMessage, "pull the model again") || strings.Contains(se.ErrorMessage, dir) {
		t.Errorf("Show of a damaged model: %v", err)
	}
	if err := c.Delete(ctx, &api.DeleteRequest{Model: "damaged"}); err != nil {
		t.Errorf("Delete of a damaged model: %v", err)
	}
}

// POST /api/pull through the official client: progress streamed as Ollama
// sends it, the model usable at once, errors in Ollama's shapes and without
// the models directory's path.
func TestOllamaClientPull(t *testing.T) {
	var gotInsecure bool
	s := newTestServer(t, func(c *Config) {
		c.Pull = func(ctx context.Context, dir, name string, opt pull.Options) (store.Name, *store.Manifest, error) {
			gotInsecure = opt.Insecure
			progress := opt.Progress
			progress(pull.Progress{Status: "pulling manifest"})
			switch name {
			case "hf.co/o/missing:Q4_0":
				return store.Name{}, nil, fmt.Errorf("pull: %w: no such repository", pull.ErrNotFound)
			case "hf.co/o/cut:Q4_0":
				return store.Name{}, nil, fmt.Errorf("pull: writing %s/blobs/sha256-x-partial: connection reset", dir)
			}
			m := testmodel.AddPulled(t, dir, name, storiesPath(t), nil)
			l := m.Layers[0]
			for _, done := range []int64{0, l.Size / 2, l.Size} {
				progress(pull.Progress{Status: "pulling " + l.Digest[7:19], Digest: l.Digest, Total: l.Size, Completed: done})
			}
			progress(pull.Progress{Status: "verifying sha256 digest"})
			progress(pull.Progress{Status: "writing manifest"})
			progress(pull.Progress{Status: "success"})
			n, _ := store.ParseName(name)
			return n, m, nil
		}
	})
	dir := s.cfg.ModelsDir
	c := api.NewClient(startServer(t, s), http.DefaultClient)
	ctx := context.Background()

	var seen []api.ProgressResponse
	err := c.Pull(ctx, &api.PullRequest{Model: "hf.co/Owner/Stories:F32", Insecure: true}, func(p api.ProgressResponse) error {
		seen = append(seen, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var statuses []string
	for _, p := range seen {
		statuses = append(statuses, p.Status)
	}
	if len(seen) != 7 || seen[0].Status != "pulling manifest" || seen[3].Completed != seen[3].Total || seen[3].Total == 0 ||
		seen[2].Completed != seen[3].Total/2 || seen[6].Status != "success" || !gotInsecure {
		t.Errorf("progress: %q (%+v), insecure %v", statuses, seen, gotInsecure)
	}
	no := false
	var text string
	err = c.Generate(ctx, &api.GenerateRequest{Model: "hf.co/Owner/Stories:F32", Prompt: "Once upon a time", Raw: true, Stream: &no,
		Options: greedy(map[string]any{"num_predict": 4})}, func(r api.GenerateResponse) error { text = r.Response; return nil })
	if _, ref := referenceGreedy(t); err != nil || text == "" || !strings.HasPrefix(ref, text) {
		t.Errorf("generate with the pulled model: %q, %v", text, err)
	}

	// Not streamed: one object, the last.
	seen = nil
	err = c.Pull(ctx, &api.PullRequest{Model: "other", Stream: &no}, func(p api.ProgressResponse) error {
		seen = append(seen, p)
		return nil
	})
	if err != nil || len(seen) != 1 || seen[0].Status != "success" || gotInsecure {
		t.Errorf("unstreamed pull: %+v, %v (insecure %v)", seen, err, gotInsecure)
	}

	status := func(err error) (int, string) {
		var se api.StatusError
		if errors.As(err, &se) {
			return se.StatusCode, se.ErrorMessage
		}
		if err != nil {
			return 0, err.Error()
		}
		return 0, ""
	}
	for _, c2 := range []struct {
		name   string
		stream bool
		code   int
		msg    string
	}{
		{"hf.co/o/missing:Q4_0", false, 404, "no such repository"},
		{"../x", true, 400, "invalid model name"},
		{"hf.co/o/cut:Q4_0", true, 0, "connection reset"}, // after the stream began: an error object
		{"hf.co/o/cut:Q4_0", false, 500, "connection reset"},
	} {
		st := c2.stream
		err := c.Pull(ctx, &api.PullRequest{Model: c2.name, Stream: &st}, func(api.ProgressResponse) error { return nil })
		code, msg := status(err)
		if err == nil || code != c2.code || !strings.Contains(msg, c2.msg) || strings.Contains(msg, dir) {
			t.Errorf("pull %s (stream %v): %v (status %d), want %d saying %q and no path", c2.name, c2.stream, err, code, c2.code, c2.msg)
		}
	}

	// A server without a puller says so.
	bare := api.NewClient(startServer(t, newTestServer(t, nil)), http.DefaultClient)
	if code, _ := status(bare.Pull(ctx, &api.PullRequest{Model: "x"}, func(api.ProgressResponse) error { return nil })); code != 501 {
		t.Errorf("pull without a puller: status %d, want 501", code)
	}
}

// The server pulls with package pull from a registry on loopback: the model
// and its layers land in the store, the name works at once, and /api/show
// gives the registry's template and system.
func TestPullFromRegistry(t *testing.T) {
	model, err := os.ReadFile(storiesPath(t))
	if err != nil {
		t.Fatal(err)
	}
	reg := testmodel.Registry(t, model, map[string]string{store.MediaTemplate: "{{ .Prompt }}",
		store.MediaSystem: "Be kind.", store.MediaParams: `{"temperature":0.1}`})
	s := newTestServer(t, func(c *Config) { c.Pull = pull.Pull })
	c := api.NewClient(startServer(t, s), http.DefaultClient)
	ctx := context.Background()
	name := strings.TrimPrefix(reg.URL, "http://") + "/library/stories"

	// Plain http needs insecure, as Ollama's.
	err = c.Pull(ctx, &api.PullRequest{Model: name}, func(api.ProgressResponse) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "insecure") {
		t.Errorf("pull over http without insecure: %v", err)
	}
	var last api.ProgressResponse
	var bytesSeen int64
	err = c.Pull(ctx, &api.PullRequest{Model: name, Insecure: true}, func(p api.ProgressResponse) error {
		last = p
		if p.Total == int64(len(model)) {
			bytesSeen = max(bytesSeen, p.Completed)
		}
		return nil
	})
	if err != nil || last.Status != "success" || bytesSeen != int64(len(model)) {
		t.Fatalf("pull: %v, last %+v, model bytes seen %d of %d", err, last, bytesSeen, len(model))
	}
	// The registry's layers are kept with the model, for the server's
	// templates and defaults.
	m, err := store.Lookup(s.cfg.ModelsDir, name+":latest")
	if err != nil || m.Template != "{{ .Prompt }}" || m.System != "Be kind." || string(m.Params) != `{"temperature":0.1}` {
		t.Errorf("the pulled model in the store: %+v, %v", m, err)
	}
	if show, err := c.Show(ctx, &api.ShowRequest{Model: name + ":latest"}); err != nil || show.Details.Family != "llama" {
		t.Errorf("show after pull: %+v, %v", show, err)
	}
	l, err := c.List(ctx)
	if err != nil || len(l.Models) != 2 || l.Models[0].Name != name+":latest" {
		t.Errorf("list after pull: %+v, %v", l, err)
	}
	no := false
	var text string
	err = c.Generate(ctx, &api.GenerateRequest{Model: name, Prompt: "Once upon a time", Raw: true, Stream: &no,
		Options: greedy(map[string]any{"num_predict": 4})}, func(r api.GenerateResponse) error { text = r.Response; return nil })
	if _, ref := referenceGreedy(t); err != nil || text == "" || !strings.HasPrefix(ref, text) {
		t.Errorf("generate with the pulled model: %q, %v", text, err)
	}
	// Unknown on the registry: a 404, as Ollama's.
	err = c.Pull(ctx, &api.PullRequest{Model: strings.TrimSuffix(name, "stories") + "nope", Insecure: true, Stream: &no},
		func(api.ProgressResponse) error { return nil })
	var se api.StatusError
	if !errors.As(err, &se) || se.StatusCode != 404 {
		t.Errorf("pull of an unknown model: %v, want a 404", err)
	}
}

// A name that comes to name other bytes (copied over, pulled again) is
// served from them at the next request; the old model unloads.
func TestNameRepointed(t *testing.T) {
	s := newTestServer(t, nil)
	dir := s.cfg.ModelsDir
	testmodel.AddPulled(t, dir, "m", storiesPath(t), map[string]string{store.MediaSystem: "old"})
	c := api.NewClient(startServer(t, s), http.DefaultClient)
	ctx := context.Background()
	gen := func() {
		t.Helper()
		no := false
		err := c.Generate(ctx, &api.GenerateRequest{Model: "m", Prompt: "Once upon a time", Raw: true, Stream: &no,
			Options: greedy(map[string]any{"num_predict": 2})}, func(api.GenerateResponse) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
	}
	gen()
	old := s.reg.entries["m:latest"]
	testmodel.AddPulled(t, dir, "m", storiesPath(t), map[string]string{store.MediaSystem: "new"})
	gen()
	e := s.reg.entries["m:latest"]
	if e == old || e.src.System != "new" {
		t.Fatalf("entry after the name changed: system %q (same entry: %v)", e.src.System, e == old)
	}
	old.mu.Lock()
	loaded := old.m != nil
	old.mu.Unlock()
	if loaded {
		t.Error("the old model stays loaded")
	}
	if ps, _ := c.ListRunning(ctx); len(ps.Models) != 1 {
		t.Errorf("running: %+v, want the new model only", ps.Models)
	}
	gen()
	if s.reg.entries["m:latest"] != e {
		t.Error("an unchanged name got a new entry")
	}
}

// A pulled model's layers reach the server through the store: its params
// are the defaults of a request that gives none, its template renders the
// prompt, and /api/show gives its template and system.
func TestPulledLayersServed(t *testing.T) {
	s := newTestServer(t, nil)
	testmodel.AddPulled(t, s.cfg.ModelsDir, "hf.co/o/layered:F32", storiesPath(t), map[string]string{
		store.MediaTemplate: "{{ .Prompt }}",
		store.MediaSystem:   "Be kind.",
		store.MediaParams:   `{"temperature":0,"num_predict":20,"stop":[" little"]}`,
	})
	c := api.NewClient(startServer(t, s), http.DefaultClient)
	ctx := context.Background()
	no := false
	var got api.GenerateResponse
	err := c.Generate(ctx, &api.GenerateRequest{Model: "hf.co/o/layered:F32", Prompt: "Once upon a time", Stream: &no},
		func(r api.GenerateResponse) error { got = r; return nil })
	if err != nil || got.Response != ", there was a" {
		t.Errorf("generate with the params' defaults: %q, %v; want greedy up to the stop string", got.Response, err)
	}
	show, err := c.Show(ctx, &api.ShowRequest{Model: "hf.co/o/layered:F32"})
	if err != nil || show.Template != "{{ .Prompt }}" || show.System != "Be kind." {
		t.Errorf("show: template %q system %q, %v", show.Template, show.System, err)
	}
	// A params layer that is not Ollama's JSON is the model's fault: a 500
	// that says so, naming no path.
	testmodel.AddPulled(t, s.cfg.ModelsDir, "broken", storiesPath(t), map[string]string{store.MediaParams: `{"temperature":"hot"}`})
	err = c.Generate(ctx, &api.GenerateRequest{Model: "broken", Prompt: "x", Stream: &no}, func(api.GenerateResponse) error { return nil })
	var se api.StatusError
	if !errors.As(err, &se) || se.StatusCode != 500 || !strings.Contains(se.ErrorMessage, "params layer") || strings.Contains(se.ErrorMessage, s.cfg.ModelsDir) {
		t.Errorf("a broken params layer: %v", err)
	}
}
