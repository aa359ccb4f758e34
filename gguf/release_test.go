package gguf

import (
	"bytes"
	"testing"
)

// Released tensor pages read back from the file unchanged; Release on a
// Parse'd buffer or a foreign slice changes nothing.
func TestReleaseKeepsData(t *testing.T) {
	f, err := Open(storiesPath(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := make(map[string][]byte)
	for _, ti := range f.Tensors {
		want[ti.Name] = bytes.Clone(ti.Data)
	}
	for _, ti := range f.Tensors {
		f.Release(ti.Data)
	}
	f.Release(f.Bytes())
	for _, ti := range f.Tensors {
		if !bytes.Equal(ti.Data, want[ti.Name]) {
			t.Fatalf("tensor %q changed after Release", ti.Name)
		}
	}
	// Memory that is not the mapping is never advised away.
	own := bytes.Repeat([]byte{7}, 1<<16)
	f.Release(own)
	p, err := Parse(bytes.Clone(f.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range p.Tensors {
		p.Release(ti.Data)
		if !bytes.Equal(ti.Data, want[ti.Name]) {
			t.Fatalf("parsed tensor %q changed after Release", ti.Name)
		}
	}
	for _, b := range own {
		if b != 7 {
			t.Fatal("Release touched memory outside the mapping")
		}
	}
}
