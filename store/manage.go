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

	"github.com/edgellm/edgellm/internal/atomicfile"
)

// Remove deletes the model name from the store folder dir and returns the
// name it had (a plain file's name or a pulled model's Display form). A
// plain file DIR/NAME.gguf is deleted (a link: the link only). A pulled
// model's manifest is deleted, then the blobs no other manifest names, and
// the manifest folders left empty.
func Remove(dir, name string) (string, error) {
	var tried []string
	if plain, ok := plainName(name); ok {
		p := filepath.Join(dir, plain+".gguf")
		if fi, err := os.Lstat(p); err == nil && !fi.IsDir() {
			if err := os.Remove(p); err != nil {
				return "", fmt.Errorf("store: %w", err)
			}
			return plain, nil
		}
		tried = append(tried, p)
	}
	n, err := ParseName(name)
	if err != nil {
		if len(tried) == 0 {
			return "", err
		}
		return "", &NotFoundError{Name: name, Tried: append(tried, "no pulled model: "+err.Error())}
	}
	mp := ManifestPath(dir, n)
	man, _, err := ReadManifest(dir, n)
	if errors.Is(err, fs.ErrNotExist) {
		return "", &NotFoundError{Name: name, Tried: append(tried, "the pulled model "+n.String()+" ("+mp+")")}
	}
	// A damaged manifest is removed all the same; its blobs stay (we
	// cannot tell which they are) for another pull to reuse.
	if err := os.Remove(mp); err != nil {
		return "", fmt.Errorf("store: %w", err)
	}
	pruneEmpty(filepath.Join(dir, "manifests"), filepath.Dir(mp))
	if man == nil {
		return n.Display(), nil
	}
	used, err := usedBlobs(dir)
	if err != nil {
		return n.Display(), fmt.Errorf("store: %s removed, its blobs kept: %w", n.Display(), err)
	}
	for _, l := range man.layers() {
		if used[l.Digest] {
			continue
		}
		p, _ := BlobPath(dir, l.Digest) // checked by ReadManifest
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return n.Display(), fmt.Errorf("store: %s removed, a blob kept: %w", n.Display(), err)
		}
	}
	return n.Display(), nil
}

// pruneEmpty removes the empty folders from dir up to, not including, root.
func pruneEmpty(root, dir string) {
	for dir != root && len(dir) > len(root) {
		if os.Remove(dir) != nil { // not empty (or gone)
			return
		}
		dir = filepath.Dir(dir)
	}
}

// usedBlobs is the set of digests that the store's manifests name. A
// manifest that cannot be read makes it fail: deleting a blob that an
// unreadable manifest might name would lose data.
func usedBlobs(dir string) (map[string]bool, error) {
	names, err := pulledNames(dir)
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, n := range names {
		man, _, err := ReadManifest(dir, n)
		if err != nil {
			return nil, err
		}
		for _, l := range man.layers() {
			used[l.Digest] = true
		}
	}
	return used, nil
}

// ErrNameTaken reports a copy's destination that a plain file already has.
var ErrNameTaken = errors.New("name taken by a file")

// Copy makes dst name the model src names and returns both names as
// stored. dst is a pulled-style name (ParseName) and gets a manifest: a
// pulled source's manifest as it is, naming the same blobs; a plain file
// becomes the blob of a one-layer manifest, hard-linked (copied where links
// fail), so the copy and the file share their bytes on disk. A dst that a
// plain file DIR/DST.gguf already names is refused, since that file would
// shadow the copy; an existing pulled dst is replaced, as Ollama does.
func Copy(dir, src, dst string) (from, to string, err error) {
	d, err := ParseName(dst)
	if err != nil {
		return "", "", err
	}
	if plain, ok := plainName(dst); ok {
		if _, err := os.Lstat(filepath.Join(dir, plain+".gguf")); err == nil {
			return "", "", fmt.Errorf("store: %w: %q is the file %s.gguf of the store; pick another name", ErrNameTaken, dst, plain)
		}
	}
	m, err := Lookup(dir, src)
	if err != nil {
		return "", "", err
	}
	if m.Manifest != nil {
		s, _ := ParseName(src) // a pulled model's name parsed
		_, b, err := ReadManifest(dir, s)
		if err != nil {
			return "", "", err
		}
		return m.Name, d.Display(), writeFileAtomic(ManifestPath(dir, d), b)
	}
	l, err := linkBlob(dir, m.Path)
	if err != nil {
		return "", "", err
	}
	man := Manifest{SchemaVersion: 2, MediaType: MediaManifest, Layers: []Layer{l}}
	return m.Name, d.Display(), WriteManifest(dir, d, &man)
}

// linkBlob makes the file at path a blob of the store and returns its layer.
func linkBlob(dir, path string) (Layer, error) {
	f, err := os.Open(path)
	if err != nil {
		return Layer{}, fmt.Errorf("store: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return Layer{}, fmt.Errorf("store: hashing %s: %w", path, err)
	}
	l := Layer{MediaType: MediaModel, Digest: "sha256:" + hex.EncodeToString(h.Sum(nil)), Size: size}
	bp, _ := BlobPath(dir, l.Digest)
	if fi, err := os.Stat(bp); err == nil && fi.Size() == size {
		return l, nil // already there (content-addressed)
	}
	if err := os.MkdirAll(filepath.Dir(bp), 0o755); err != nil {
		return Layer{}, fmt.Errorf("store: %w", err)
	}
	real, err := filepath.EvalSymlinks(path) // a link to the file, not to the link
	if err == nil {
		os.Remove(bp) // a wrong-sized leftover
		if os.Link(real, bp) == nil {
			return l, nil
		}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Layer{}, fmt.Errorf("store: %w", err)
	}
	if err := copyAtomic(bp, f); err != nil {
		return Layer{}, err
	}
	return l, nil
}

// WriteManifest writes m as n's manifest in the store folder dir, through a
// temporary file renamed into place.
func WriteManifest(dir string, n Name, m *Manifest) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return writeFileAtomic(ManifestPath(dir, n), b)
}

func writeFileAtomic(path string, b []byte) error {
	return copyAtomicFrom(path, func(w io.Writer) error { _, err := w.Write(b); return err })
}

func copyAtomic(path string, r io.Reader) error {
	return copyAtomicFrom(path, func(w io.Writer) error { _, err := io.Copy(w, r); return err })
}

// copyAtomicFrom makes path's folder and writes path through
// internal/atomicfile, whose hidden temporary name List skips.
func copyAtomicFrom(path string, write func(io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if err := atomicfile.Write(path, write, nil); err != nil {
		return fmt.Errorf("store: writing %s: %w", path, err)
	}
	return nil
}
