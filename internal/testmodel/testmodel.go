// Package testmodel writes tiny synthetic models for tests, so a test that
// needs a model file runs in a fresh clone with nothing beside it, and
// measures logits against the reference forward pass; it also writes pulled
// models into a store and serves one from a fake registry. It is for tests only.
package testmodel

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/quant"
	"github.com/edgellm/edgellm/store"
	"github.com/edgellm/edgellm/synth"
)

// Vocab is the tiny models' vocabulary size (token ids only, no tokenizer).
const Vocab = 256

// Tiny is a tiny model of arch ("llama", or "bitnet" with its sub-norms)
// with its matrices in typ and an F32 embedding (tied LM head): 2 layers,
// hidden 64, FFN 128, 4 heads of 16, 2 KV heads, context 64. It is written
// in milliseconds.
func Tiny(arch string, typ quant.Type) synth.Preset {
	return synth.Preset{Name: "tiny-" + arch + "-" + typ.String(), Arch: arch, Dim: 64, FFN: 128, Layers: 2,
		Heads: 4, KVHeads: 2, Vocab: Vocab, Context: 64, RopeBase: 10000, SubNorms: arch == "bitnet",
		Type: typ, EmbedType: quant.F32}
}

// Write writes p with a fixed seed to a file in t.TempDir() and returns its
// path.
func Write(t testing.TB, p synth.Preset) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), p.Name+".gguf")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := synth.Write(f, p, synth.Options{Seed: 3}); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// Weights opens a GGUF file's weights, mapped until t ends.
func Weights(t testing.TB, path string) *model.Weights {
	t.Helper()
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	w, err := model.FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// RefRMS is the largest, over positions, relative RMS difference between
// logits (len(ids) rows of Vocab values, the logits after each position)
// and the reference forward pass of ids from position 0.
func RefRMS(t testing.TB, w *model.Weights, ids []int32, logits []float32) float64 {
	t.Helper()
	v := w.Vocab
	if len(logits) != len(ids)*v {
		t.Fatalf("%d logits for %d positions of %d", len(logits), len(ids), v)
	}
	ref := model.NewReference(w, len(ids))
	worst := 0.0
	for p, id := range ids {
		want := ref.Forward(id, p)
		if want == nil {
			t.Fatalf("the reference cannot run id %d at position %d", id, p)
		}
		var d2, r2 float64
		for i, x := range want {
			d := float64(logits[p*v+i]) - float64(x)
			d2 += d * d
			r2 += float64(x) * float64(x)
		}
		worst = max(worst, math.Sqrt(d2/r2))
	}
	return worst
}

// AddPulled writes a pulled model called name into the store folder dir, as
// a pull leaves it: the GGUF file at src as its model blob, then a blob for
// each text layer (store.MediaTemplate, MediaSystem, MediaParams: text). It
// returns the manifest.
func AddPulled(t testing.TB, dir, name, src string, texts map[string]string) *store.Manifest {
	t.Helper()
	blob := func(media string, b []byte) store.Layer {
		h := sha256.Sum256(b)
		l := store.Layer{MediaType: media, Digest: "sha256:" + hex.EncodeToString(h[:]), Size: int64(len(b))}
		p, err := store.BlobPath(dir, l.Digest)
		if err == nil {
			err = os.MkdirAll(filepath.Dir(p), 0o755)
		}
		if err == nil {
			err = os.WriteFile(p, b, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	m := &store.Manifest{SchemaVersion: 2, MediaType: store.MediaManifest, Layers: []store.Layer{blob(store.MediaModel, b)}}
	for _, media := range []string{store.MediaTemplate, store.MediaSystem, store.MediaParams} {
		if s, ok := texts[media]; ok {
			m.Layers = append(m.Layers, blob(media, []byte(s)))
		}
	}
	n, err := store.ParseName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.WriteManifest(dir, n, m); err != nil {
		t.Fatal(err)
	}
	return m
}

// Registry serves one model, library/stories:latest, as an Ollama registry
// does (Docker v2: the manifest, then blobs by digest, with Range): the GGUF
// bytes model and the text layers given (store.MediaTemplate, MediaSystem,
// MediaParams: text), on plain http at loopback.
func Registry(t testing.TB, model []byte, texts map[string]string) *httptest.Server {
	t.Helper()
	blobs := map[string][]byte{}
	layer := func(media string, b []byte) store.Layer {
		h := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(h[:])
		blobs[d] = b
		return store.Layer{MediaType: media, Digest: d, Size: int64(len(b))}
	}
	m := store.Manifest{SchemaVersion: 2, MediaType: store.MediaManifest,
		Config: layer(store.MediaConfig, []byte(`{"model_format":"gguf"}`)),
		Layers: []store.Layer{layer(store.MediaModel, model)}}
	for _, media := range []string{store.MediaTemplate, store.MediaSystem, store.MediaParams} {
		if s, ok := texts[media]; ok {
			m.Layers = append(m.Layers, layer(media, []byte(s)))
		}
	}
	man, _ := json.Marshal(m)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch rest, _ := strings.CutPrefix(r.URL.Path, "/v2/library/stories/"); {
		case rest == "manifests/latest":
			w.Header().Set("Content-Type", store.MediaManifest)
			w.Write(man)
		case strings.HasPrefix(rest, "blobs/") && blobs[rest[6:]] != nil:
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(blobs[rest[6:]]))
		default:
			http.Error(w, `{"errors":[{"code":"MANIFEST_UNKNOWN"}]}`, http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}
