package testfiles

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// tree makes DIR/repo/testdata and DIR/shared holding files (slash paths
// relative to DIR, contents as given; a name ending in .gz is gzip'd) and
// returns DIR/repo.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for rel, data := range files {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b := []byte(data)
		if strings.HasSuffix(rel, gz) {
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			zw.Write(b)
			zw.Close()
			b = buf.Bytes()
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "repo")
}

func TestFindOrder(t *testing.T) {
	root := tree(t, map[string]string{
		"repo/testdata/m/a.gguf":    "testdata a",
		"shared/m/a.gguf":           "shared a",
		"repo/testdata/m/b.gguf.gz": "testdata b",
		"shared/m/b.gguf":           "shared b",
		"shared/m/c.gguf":           "shared c",
		"repo/testdata/m/d.txt":     "plain d",
		"repo/testdata/m/d.txt.gz":  "gzip'd d",
	})
	for rel, want := range map[string]string{
		"m/a.gguf": "repo/testdata/m/a.gguf",
		"m/b.gguf": "repo/testdata/m/b.gguf.gz",
		"m/c.gguf": "shared/m/c.gguf",
		"m/d.txt":  "repo/testdata/m/d.txt",
	} {
		got, ok := find(root, rel)
		if w := filepath.Join(filepath.Dir(root), filepath.FromSlash(want)); !ok || got != w {
			t.Errorf("find(%q) = %q, %v; want %q", rel, got, ok, w)
		}
	}
	for _, rel := range []string{"m/e.gguf", "m", "testdata/m/a.gguf"} {
		if got, ok := find(root, rel); ok {
			t.Errorf("find(%q) = %q, want none", rel, got)
		}
	}
	if got, ok := find("", "m/a.gguf"); ok {
		t.Errorf("find with no root = %q", got)
	}
}

func TestGlob(t *testing.T) {
	root := tree(t, map[string]string{
		"repo/testdata/m/x/a.gguf":    "",
		"repo/testdata/m/x/b.gguf.gz": "",
		"repo/testdata/m/y/b.txt.gz":  "",
		"shared/m/x/a.gguf":           "",
		"shared/m/x/b.gguf":           "",
		"shared/m/z/c.gguf":           "",
		"shared/v/d.gguf":             "",
	})
	got, err := glob(root, "m/*/*.gguf")
	if want := []string{"m/x/a.gguf", "m/x/b.gguf", "m/z/c.gguf"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("glob = %q, %v; want %q", got, err, want)
	}
	if got, err := glob(root, "m/nothing/*"); err != nil || len(got) != 0 {
		t.Errorf("glob of nothing = %q, %v", got, err)
	}
	if _, err := glob(root, "m/[/*"); err == nil || !strings.Contains(err.Error(), "m/[/*") {
		t.Errorf("bad pattern: err = %v", err)
	}
}

func TestGunzip(t *testing.T) {
	root := tree(t, map[string]string{"repo/testdata/f.txt.gz": "some text\n"})
	src := filepath.Join(root, "testdata", "f.txt.gz")
	dst := filepath.Join(t.TempDir(), "f.txt")
	if err := gunzip(dst, src); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(dst); err != nil || string(b) != "some text\n" {
		t.Fatalf("decompressed %q, %v", b, err)
	}
	// A damaged fixture is an error naming it, never a silently short file.
	good, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string][]byte{
		"truncated": good[:len(good)-4],
		"bad crc":   append(append([]byte{}, good[:len(good)-8]...), 0, 0, 0, 0, 10, 0, 0, 0),
		"not gzip":  []byte("plain"),
	} {
		p := filepath.Join(t.TempDir(), "bad.txt.gz")
		if err := os.WriteFile(p, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := gunzip(filepath.Join(t.TempDir(), "out"), p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	if err := gunzip(dst, filepath.Join(root, "missing.gz")); err == nil {
		t.Error("missing file: no error")
	}
}

// skipRecorder is a testing.TB whose Skipf records the message and ends
// the goroutine, as testing's does, without marking the real test skipped.
type skipRecorder struct {
	testing.TB
	msg string
}

func (r *skipRecorder) Skipf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// skipMessage runs f with a skipRecorder and returns its skip message ("" if
// f returned).
func skipMessage(t *testing.T, f func(tb testing.TB)) string {
	r := &skipRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r.msg
}

func TestSkipNamesTheFile(t *testing.T) {
	if msg := skipMessage(t, func(tb testing.TB) { Path(tb, "models/no-such/file.gguf") }); !strings.Contains(msg, "models/no-such/file.gguf") {
		t.Errorf("Path: skip message %q", msg)
	}
	if msg := skipMessage(t, func(tb testing.TB) { Shared(tb, "models/no-such/file.gguf") }); !strings.Contains(msg, "../shared/models/no-such/file.gguf") {
		t.Errorf("Shared: skip message %q", msg)
	}
	if msg := skipMessage(t, func(tb testing.TB) { Glob(tb, "no-such/*.gguf") }); !strings.Contains(msg, "no-such/*.gguf") {
		t.Errorf("Glob: skip message %q", msg)
	}
}

// TestFixtures checks every committed fixture: each is listed in
// testdata/README.md, a gzip'd one decompresses whole, and each equals
// ../shared's copy where that is present.
func TestFixtures(t *testing.T) {
	r := Root()
	testdata, shared := dirs(r)
	readme, err := os.ReadFile(filepath.Join(testdata, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	n, compared := 0, 0
	err = filepath.WalkDir(testdata, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(testdata, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == "README.md" {
			return nil
		}
		n++
		if !bytes.Contains(readme, []byte(filepath.Base(p))) && !strings.HasSuffix(rel, "/README.md") {
			t.Errorf("testdata/README.md does not list %s", rel)
		}
		plain := strings.TrimSuffix(rel, gz)
		got := Path(t, plain)
		want, err := os.ReadFile(filepath.Join(shared, filepath.FromSlash(plain)))
		if err != nil {
			return nil // no ../shared copy to compare with
		}
		b, err := os.ReadFile(got)
		if err != nil {
			return err
		}
		if !bytes.Equal(b, want) {
			t.Errorf("testdata/%s differs from ../shared/%s", rel, plain)
		}
		compared++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no fixtures in testdata/")
	}
	t.Logf("%d fixtures, %d compared with ../shared", n, compared)
}

func TestLlamaCppToolFromEnv(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "fake-tool")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(LlamaCppEnv, dir)
	if got := LlamaCppTool(t, "fake-tool"); got != p {
		t.Fatalf("LlamaCppTool = %q, want %q", got, p)
	}
}
