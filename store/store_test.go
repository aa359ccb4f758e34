package store

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/quant"
)

// writeGGUF writes a small GGUF of arch whose matrices are typ (and one
// F32 vector), with general.file_type when ftype >= 0.
func writeGGUF(t *testing.T, path, arch string, typ quant.Type, ftype int) []byte {
	t.Helper()
	w := gguf.NewWriter()
	w.AddString("general.architecture", arch)
	if ftype >= 0 {
		w.AddUint32("general.file_type", uint32(ftype))
	}
	rows := uint64(4)
	size, err := quant.TensorBytes(typ, 256, 256*rows)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddTensor("blk.0.ffn_up.weight", typ, []uint64{256, rows}, make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	if err := w.AddTensor("output_norm.weight", quant.F32, []uint64{256}, make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// addBlob stores data as a blob of dir and returns its layer.
func addBlob(t *testing.T, dir, media string, data []byte) Layer {
	t.Helper()
	h := sha256.Sum256(data)
	l := Layer{MediaType: media, Digest: "sha256:" + hex.EncodeToString(h[:]), Size: int64(len(data))}
	p, _ := BlobPath(dir, l.Digest)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return l
}

// addPulled writes a pulled model called name: a GGUF model layer and the
// given text layers.
func addPulled(t *testing.T, dir, name string, model []byte, texts map[string]string) *Manifest {
	t.Helper()
	n, err := ParseName(name)
	if err != nil {
		t.Fatal(err)
	}
	m := &Manifest{SchemaVersion: 2, MediaType: MediaManifest,
		Config: addBlob(t, dir, MediaConfig, []byte(`{"model_format":"gguf"}`)),
		Layers: []Layer{addBlob(t, dir, MediaModel, model)}}
	for _, media := range []string{MediaTemplate, MediaSystem, MediaParams, MediaLicense} {
		if s, ok := texts[media]; ok {
			m.Layers = append(m.Layers, addBlob(t, dir, media, []byte(s)))
		}
	}
	if err := WriteManifest(dir, n, m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDir(t *testing.T) {
	t.Setenv("EDGELLM_MODELS", "/x/models")
	if d, err := Dir(); err != nil || d != "/x/models" {
		t.Errorf("Dir() = %q, %v with EDGELLM_MODELS set", d, err)
	}
	t.Setenv("EDGELLM_MODELS", "")
	t.Setenv("HOME", "/home/u")
	if d, err := Dir(); err != nil || d != filepath.FromSlash("/home/u/.edgellm/models") {
		t.Errorf("Dir() = %q, %v; want ~/.edgellm/models", d, err)
	}
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	plain := writeGGUF(t, filepath.Join(dir, "plain.gguf"), "llama", quant.Q8_0, -1)
	pulled := writeGGUF(t, filepath.Join(t.TempDir(), "m.gguf"), "bitnet-b1.58", quant.TQ2_0, -1)
	addPulled(t, dir, "hf.co/Owner/Repo:TQ2_0", pulled, map[string]string{
		MediaTemplate: "{{ .Prompt }}", MediaSystem: "Be brief.", MediaParams: `{"temperature":0.5}`,
		MediaLicense: "MIT"})
	addPulled(t, dir, "smol", plain, nil)
	outside := filepath.Join(t.TempDir(), "own.gguf")
	writeGGUF(t, outside, "llama", quant.F16, -1)

	for _, c := range []struct{ arg, name, path string }{
		{outside, outside, outside},
		{"plain", "plain", filepath.Join(dir, "plain.gguf")},
		{"plain:latest", "plain", filepath.Join(dir, "plain.gguf")},
		{"smol", "smol:latest", ""},
		{"smol:latest", "smol:latest", ""},
		{"registry.ollama.ai/library/smol:latest", "smol:latest", ""},
		{"hf.co/Owner/Repo:TQ2_0", "hf.co/Owner/Repo:TQ2_0", ""},
	} {
		m, err := Resolve(dir, c.arg)
		if err != nil {
			t.Errorf("Resolve(%q): %v", c.arg, err)
			continue
		}
		if m.Name != c.name || (c.path != "" && m.Path != c.path) {
			t.Errorf("Resolve(%q) = %q at %s, want %q at %s", c.arg, m.Name, m.Path, c.name, c.path)
		}
		if got, err := os.ReadFile(m.Path); err != nil || len(got) == 0 {
			t.Errorf("Resolve(%q): path %s unreadable: %v", c.arg, m.Path, err)
		}
	}
	m, err := Lookup(dir, "hf.co/Owner/Repo:TQ2_0")
	if err != nil {
		t.Fatal(err)
	}
	if m.Template != "{{ .Prompt }}" || m.System != "Be brief." || string(m.Params) != `{"temperature":0.5}` {
		t.Errorf("layers: template %q system %q params %q", m.Template, m.System, m.Params)
	}
	if b, _ := os.ReadFile(m.Path); string(b) != string(pulled) {
		t.Error("the pulled model's path is not its model blob")
	}
	// The name is kept as typed: another case is another name.
	if _, err := Lookup(dir, "hf.co/owner/repo:TQ2_0"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup of another case: %v, want ErrNotFound", err)
	}
	// Lookup never takes a path, even one that exists.
	if _, err := Lookup(dir, outside); err == nil {
		t.Errorf("Lookup(%q) found a path outside the store", outside)
	}
}

func TestResolveNotFoundSaysWhatWasTried(t *testing.T) {
	dir := t.TempDir()
	_, err := Resolve(dir, "nope")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Resolve(nope) = %v, want ErrNotFound", err)
	}
	for _, want := range []string{"the file nope", filepath.Join(dir, "nope.gguf"), "registry.ollama.ai/library/nope:latest"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say it tried %q", err, want)
		}
	}
}

func TestLookupHostileNames(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "models")
	if err := os.MkdirAll(filepath.Join(dir, "manifests"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Files a path trick could reach: beside the store and above its
	// manifests folder.
	secret := writeGGUF(t, filepath.Join(root, "secret.gguf"), "llama", quant.F16, -1)
	os.WriteFile(filepath.Join(dir, "manifests", "x"), []byte(`{"layers":[]}`), 0o644)
	addPulled(t, dir, "src", secret, nil)
	for _, name := range []string{"../secret", "../secret.gguf", "..", ".", "", "/etc/passwd", `..\secret`,
		"a/../../secret", "manifests/x", "..:latest", ".hidden", "x\x00y", strings.Repeat("a", 400),
		"blobs/sha256-" + strings.Repeat("0", 64)} {
		m, err := Lookup(dir, name)
		if err == nil {
			t.Errorf("Lookup(%q) = %s, want an error", name, m.Path)
			continue
		}
		if _, err := Remove(dir, name); err == nil {
			t.Errorf("Remove(%q) succeeded", name)
		}
		// Copy to a name: refused unless it is a valid name, whose
		// manifest then lies below manifests/.
		_, to, err := Copy(dir, "src", name)
		if _, perr := ParseName(name); perr != nil && err == nil {
			t.Errorf("Copy to %q succeeded", name)
		}
		if err == nil {
			n, _ := ParseName(to)
			if rel, err := filepath.Rel(filepath.Join(dir, "manifests"), ManifestPath(dir, n)); err != nil || !filepath.IsLocal(rel) {
				t.Errorf("Copy to %q wrote %s", name, ManifestPath(dir, n))
			}
		}
	}
	if _, err := os.Stat(filepath.Join(root, "secret.gguf")); err != nil {
		t.Errorf("the file beside the store was touched: %v", err)
	}
}

func TestLookupDamaged(t *testing.T) {
	model := writeGGUF(t, filepath.Join(t.TempDir(), "m.gguf"), "llama", quant.Q8_0, -1)
	for _, c := range []struct {
		name   string
		damage func(dir string, m *Manifest) *Manifest
		want   string
	}{
		{"missing blob", func(dir string, m *Manifest) *Manifest {
			p, _ := BlobPath(dir, m.Layers[0].Digest)
			os.Remove(p)
			return m
		}, "is missing"},
		{"short blob", func(dir string, m *Manifest) *Manifest {
			p, _ := BlobPath(dir, m.Layers[0].Digest)
			os.Truncate(p, 10)
			return m
		}, "has 10 bytes"},
		{"no model layer", func(dir string, m *Manifest) *Manifest {
			m.Layers = m.Layers[1:]
			return m
		}, "no model layer"},
		{"path in digest", func(dir string, m *Manifest) *Manifest {
			m.Layers[0].Digest = "sha256:../../../../etc/passwd"
			return m
		}, "bad digest"},
		{"huge text layer", func(dir string, m *Manifest) *Manifest {
			m.Layers[1].Size = 1 << 40
			return m
		}, "at most"},
		{"negative size", func(dir string, m *Manifest) *Manifest {
			m.Layers[1].Size = -1
			return m
		}, "size -1"},
	} {
		dir := t.TempDir()
		m := addPulled(t, dir, "m", model, map[string]string{MediaTemplate: "t"})
		n, _ := ParseName("m")
		if err := WriteManifest(dir, n, c.damage(dir, m)); err != nil {
			t.Fatal(err)
		}
		_, err := Lookup(dir, "m")
		if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Lookup = %v, want ErrDamaged saying %q", c.name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), dir) {
			t.Errorf("%s: error %q names the store's path", c.name, err)
		}
		// Listed all the same, so it can be removed.
		es, err := List(dir)
		if err != nil || len(es) != 1 || es[0].Err == nil {
			t.Errorf("%s: List = %+v, %v; want the damaged entry with its error", c.name, es, err)
		}
		if _, err := Remove(dir, "m"); err != nil {
			t.Errorf("%s: Remove: %v", c.name, err)
		}
	}
	dir := t.TempDir()
	n, _ := ParseName("big")
	os.MkdirAll(filepath.Dir(ManifestPath(dir, n)), 0o755)
	os.WriteFile(ManifestPath(dir, n), []byte(`{"layers":[`+strings.Repeat(" ", maxManifest)+`]}`), 0o644)
	if _, err := Lookup(dir, "big"); !errors.Is(err, ErrDamaged) {
		t.Errorf("Lookup of a huge manifest = %v, want ErrDamaged", err)
	}
}

func TestList(t *testing.T) {
	dir := t.TempDir()
	writeGGUF(t, filepath.Join(dir, "b-plain.gguf"), "llama", quant.Q8_0, -1)
	writeGGUF(t, filepath.Join(dir, ".hidden.gguf"), "llama", quant.Q8_0, -1)
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o644)
	os.Mkdir(filepath.Join(dir, "folder.gguf"), 0o755)
	os.Symlink(filepath.Join(dir, "gone"), filepath.Join(dir, "dangling.gguf"))
	os.WriteFile(filepath.Join(dir, "broken.gguf"), []byte("not gguf"), 0o644)
	tern := writeGGUF(t, filepath.Join(t.TempDir(), "t.gguf"), "bitnet-b1.58", quant.TQ2_0, -1)
	m := addPulled(t, dir, "hf.co/O/R:TQ2_0", tern, map[string]string{MediaParams: "{}"})
	// A pull's temporary manifest and strays are not models.
	mp := filepath.Join(dir, "manifests", "hf.co", "O", "R")
	os.WriteFile(filepath.Join(mp, ".tmp-TQ2_0-123"), []byte("{"), 0o644)
	os.WriteFile(filepath.Join(dir, "manifests", "stray"), []byte("{"), 0o644)

	es, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range es {
		got = append(got, e.Name)
	}
	if strings.Join(got, ",") != "b-plain,broken,hf.co/O/R:TQ2_0" {
		t.Fatalf("List names = %v", got)
	}
	if e := es[0]; e.Arch != "llama" || e.Type != "Q8_0" || e.Pulled || e.Err != nil || e.Digest != "" {
		t.Errorf("plain entry = %+v", e)
	}
	if es[1].Err == nil {
		t.Errorf("broken file listed without its error: %+v", es[1])
	}
	e := es[2]
	var total int64
	for _, l := range m.layers() {
		total += l.Size
	}
	b, _ := os.ReadFile(ManifestPath(dir, Name{"hf.co", "O", "R", "TQ2_0"}))
	h := sha256.Sum256(b)
	if e.Arch != "bitnet-b1.58" || e.Type != "TQ2_0" || !e.Pulled || e.Err != nil || e.Size != total ||
		e.Digest != hex.EncodeToString(h[:]) || e.Modified.IsZero() {
		t.Errorf("pulled entry = %+v (size want %d)", e, total)
	}
	// A looked-up model has the digest its entry lists; a plain file none.
	if lm, err := Lookup(dir, "hf.co/O/R:TQ2_0"); err != nil || lm.Digest != e.Digest {
		t.Errorf("Lookup's digest %v %v, want %s", lm, err, e.Digest)
	}
	if lm, err := Lookup(dir, "b-plain"); err != nil || lm.Digest != "" {
		t.Errorf("plain file's digest: %v %v", lm, err)
	}
	if es, err := List(filepath.Join(dir, "none")); err != nil || len(es) != 0 {
		t.Errorf("List of a missing folder = %v, %v; want an empty store", es, err)
	}
}

func TestFileType(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		typ   quant.Type
		ftype int
		want  string
	}{
		{quant.Q8_0, -1, "Q8_0"},
		{quant.Q4_K, 15, "Q4_K_M"}, // the file's ftype names the mix
		{quant.TQ1_0, 36, "TQ1_0"},
		{quant.I2_S, 40, "I2_S"}, // 40 is upstream's Q1_0 and bitnet.cpp's I2_S: the tensors decide
		{quant.F16, 1, "F16"},
	} {
		p := filepath.Join(dir, c.want+".gguf")
		writeGGUF(t, p, "llama", c.typ, c.ftype)
		if _, got, err := Header(p); err != nil || got != c.want {
			t.Errorf("%v ftype %d: FileType = %q, %v; want %q", c.typ, c.ftype, got, err, c.want)
		}
	}
}

func TestRemove(t *testing.T) {
	dir := t.TempDir()
	model := writeGGUF(t, filepath.Join(t.TempDir(), "m.gguf"), "llama", quant.Q8_0, -1)
	addPulled(t, dir, "a", model, map[string]string{MediaTemplate: "shared"})
	mb := addPulled(t, dir, "hf.co/o/b:q", model, map[string]string{MediaTemplate: "own"})
	writeGGUF(t, filepath.Join(dir, "plain.gguf"), "llama", quant.Q8_0, -1)
	blob := func(l Layer) string { p, _ := BlobPath(dir, l.Digest); return p }
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }

	name, err := Remove(dir, "hf.co/o/b:q")
	if err != nil || name != "hf.co/o/b:q" {
		t.Fatalf("Remove = %q, %v", name, err)
	}
	if !exists(blob(mb.Layers[0])) || !exists(blob(mb.Config)) {
		t.Error("Remove deleted blobs that \"a\" still uses")
	}
	if exists(blob(mb.Layers[1])) {
		t.Error("Remove kept the removed model's own template blob")
	}
	if exists(filepath.Join(dir, "manifests", "hf.co")) {
		t.Error("Remove left the empty manifest folders")
	}
	if _, err := Lookup(dir, "a"); err != nil {
		t.Errorf("the other model broke: %v", err)
	}
	if name, err := Remove(dir, "a:latest"); err != nil || name != "a:latest" {
		t.Fatalf("Remove(a:latest) = %q, %v", name, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "blobs")); len(ents) != 0 {
		t.Errorf("blobs left after removing every model: %v", ents)
	}
	if exists(filepath.Join(dir, "manifests", "registry.ollama.ai")) || !exists(filepath.Join(dir, "manifests")) {
		t.Error("pruning went wrong: want manifests/ kept, its empty folders gone")
	}
	if name, err := Remove(dir, "plain"); err != nil || name != "plain" || exists(filepath.Join(dir, "plain.gguf")) {
		t.Errorf("Remove(plain) = %q, %v", name, err)
	}
	if _, err := Remove(dir, "plain"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Remove of a removed model = %v, want ErrNotFound", err)
	}
}

