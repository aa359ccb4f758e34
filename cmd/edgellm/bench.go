package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgellm/edgellm/bench"
	"github.com/edgellm/edgellm/engine"
)

type benchCmd struct {
	Model      string `help:"GGUF model file or store name (default: the --preset, written once to the user cache)." short:"m"`
	Preset     string `help:"Synthetic preset: smollm-135m or bitnet-2b." default:"smollm-135m"`
	Type       string `help:"Preset matrix type (default: the preset's)."`
	EmbedType  string `help:"Preset embedding type (default Q8_0)." name:"embed-type"`
	Backend    string `help:"auto, cpu or cuda." enum:"auto,cpu,cuda" default:"auto"`
	Threads    int    `help:"CPU threads (default: the cores this process may use)."`
	Prompt     int    `help:"Prompt tokens." short:"p" default:"128"`
	Gen        int    `help:"Generated tokens." short:"n" default:"256"`
	Repeat     int    `help:"Repeats (figures are medians)." default:"3"`
	Batch      []int  `help:"Batch sizes to decode together, a comma list (1..256, in this order): adds aggregate tok/s and step latency per size." sep:"," default:"1"`
	JSON       bool   `help:"Print one JSON object on stdout and nothing else."`
	Ops        bool   `help:"Also print per-operation times."`
	Timeline   bool   `help:"Also record each token of the profiled pass (operation times, page faults, context switches, runqueue wait, migrations, GC) and compare the slow tokens with the rest."`
	LlamaBench string `help:"Path to llama.cpp's llama-bench: run it on the same file and print both." name:"llama-bench"`
}

// presetPath returns the cached synthetic model, writing it the first time.
func presetPath(log *slog.Logger, preset, typ, embed string) (string, error) {
	p, o, err := synthOptions(preset, typ, embed, 1)
	if err != nil {
		return "", err
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	dir = filepath.Join(dir, "edgellm", "synth")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	t, e := o.Type, o.EmbedType
	if t == 0 {
		t = p.Type
	}
	if e == 0 {
		e = p.EmbedType
	}
	path := filepath.Join(dir, fmt.Sprintf("%s-%s-%s.gguf", p.Name, strings.ToLower(t.String()), strings.ToLower(e.String())))
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	log.Info("writing synthetic preset (once)", "preset", p.Name, "file", path)
	if err := writeSynth(log, preset, typ, embed, 1, path); err != nil {
		return "", err
	}
	// The writer held the whole model: the run's peak RSS starts after it.
	bench.ResetPeakRSS()
	return path, nil
}

// Validate checks the batch sizes before a model is loaded (kong calls it).
func (c *benchCmd) Validate() error {
	return bench.CheckBatchSizes(c.Batch)
}

func (c *benchCmd) Run(log *slog.Logger) error { return c.write(os.Stdout, log) }

// write runs the bench and prints its report to w.
func (c *benchCmd) write(w io.Writer, log *slog.Logger) error {
	var path string
	if c.Model == "" {
		var err error
		if path, err = presetPath(log, c.Preset, c.Type, c.EmbedType); err != nil {
			return err
		}
	} else {
		src, err := resolveModel(c.Model)
		if err != nil {
			return err
		}
		path = src.Path
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	t0 := time.Now()
	m, err := engine.Load(path, engine.Options{Backend: c.Backend, Threads: c.Threads, ContextLen: c.Prompt + c.Gen, Logger: log})
	if err != nil {
		return err
	}
	defer m.Close()
	loadMS := float64(time.Since(t0).Microseconds()) / 1000
	log.Info("loaded", "backend", m.Backend().Name(), "ms", loadMS)

	r, err := bench.Run(ctx, m.Backend(), bench.WeightBytesPerToken(m.Weights()),
		bench.Options{Prompt: c.Prompt, Gen: c.Gen, Repeat: c.Repeat, Ops: c.Ops, Timeline: c.Timeline, Seed: 1, Batches: c.Batch})
	if err != nil {
		return err
	}
	r.Model, r.LoadMS, r.Threads = path, loadMS, m.Threads()
	if fi, err := os.Stat(path); err == nil {
		r.FileBytes = fi.Size()
	}
	if c.LlamaBench != "" {
		log.Info("running llama-bench", "path", c.LlamaBench)
		lb, err := bench.RunLlamaBench(ctx, c.LlamaBench, path, r.Threads, c.Prompt, c.Gen, c.Repeat, r.Backend == "cuda")
		if err != nil {
			return err
		}
		lb.Compare(&r)
		r.LlamaBench = lb
	}
	if c.JSON {
		return json.NewEncoder(w).Encode(r)
	}
	r.Print(w)
	return nil
}
