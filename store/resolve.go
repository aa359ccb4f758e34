package store

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Model is a model found by Resolve or Lookup: the GGUF file to load and,
// for a pulled model, the texts of its template, system and params layers.
type Model struct {
	// Name is what the model is called: the path Resolve was given, a plain
	// file's name without ".gguf", or a pulled model's Display form.
	Name string
	Path string // the GGUF file
	// Dir is the store folder the model was found in; "" for a path.
	Dir string
	// Manifest is a pulled model's manifest; nil for a plain file.
	Manifest *Manifest
	// Digest is a pulled model's manifest digest as Entry has it; "" for a
	// plain file.
	Digest string
	// Template is the template layer (Ollama's Go text/template), System
	// the system layer, Params the params layer (Ollama's JSON of default
	// options); empty when the model has none.
	Template string
	System   string
	Params   []byte
}

// ErrNotFound reports a name that names no model.
var ErrNotFound = errors.New("model not found")

// ErrDamaged reports a pulled model whose manifest or blobs are broken.
// Errors wrapping it name no file-system path, so a server may pass them on.
var ErrDamaged = errors.New("damaged model in the store")

// NotFoundError is an ErrNotFound that lists the places tried, for a
// person at a terminal (it names paths; a server should say less).
type NotFoundError struct {
	Name  string
	Tried []string
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("model %q not found (tried %s)", e.Name, strings.Join(e.Tried, "; "))
}

func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// Limits on what is read of a manifest and of a text layer: real ones are a
// few KiB, and a damaged store must not make a reader allocate without end.
const (
	maxManifest  = 4 << 20
	maxTextLayer = 4 << 20
)

// Resolve finds the model arg names, for the CLI: an existing file path
// wins, then the store folder dir as Lookup reads it.
func Resolve(dir, arg string) (*Model, error) {
	fi, err := os.Stat(arg)
	if err == nil && fi.Mode().IsRegular() {
		return &Model{Name: arg, Path: arg}, nil
	}
	m, err := Lookup(dir, arg)
	var nf *NotFoundError
	if errors.As(err, &nf) {
		nf.Tried = append([]string{"the file " + arg}, nf.Tried...)
	}
	return m, err
}

// Lookup finds a model in the store folder dir by name only (never by
// path, so a server can hand it any string): DIR/NAME.gguf for a plain
// name with an optional ":latest", then a pulled name's manifest, whose
// model layer's blob must exist and have the size the manifest says.
func Lookup(dir, name string) (*Model, error) {
	var tried []string
	if plain, ok := plainName(name); ok {
		p := filepath.Join(dir, plain+".gguf")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() { // follows links
			return &Model{Name: plain, Path: p, Dir: dir}, nil
		}
		tried = append(tried, p)
	}
	n, err := ParseName(name)
	if err != nil {
		if len(tried) == 0 {
			return nil, err
		}
		return nil, &NotFoundError{Name: name, Tried: append(tried, "no pulled model: "+err.Error())}
	}
	man, b, err := ReadManifest(dir, n)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &NotFoundError{Name: name, Tried: append(tried, "the pulled model "+n.String()+" ("+ManifestPath(dir, n)+")")}
	}
	if err != nil {
		return nil, err
	}
	return fromManifest(dir, n, man, b)
}

// plainName is name without an optional ":latest" when it can be a plain
// file's name in the store folder: no separators, no ':', not hidden.
func plainName(name string) (string, bool) {
	name = strings.TrimSuffix(name, ":"+DefaultTag)
	if name == "" || len(name) > 255 || strings.ContainsAny(name, "/\\:\x00") || strings.HasPrefix(name, ".") {
		return "", false
	}
	return name, true
}

// ReadManifest reads the manifest of n in the store folder dir and returns
// it with its bytes. A missing manifest is an fs.ErrNotExist.
func ReadManifest(dir string, n Name) (*Manifest, []byte, error) {
	f, err := os.Open(ManifestPath(dir, n))
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxManifest+1))
	if err != nil {
		return nil, nil, fmt.Errorf("store: reading the manifest of %s: %w", n.Display(), err)
	}
	m, err := parseManifest(b)
	if err != nil {
		return nil, nil, fmt.Errorf("store: the manifest of %s: %w", n.Display(), err)
	}
	return m, b, nil
}