func TestCopy(t *testing.T) {
	dir := t.TempDir()
	model := writeGGUF(t, filepath.Join(t.TempDir(), "m.gguf"), "llama", quant.Q8_0, -1)
	addPulled(t, dir, "hf.co/o/r:q", model, map[string]string{MediaSystem: "sys"})
	from, to, err := Copy(dir, "hf.co/o/r:q", "mine")
	if err != nil || from != "hf.co/o/r:q" || to != "mine:latest" {
		t.Fatalf("Copy = %q, %q, %v", from, to, err)
	}
	a, _ := Lookup(dir, "hf.co/o/r:q")
	b, err := Lookup(dir, "mine")
	if err != nil || b.Path != a.Path || b.System != "sys" {
		t.Fatalf("copy = %+v, %v; want the same blobs as %+v", b, err, a)
	}
	// Removing the original keeps the copy whole.
	if _, err := Remove(dir, "hf.co/o/r:q"); err != nil {
		t.Fatal(err)
	}
	if _, err := Lookup(dir, "mine"); err != nil {
		t.Errorf("the copy broke when its source was removed: %v", err)
	}

	// A plain file becomes a blob sharing its bytes.
	plain := filepath.Join(dir, "plain.gguf")
	writeGGUF(t, plain, "llama", quant.F16, -1)
	if _, to, err := Copy(dir, "plain", "hf.co/me/plain:F16"); err != nil || to != "hf.co/me/plain:F16" {
		t.Fatalf("Copy(plain) = %q, %v", to, err)
	}
	c, err := Lookup(dir, "hf.co/me/plain:F16")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(plain)
	if got, _ := os.ReadFile(c.Path); string(got) != string(want) {
		t.Error("the copy's blob differs from the file")
	}
	if _, err := Remove(dir, "hf.co/me/plain:F16"); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(plain); err != nil || string(got) != string(want) {
		t.Errorf("removing the copy hurt the file: %v", err)
	}

	// A name a plain file has is refused: the file would shadow the copy.
	writeGGUF(t, filepath.Join(dir, "taken.gguf"), "llama", quant.F16, -1)
	if _, _, err := Copy(dir, "mine", "taken"); err == nil {
		t.Error("Copy onto a plain file's name succeeded")
	}
	if _, _, err := Copy(dir, "absent", "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Copy of an absent model = %v, want ErrNotFound", err)
	}
}

