// Package testfiles finds the files tests read: small fixtures committed in
// the repository's testdata/ folder, and the larger cross-checks in
// ../shared beside the clone (models and vectors made by llama.cpp), which
// a fresh clone may not have. It is for tests only.
//
// Both folders have the same layout (testdata/README.md lists what is
// committed). A fixture that compresses well is committed gzip'd as
// testdata/REL.gz (no fixture's own name ends in .gz); Path hands tests the
// plain file all the same.
package testfiles

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
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

// gz is the suffix of a gzip'd fixture in testdata/.
const gz = ".gz"

// dirs are the folders searched, testdata/ first.
func dirs(root string) (testdata, shared string) {
	return filepath.Join(root, "testdata"), filepath.Join(root, "..", "shared")
}

// Find returns where rel (a slash-separated path such as
// "models/stories260K/stories260K-f32.gguf") is stored: testdata/rel in the
// repository, else testdata/rel.gz (gzip'd: Path gives the plain file),
// else ../shared/rel beside the repository; "" and false when none of them
// is there.
func Find(rel string) (string, bool) {
	return find(Root(), rel)
}

func find(root, rel string) (string, bool) {
	if root == "" {
		return "", false
	}
	testdata, shared := dirs(root)
	name := filepath.FromSlash(rel)
	for _, p := range []string{filepath.Join(testdata, name), filepath.Join(testdata, name+gz), filepath.Join(shared, name)} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, true
		}
	}
	return "", false
}

// Path is Find for a test: it returns a plain file holding rel (a gzip'd
// fixture decompressed into a folder of t's that is removed when t ends),
// and skips t, naming the file, when neither testdata/ nor ../shared holds
// rel.
func Path(t testing.TB, rel string) string {
	t.Helper()
	p, ok := Find(rel)
	if !ok {
		t.Skipf("skipped: %s is in neither testdata/ nor ../shared", rel)
	}
	if !strings.HasSuffix(p, gz) {
		return p
	}
	dst := filepath.Join(t.TempDir(), path.Base(rel))
	if err := gunzip(dst, p); err != nil {
		t.Fatal(err)
	}
	return dst
}

// gunzip writes the decompressed src to dst; the gzip reader checks the
// data's CRC and length at the end, so a damaged fixture is an error.
func gunzip(dst, src string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("testfiles: %w", err)
	}
	defer in.Close()
	zr, err := gzip.NewReader(in)
	if err != nil {
		return fmt.Errorf("testfiles: %s: %w", src, err)
	}
	out, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("testfiles: %w", err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("testfiles: %w", cerr)
		}
	}()
	if _, err := io.Copy(out, zr); err != nil {
		return fmt.Errorf("testfiles: decompressing %s: %w", src, err)
	}
	return nil
}

// Glob returns the slash-separated relative paths (for Path) of the files
// matching pattern (filepath.Match syntax, slash-separated, such as
// "models/*/*.gguf") in testdata/, gzip'd or not, and in ../shared, sorted
// and each once. It skips t, naming the pattern, when nothing matches.
func Glob(t testing.TB, pattern string) []string {
	t.Helper()
	rels, err := glob(Root(), pattern)
	if err != nil {
		t.Fatal(err)
	}
	if len(rels) == 0 {
		t.Skipf("skipped: no file matches %s in testdata/ or ../shared", pattern)
	}
	return rels
}

func glob(root, pattern string) ([]string, error) {
	if root == "" {
		return nil, nil
	}
	testdata, shared := dirs(root)
	seen := map[string]bool{}
	// add records dir's files matching pat under their names less the .gz
	// of a gzip'd fixture.
	add := func(dir, pat string) error {
		m, err := filepath.Glob(filepath.Join(dir, filepath.FromSlash(pat)))
		if err != nil {
			return fmt.Errorf("testfiles: pattern %q: %w", pattern, err)
		}
		for _, p := range m {
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return fmt.Errorf("testfiles: %w", err)
			}
			seen[strings.TrimSuffix(filepath.ToSlash(rel), gz)] = true
		}
		return nil
	}
	for _, d := range []struct{ dir, pat string }{{testdata, pattern}, {testdata, pattern + gz}, {shared, pattern}} {
		if err := add(d.dir, d.pat); err != nil {
			return nil, err
		}
	}
	rels := make([]string, 0, len(seen))
	for rel := range seen {
		rels = append(rels, rel)
	}
	sort.Strings(rels)
	return rels, nil
}

// Shared returns ../shared/rel, the larger cross-checks that are not
// committed, skipping t, naming the file, when it is absent.
func Shared(t testing.TB, rel string) string {
	t.Helper()
	r := Root()
	_, shared := dirs(r)
	p := filepath.Join(shared, filepath.FromSlash(rel))
	if _, err := os.Stat(p); r == "" || err != nil {
		t.Skipf("skipped: cross-check file ../shared/%s is absent", rel)
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
