package store

import (
	"errors"
	"path/filepath"
	"testing"
)

func TestParseName(t *testing.T) {
	for _, c := range []struct {
		in, full, display, path string
	}{
		{"llama3.2", "registry.ollama.ai/library/llama3.2:latest", "llama3.2:latest", "registry.ollama.ai/library/llama3.2/latest"},
		{"smollm2:135m", "registry.ollama.ai/library/smollm2:135m", "smollm2:135m", "registry.ollama.ai/library/smollm2/135m"},
		{"me/Model_1:v2", "registry.ollama.ai/me/Model_1:v2", "me/Model_1:v2", "registry.ollama.ai/me/Model_1/v2"},
		{"hf.co/microsoft/bitnet-b1.58-2B-4T-gguf", "hf.co/microsoft/bitnet-b1.58-2B-4T-gguf:latest", "hf.co/microsoft/bitnet-b1.58-2B-4T-gguf:latest", "hf.co/microsoft/bitnet-b1.58-2B-4T-gguf/latest"},
		{"hf.co/Owner/Repo:Q2_K", "hf.co/Owner/Repo:Q2_K", "hf.co/Owner/Repo:Q2_K", "hf.co/Owner/Repo/Q2_K"},
		{"localhost:5000/ns/m:t", "localhost:5000/ns/m:t", "localhost:5000/ns/m:t", "localhost%5000/ns/m/t"},
	} {
		n, err := ParseName(c.in)
		if err != nil {
			t.Errorf("ParseName(%q): %v", c.in, err)
			continue
		}
		if n.String() != c.full || n.Display() != c.display || n.Path() != filepath.FromSlash(c.path) {
			t.Errorf("ParseName(%q) = %q / %q / %q, want %q / %q / %q", c.in, n.String(), n.Display(), n.Path(), c.full, c.display, c.path)
		}
	}
}

func TestParseNameRejects(t *testing.T) {
	for _, in := range []string{
		"", ":", "m:", "a/b/c/d", "../x", "..", "a/../b", "a/.hidden", "m:../x", "m:a/b",
		"host:/ns/m", "host:99x/ns/m", "host:123456/ns/m", "a b", "a\x00b", `a\b`, "/abs", "a//b",
	} {
		if n, err := ParseName(in); err == nil || !errors.Is(err, ErrName) {
			t.Errorf("ParseName(%q) = %+v, %v; want an ErrName", in, n, err)
		}
	}
}

func FuzzParseName(f *testing.F) {
	for _, s := range []string{"llama3.2", "hf.co/a/b:c", "localhost:5000/ns/m:t", "../x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseName(s)
		if err != nil {
			return
		}
		// A parsed name's path stays below the manifests folder, and its
		// full form parses back to itself.
		if !filepath.IsLocal(n.Path()) {
			t.Fatalf("ParseName(%q).Path() = %q escapes", s, n.Path())
		}
		m, err := ParseName(n.String())
		if err != nil || m != n {
			t.Fatalf("ParseName(%q) round trip: %+v, %v; want %+v", n.String(), m, err, n)
		}
	})
}

func TestBlobPath(t *testing.T) {
	d := "sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	p, err := BlobPath("/m", d)
	if err != nil || p != filepath.FromSlash("/m/blobs/sha256-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef") {
		t.Fatalf("BlobPath = %q, %v", p, err)
	}
	for _, bad := range []string{"", "sha256:", "md5:00", "sha256:../../etc/passwd", "sha256:" + "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef", d + "0"} {
		if _, err := BlobPath("/m", bad); err == nil {
			t.Errorf("BlobPath(%q) accepted", bad)
		}
	}
}