// FuzzManifest: whatever a manifest holds, reading it never panics, and a
// model found through it lies in the blobs folder.
func FuzzManifest(f *testing.F) {
	good, _ := json.Marshal(Manifest{SchemaVersion: 2, Layers: []Layer{{MediaType: MediaModel,
		Digest: "sha256:" + strings.Repeat("ab", 32), Size: 3}}})
	f.Add(good)
	f.Add([]byte(`{"layers":[{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:../../x","size":1}]}`))
	f.Add([]byte(`{"config":{"digest":"x"},"layers":null}`))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		os.MkdirAll(filepath.Join(dir, "blobs"), 0o755)
		os.WriteFile(filepath.Join(dir, "blobs", "sha256-"+strings.Repeat("ab", 32)), []byte("abc"), 0o644)
		n, _ := ParseName("m")
		os.MkdirAll(filepath.Dir(ManifestPath(dir, n)), 0o755)
		os.WriteFile(ManifestPath(dir, n), b, 0o644)
		m, err := Lookup(dir, "m")
		if err == nil {
			if rel, err := filepath.Rel(filepath.Join(dir, "blobs"), m.Path); err != nil || !filepath.IsLocal(rel) {
				t.Fatalf("model at %s, outside the blobs", m.Path)
			}
		}
		List(dir)
		Remove(dir, "m")
	})
}
