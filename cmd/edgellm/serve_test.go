package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Serving beyond loopback without a key warns; loopback or a key does not.
func TestExposureWarning(t *testing.T) {
	cases := []struct {
		addr string
		key  bool
		warn bool
	}{
		{"127.0.0.1:11434", false, false},
		{"[::1]:11434", false, false},
		{"0.0.0.0:11434", false, true},
		{"[::]:11434", false, true},
		{"192.168.1.5:80", false, true},
		{"0.0.0.0:11434", true, false},
	}
	for _, c := range cases {
		a, err := net.ResolveTCPAddr("tcp", c.addr)
		if err != nil {
			t.Fatal(err)
		}
		w := exposureWarning(a, c.key)
		if (w != "") != c.warn || (c.warn && !strings.Contains(w, "--api-key")) {
			t.Errorf("%s key %v: warning %q", c.addr, c.key, w)
		}
	}
}

// serve makes a missing models folder (0o755, parents too) and refuses a
// path that is a file.
func TestMakeModelsDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "models")
	if err := makeModelsDir(dir); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() || fi.Mode().Perm()&0o755 != fi.Mode().Perm() {
		t.Fatalf("made %v %v", fi, err)
	}
	if err := makeModelsDir(dir); err != nil {
		t.Errorf("existing folder: %v", err)
	}
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := makeModelsDir(file); err == nil || !strings.Contains(err.Error(), "models directory") {
		t.Errorf("a file: %v", err)
	}
}
