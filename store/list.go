package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/quant"
)

// Entry is one model of the store, as List reports it.
type Entry struct {
	// Name is a pulled model's Display form, or a plain file's name
	// without ".gguf".
	Name     string
	Path     string // the GGUF file ("" when a pulled model has no usable model layer)
	Size     int64  // bytes: the file, or all of a pulled model's blobs
	Modified time.Time
	// Digest is the sha256 of a pulled model's manifest, in hex, as Ollama
	// reports it; "" for a plain file.
	Digest string
	Pulled bool
	// Type is the file type ("Q4_K_M", "TQ2_0", "I2_S", ...) and Arch its
	// general.architecture; empty when the file cannot be read.
	Type, Arch string
	// Err says why the model cannot be used (a missing blob, an unreadable
	// file); such models are listed so that they can be removed.
	Err error
}

// List returns the models of the store folder dir sorted by name: the
// plain DIR/*.gguf files (links followed) and the pulled models, with
// their GGUF headers' type and architecture. A missing folder is an empty
// store.
func List(dir string) ([]Entry, error) {
	es, err := Scan(dir)
	for i := range es {
		if e := &es[i]; e.Err == nil {
			e.Arch, e.Type, e.Err = Header(e.Path)
		}
	}
	return es, err
}

// Scan is List without opening the GGUF files (no Type, Arch or header
// errors): what a server listing its models often needs.
func Scan(dir string) ([]Entry, error) {
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	var out []Entry
	for _, de := range des {
		name, ok := strings.CutSuffix(de.Name(), ".gguf")
		if !ok || strings.HasPrefix(name, ".") || name == "" {
			continue
		}
		p := filepath.Join(dir, de.Name())
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() {
			continue // a dangling link or a folder
		}
		out = append(out, Entry{Name: name, Path: p, Size: fi.Size(), Modified: fi.ModTime()})
	}
	names, err := pulledNames(dir)
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		out = append(out, pulledEntry(dir, n))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func pulledEntry(dir string, n Name) Entry {
	e := Entry{Name: n.Display(), Pulled: true}
	if fi, err := os.Stat(ManifestPath(dir, n)); err == nil {
		e.Modified = fi.ModTime()
	}
	man, b, err := ReadManifest(dir, n)
	if err != nil {
		e.Err = err
		return e
	}
	e.Digest = manifestDigest(b)
	for _, l := range man.layers() {
		e.Size += l.Size
	}
	m, err := fromManifest(dir, n, man, b)
	if err != nil {
		e.Err = err
		return e
	}
	e.Path = m.Path
	return e
}

// pulledNames walks DIR/manifests/HOST/NAMESPACE/MODEL/TAG and returns the
// names of the manifests found; files that do not make a valid name (a
// pull's temporary files, strays) are skipped.
func pulledNames(dir string) ([]Name, error) {
	root := filepath.Join(dir, "manifests")
	var out []Name
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipDir
			}
			return err
		}
		rel, _ := filepath.Rel(root, p)
		parts := strings.Split(filepath.ToSlash(rel), "/")
		if d.IsDir() {
			if len(parts) >= 4 {
				return fs.SkipDir
			}
			return nil
		}
		if len(parts) != 4 || !d.Type().IsRegular() {
			return nil
		}
		host := strings.ReplaceAll(parts[0], "%", ":")
		n, err := ParseName(host + "/" + parts[1] + "/" + parts[2] + ":" + parts[3])
		if err != nil || n.Path() != filepath.FromSlash(rel) {
			return nil
		}
		out = append(out, n)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: listing pulled models: %w", err)
	}
	return out, nil
}

// Header reads a GGUF file's architecture and file type from its header
// (the file is mapped, not read).
func Header(path string) (arch, fileType string, err error) {
	f, err := gguf.Open(path)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	arch, _ = f.String("general.architecture")
	return arch, FileType(f), nil
}

// fileTypes are llama.cpp's llama_ftype values (include/llama.h) that mean
// the same in every fork; from 38 on, forks disagree (bitnet.cpp's I2_S is
// 40, upstream's Q1_0), so those files are named by their tensors.
var fileTypes = map[uint64]string{
	0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
	10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
	16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
	22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
	28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
}

// FileType names a file's quantization as Ollama and llama.cpp do: its
// general.file_type where that is unambiguous, else the type holding the
// most bytes of its matrices ("" for a file without any).
func FileType(f *gguf.File) string {
	if v, err := f.Uint("general.file_type"); err == nil {
		if s, ok := fileTypes[v]; ok {
			return s
		}
	}
	bytesByType := map[quant.Type]uint64{}
	for _, t := range f.Tensors {
		if len(t.Dims) >= 2 {
			bytesByType[t.Type] += t.Size
		}
	}
	var best quant.Type
	var bestBytes uint64
	for t, b := range bytesByType {
		if b > bestBytes || b == bestBytes && t < best {
			best, bestBytes = t, b
		}
	}
	if bestBytes == 0 {
		return ""
	}
	return best.String()
}
