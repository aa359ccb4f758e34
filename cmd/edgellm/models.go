package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kong"

	"github.com/edgellm/edgellm/store"
)

// resolveModel finds the model a command is given: a file path, else a name
// in the store ($EDGELLM_MODELS, else ~/.edgellm/models).
func resolveModel(arg string) (*store.Model, error) {
	if arg == "" {
		return nil, errors.New("no model: give a file or a model name (edgellm list shows the store's)")
	}
	dir, err := store.Dir()
	if err != nil {
		if fi, serr := os.Stat(arg); serr == nil && fi.Mode().IsRegular() {
			return &store.Model{Name: arg, Path: arg}, nil
		}
		return nil, fmt.Errorf("model %q: not a file, and %w", arg, err)
	}
	return store.Resolve(dir, arg)
}

type listCmd struct {
	JSON bool `help:"Print one JSON array."`
}

// listEntry is one model as list --json prints it.
type listEntry struct {
	Name     string    `json:"name"`
	Path     string    `json:"path"`
	Size     int64     `json:"size"`
	Type     string    `json:"type"`
	Arch     string    `json:"architecture"`
	Modified time.Time `json:"modified"`
	Digest   string    `json:"digest,omitempty"`
	Pulled   bool      `json:"pulled"`
	Error    string    `json:"error,omitempty"`
}

func (c *listCmd) Run(log *slog.Logger) error {
	dir, err := store.Dir()
	if err != nil {
		return err
	}
	es, err := store.List(dir)
	if err != nil {
		return err
	}
	if c.JSON {
		out := make([]listEntry, 0, len(es))
		for _, e := range es {
			le := listEntry{Name: e.Name, Path: e.Path, Size: e.Size, Type: e.Type, Arch: e.Arch,
				Modified: e.Modified, Digest: e.Digest, Pulled: e.Pulled}
			if e.Err != nil {
				le.Error = e.Err.Error()
			}
			out = append(out, le)
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSIZE\tTYPE\tARCH\tMODIFIED")
	for _, e := range es {
		typ, arch := e.Type, e.Arch
		if e.Err != nil {
			typ, arch = "?", "(unusable: see edgellm show)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Name, humanBytes(e.Size), typ, arch, e.Modified.Local().Format("2006-01-02 15:04"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(es) == 0 {
		fmt.Fprintf(os.Stderr, "no models in %s (edgellm pull NAME, or put NAME.gguf files there)\n", dir)
	}
	return nil
}

// humanBytes writes a size as Ollama's list does, in decimal units.
func humanBytes(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.1f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f KB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}

type rmCmd struct {
	Names []string `arg:"" help:"Models to delete: store names (a plain NAME.gguf file is deleted; a pulled model's blobs go when no other model uses them)."`
}

func (c *rmCmd) Run(log *slog.Logger) error {
	dir, err := store.Dir()
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range c.Names {
		name, err := store.Remove(dir, n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Printf("deleted '%s'\n", name)
	}
	return errors.Join(errs...)
}

type cpCmd struct {
	Source      string `arg:"" help:"A model of the store."`
	Destination string `arg:"" help:"The new name (Ollama's name syntax); it shares the source's bytes on disk."`
}

func (c *cpCmd) Run(log *slog.Logger) error {
	dir, err := store.Dir()
	if err != nil {
		return err
	}
	from, to, err := store.Copy(dir, c.Source, c.Destination)
	if err != nil {
		return err
	}
	fmt.Printf("copied '%s' to '%s'\n", from, to)
	return nil
}

// applyParams sets run's options from a params layer (store.ParseParams:
// checked as the server checks it) where the user gave no flag, and returns
// its stop strings. Options run has no flag for are ignored, as Ollama
// ignores options it does not know.
func (c *runCmd) applyParams(kctx *kong.Context, name string, raw []byte) ([]string, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	p, _, err := store.ParseParams(raw)
	if err != nil {
		return nil, fmt.Errorf("model %q: %w", name, err)
	}
	// The flags on the command line (kong's Value.Set also marks defaults).
	set := map[string]bool{}
	if kctx != nil {
		for _, p := range kctx.Path {
			if p.Flag != nil {
				set[p.Flag.Name] = true
			}
		}
	}
	setF := func(flag string, dst *float64, v *float64) {
		if v != nil && !set[flag] {
			*dst = *v
		}
	}
	setI := func(flag string, dst *int, v *int) {
		if v != nil && !set[flag] {
			*dst = *v
		}
	}
	setF("temp", &c.Temp, p.Temperature)
	setF("top-p", &c.TopP, p.TopP)
	setF("min-p", &c.MinP, p.MinP)
	setF("repeat-penalty", &c.RepeatPenalty, p.RepeatPenalty)
	setI("top-k", &c.TopK, p.TopK)
	setI("repeat-last-n", &c.RepeatLastN, p.RepeatLastN)
	setI("n", &c.N, p.NumPredict)
	setI("ctx", &c.Ctx, p.NumCtx)
	if p.Seed != nil && !set["seed"] {
		c.Seed = *p.Seed
	}
	return p.Stop, nil
}
