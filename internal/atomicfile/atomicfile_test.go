package atomicfile

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// leftovers lists the folder's names other than the target's.
func leftovers(t *testing.T, dir, target string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		if e.Name() != target {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := WriteFile(path, []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, []byte("two")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "two" {
		t.Fatalf("read %q, %v; want two", b, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != Perm {
		t.Errorf("mode %v, want %v", fi.Mode().Perm(), os.FileMode(Perm))
	}
	if l := leftovers(t, dir, "f"); len(l) != 0 {
		t.Errorf("left %q", l)
	}
}

// Every way to fail leaves the old file as it was and no temporary file.
func TestErrorsLeaveNoTemp(t *testing.T) {
	boom := errors.New("boom")
	var seen string
	cases := []struct {
		name  string
		write func(io.Writer) error
		check func(string) error
	}{
		{"write", func(w io.Writer) error { w.Write([]byte("half")); return boom }, nil},
		{"check", func(w io.Writer) error { _, err := w.Write([]byte("new")); return err }, func(tmp string) error {
			b, err := os.ReadFile(tmp) // the check sees the whole new file
			seen = string(b)
			if err != nil {
				return err
			}
			return boom
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "f")
			if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := Write(path, c.write, c.check); !errors.Is(err, boom) {
				t.Fatalf("err %v, want boom", err)
			}
			if b, _ := os.ReadFile(path); string(b) != "old" {
				t.Errorf("target now %q, want old", b)
			}
			if l := leftovers(t, dir, "f"); len(l) != 0 {
				t.Errorf("left %q", l)
			}
		})
	}
	if seen != "new" {
		t.Errorf("check read %q, want new", seen)
	}
	t.Run("rename", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "f")
		if err := os.MkdirAll(filepath.Join(path, "sub"), 0o755); err != nil {
			t.Fatal(err) // a non-empty folder: the rename fails
		}
		if err := WriteFile(path, []byte("x")); err == nil {
			t.Fatal("no error renaming over a folder")
		}
		if l := leftovers(t, dir, "f"); len(l) != 0 {
			t.Errorf("left %q", l)
		}
	})
	t.Run("no folder", func(t *testing.T) {
		if err := WriteFile(filepath.Join(t.TempDir(), "missing", "f"), nil); err == nil {
			t.Fatal("no error for a missing folder")
		}
	})
}

// A reader polling the file while it is rewritten in small pieces sees only
// whole versions (every byte the version's), never a short or mixed file.
func TestReadersSeeWholeFiles(t *testing.T) {
	const size, versions = 256 << 10, 16
	path := filepath.Join(t.TempDir(), "f")
	if err := WriteFile(path, bytes.Repeat([]byte{0}, size)); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	var bad error
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			b, err := os.ReadFile(path)
			if err == nil && (len(b) != size || bytes.Count(b, b[:1]) != size) {
				err = errors.New("read a partial or mixed file")
			}
			if err != nil {
				bad = err
				return
			}
		}
	}()
	for v := 1; v <= versions; v++ {
		err := Write(path, func(w io.Writer) error {
			chunk := bytes.Repeat([]byte{byte(v)}, 4<<10)
			for n := 0; n < size; n += len(chunk) {
				if _, err := w.Write(chunk); err != nil {
					return err
				}
			}
			return nil
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	wg.Wait()
	if bad != nil {
		t.Fatal(bad)
	}
}
