package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/internal/testfiles"
)

// TestConvertCommand converts stories260K's llama2.c checkpoint and checks
// that show says llama.cpp reads the file; bad arguments give clear
// errors and leave no file.
func TestConvertCommand(t *testing.T) {
	bin := testfiles.Path(t, "models/stories260K/stories260K.bin")
	tok := testfiles.Path(t, "models/stories260K/tok512.bin")
	out := filepath.Join(t.TempDir(), "stories.gguf")
	c := &convertCmd{Input: bin, Out: out, Type: "f16", Tokenizer: tok, Quiet: true}
	if err := c.Run(quiet); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	arch, _ := f.String("general.architecture")
	if ok, why := llamaCppReadable(f, arch); !ok || arch != "llama" {
		t.Fatalf("show: llama.cpp can read %s: %v (%s)", arch, ok, why)
	}

	dir := t.TempDir()
	for _, tc := range []struct {
		c    convertCmd
		want string
	}{
		{convertCmd{Input: bin, Out: filepath.Join(dir, "a.gguf")}, "needs --tokenizer"},
		{convertCmd{Input: t.TempDir(), Out: filepath.Join(dir, "b.gguf"), Tokenizer: tok}, "--tokenizer is for llama2.c"},
		{convertCmd{Input: t.TempDir(), Out: filepath.Join(dir, "c.gguf")}, "config.json"},
		{convertCmd{Input: bin, Out: filepath.Join(dir, "d.gguf"), Tokenizer: tok, Type: "q3_k"}, "unknown type"},
		{convertCmd{Input: tok, Out: filepath.Join(dir, "e.gguf"), Tokenizer: tok}, "llama2.c checkpoint"},
	} {
		tc.c.Quiet = true
		if err := tc.c.Run(quiet); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one containing %q", tc.c, err, tc.want)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("failed conversions left %d files", len(entries))
	}
}