// parseManifest decodes a manifest and checks every digest, so no layer can
// name a path outside the blobs folder.
func parseManifest(b []byte) (*Manifest, error) {
	if len(b) > maxManifest {
		return nil, fmt.Errorf("%w: manifest larger than %d bytes", ErrDamaged, maxManifest)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDamaged, err)
	}
	for _, l := range m.layers() {
		if _, err := BlobPath("", l.Digest); err != nil {
			return nil, fmt.Errorf("%w: layer %s: %v", ErrDamaged, l.MediaType, err)
		}
		if l.Size < 0 {
			return nil, fmt.Errorf("%w: layer %s has size %d", ErrDamaged, l.Digest, l.Size)
		}
	}
	return &m, nil
}

// layers are the manifest's layers and its config blob when it has one.
func (m *Manifest) layers() []Layer {
	if m.Config.Digest == "" {
		return m.Layers
	}
	return append([]Layer{m.Config}, m.Layers...)
}

// manifestDigest is a pulled model's digest, as Ollama reports it: the
// sha256 of its manifest's bytes, in hex.
func manifestDigest(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// fromManifest checks a pulled model's blobs and reads its text layers
// (raw: the manifest's bytes). As Ollama does, a later layer of a type
// replaces an earlier one.
func fromManifest(dir string, n Name, man *Manifest, raw []byte) (*Model, error) {
	m := &Model{Name: n.Display(), Manifest: man, Digest: manifestDigest(raw), Dir: dir}
	for _, l := range man.Layers {
		var text *string
		switch l.MediaType {
		case MediaModel:
			if m.Path != "" {
				continue // a second model layer (Ollama's adapters): the first is the model
			}
			p, err := checkBlob(dir, n, l)
			if err != nil {
				return nil, err
			}
			m.Path = p
			continue
		case MediaTemplate:
			text = &m.Template
		case MediaSystem:
			text = &m.System
		case MediaParams:
			b, err := readTextLayer(dir, n, l)
			if err != nil {
				return nil, err
			}
			m.Params = b
			continue
		default:
			continue // license, projector, config: not used here
		}
		b, err := readTextLayer(dir, n, l)
		if err != nil {
			return nil, err
		}
		*text = string(b)
	}
	if m.Path == "" {
		return nil, fmt.Errorf("%w: %s has no model layer", ErrDamaged, n.Display())
	}
	return m, nil
}

// checkBlob returns a layer's blob path once it is a regular file of the
// manifest's size.
func checkBlob(dir string, n Name, l Layer) (string, error) {
	p, err := BlobPath(dir, l.Digest)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrDamaged, n.Display(), err)
	}
	fi, err := os.Stat(p)
	switch {
	case err != nil:
		return "", fmt.Errorf("%w: %s: blob %s is missing (pull the model again)", ErrDamaged, n.Display(), l.Digest)
	case !fi.Mode().IsRegular():
		return "", fmt.Errorf("%w: %s: blob %s is not a file", ErrDamaged, n.Display(), l.Digest)
	case fi.Size() != l.Size:
		return "", fmt.Errorf("%w: %s: blob %s has %d bytes, the manifest says %d (pull the model again)",
			ErrDamaged, n.Display(), l.Digest, fi.Size(), l.Size)
	}
	return p, nil
}

func readTextLayer(dir string, n Name, l Layer) ([]byte, error) {
	if l.Size > maxTextLayer {
		return nil, fmt.Errorf("%w: %s: %s layer of %d bytes (at most %d)", ErrDamaged, n.Display(), l.MediaType, l.Size, maxTextLayer)
	}
	p, err := checkBlob(dir, n, l)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", n.Display(), err)
	}
	if int64(len(b)) != l.Size {
		return nil, fmt.Errorf("%w: %s: blob %s changed while read", ErrDamaged, n.Display(), l.Digest)
	}
	return b, nil
}
