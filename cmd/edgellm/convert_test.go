package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/engine"
	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/internal/testfiles"
	"github.com/edgellm/edgellm/sample"
)

// TestConvertCommand converts stories260K's llama2.c checkpoint with its
// tokenizer, runs it through the engine (greedy text from a prompt equals
// llama.cpp's on the GGUF llama.cpp converted) and checks that show says
// llama.cpp reads the file; bad arguments give clear errors and leave no
// file.
func TestConvertCommand(t *testing.T) {
	bin := testfiles.Path(t, "models/stories260K/stories260K.bin")
	tok := testfiles.Path(t, "models/stories260K/tok512.bin")
	out := filepath.Join(t.TempDir(), "stories.gguf")
	c := &convertCmd{Input: bin, Out: out, Type: "auto", Tokenizer: tok, Quiet: true}
	if err := c.Run(quiet); err != nil {
		t.Fatal(err)
	}
	m, err := engine.Load(out, engine.Options{Backend: "cpu", Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	const prompt = "Once upon a time"
	if ids, err := m.Tokenizer().Encode(prompt, true, false); err != nil || !slices.Equal(ids, []int32{1, 403, 407, 261, 378}) {
		t.Fatalf("the converted tokenizer encodes %q as %v (%v)", prompt, ids, err)
	}
	want := referenceIDs(t, prompt)[:64]
	var got []int32
	var text, wantText strings.Builder
	_, err = m.Generate(context.Background(), engine.Request{Prompt: prompt, MaxTokens: 64, Sampling: sample.Greedy(), IgnoreEOS: true},
		func(tk engine.Token) error { got = append(got, tk.ID); text.WriteString(tk.Text); return nil })
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range want {
		wantText.Write(m.Tokenizer().Piece(id))
	}
	if !slices.Equal(got, want) || text.String() != wantText.String() {
		t.Fatalf("greedy from the converted file:\n%v %q\nllama.cpp's on its own conversion:\n%v %q", got, text.String(), want, wantText.String())
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
		{convertCmd{Input: t.TempDir(), Out: filepath.Join(dir, "c.gguf")}, "no tokenizer.json or tokenizer.model"},
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
