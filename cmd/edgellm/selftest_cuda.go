//go:build !nocuda

package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/edgellm/edgellm/backend/cuda"
	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/synth"
	"github.com/edgellm/edgellm/tokenizer"
)

func (c *selftestCmd) Run(log *slog.Logger) error {
	if err := cuda.Available(); err != nil {
		return fmt.Errorf("selftest: %w", err)
	}
	// The many-row step (prefill in chunks, batched decode) is checked
	// where it is on: by default for ternary layers, every model with
	// cuda.RowsEnv=1.
	opts := cuda.Options{Rows: cuda.RowsFromEnv()}
	if opts.Rows == cuda.RowsAuto {
		fmt.Printf("many-row step on for ternary layers (%s=1: every model, 0: none)\n", cuda.RowsEnv)
	}
	failed := 0
	report := func(r cuda.SelfTestResult) {
		fmt.Println(r.String())
		if !r.Pass {
			failed++
		}
	}
	for _, name := range c.Presets {
		p, ok := synth.Presets[name]
		if !ok {
			return fmt.Errorf("selftest: unknown preset %q", name)
		}
		log.Info("synthesizing", "preset", name)
		var buf bytes.Buffer
		if _, err := synth.Write(&buf, p, synth.Options{Seed: 1}); err != nil {
			return err
		}
		f, err := gguf.Parse(buf.Bytes())
		if err != nil {
			return err
		}
		w, err := model.FromGGUF(f)
		if err != nil {
			return err
		}
		// The reference forward of a 2B model is slow: a short prompt.
		report(cuda.SelfTest(cuda.SelfTestCase{Name: "preset " + name, Weights: w, Prompt: countingPrompt(4, w.Vocab), Greedy: 4, Opts: opts}))
	}
	for _, path := range c.Models {
		f, err := gguf.Open(path)
		if err != nil {
			return err
		}
		w, err := model.FromGGUF(f)
		if err != nil {
			f.Close()
			return err
		}
		tc := cuda.SelfTestCase{Name: filepath.Base(path), Weights: w, Opts: opts}
		if tok, err := tokenizer.FromGGUF(f); err == nil && tok.Model() != "none" {
			tc.Prompt, err = tok.Encode("Once upon a time", true, false)
			if err != nil {
				f.Close()
				return err
			}
			tc.Greedy = c.Greedy
		} else {
			// tiny-random's reference sequence: id = (37*i + 5) mod vocab.
			tc.Prompt, tc.Greedy = countingPrompt(24, w.Vocab), 8
		}
		report(cuda.SelfTest(tc))
		f.Close()
	}
	if failed > 0 {
		return fmt.Errorf("selftest: %d of %d checks failed", failed, len(c.Presets)+len(c.Models))
	}
	fmt.Fprintln(os.Stderr, "selftest: all", strings.TrimSpace(fmt.Sprint(len(c.Presets)+len(c.Models))), "checks passed")
	return nil
}
