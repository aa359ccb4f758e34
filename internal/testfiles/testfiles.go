// Package testfiles finds the files tests read: small fixtures committed in
// the repository's testdata/ folder, and the larger cross-checks in
// ../shared beside the clone (models and vectors made by llama.cpp), which
// a fresh clone may not have. It is for tests only.
package testfiles

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

var (
	rootOnce sync.Once
	root     string
)

// Root is the repository root: the nearest folder above the working
// directory that holds go.mod ("" when there is none).
func Root() string {
	rootOnce.Do(func() {
		dir, err := os.Getwd()
		if err != nil {
			return
		}
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				root = dir
				return
			}
			up := filepath.Dir(dir)
			if up == dir {
				return
			}
			dir = up
		}
	})
	return root
}

// Find returns the path of rel (a slash-separated path such as
// "models/stories260K/stories260K-f32.gguf"): testdata/rel in the
// repository when it is there, else ../shared/rel beside the repository,
// else "" and false.
func Find(rel string) (string, bool) {
	r := Root()
	if r == "" {
		return "", false
	}
	for _, dir := range []string{filepath.Join(r, "testdata"), filepath.Join(r, "..", "shared")} {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if _, err := os.Stat(p); err == nil {
			return p, true
		}
	}
	return "", false
}

// Path is Find for a test: it skips t, naming the file, when neither
// testdata/ nor ../shared holds rel.
func Path(t testing.TB, rel string) string {
	t.Helper()
	p, ok := Find(rel)
	if !ok {
		t.Skipf("test file %s is in neither testdata/ nor ../shared", rel)
	}
	return p
}

// Shared returns ../shared/rel, the larger cross-checks that are not
// committed, skipping t, naming the file, when it is absent.
func Shared(t testing.TB, rel string) string {
	t.Helper()
	r := Root()
	p := filepath.Join(r, "..", "shared", filepath.FromSlash(rel))
	if _, err := os.Stat(p); r == "" || err != nil {
		t.Skipf("cross-check file ../shared/%s is absent", rel)
	}
	return p
}

// Floats reads a text file of whitespace-separated numbers (llama.cpp's
// logits files: one line per position), one slice per non-empty line.
func Floats(t testing.TB, path string) [][]float32 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rows [][]float32
	for _, line := range strings.Split(string(b), "\n") {
		var row []float32
		for _, f := range strings.Fields(line) {
			v, err := strconv.ParseFloat(f, 32)
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			row = append(row, float32(v))
		}
		if len(row) > 0 {
			rows = append(rows, row)
		}
	}
	return rows
}
