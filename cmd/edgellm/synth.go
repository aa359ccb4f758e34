package main

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/edgellm/edgellm/internal/atomicfile"
	"github.com/edgellm/edgellm/synth"
)

type synthCmd struct {
	Preset    string `help:"Shape: smollm-135m or bitnet-2b." required:""`
	Type      string `help:"Matrix type (default: the fastest ternary type llama.cpp reads at that shape)."`
	EmbedType string `help:"Embedding / tied LM head type (default Q8_0)." name:"embed-type"`
	Seed      uint64 `help:"Weight seed." default:"1"`
	Out       string `help:"Output GGUF file." short:"o" required:""`
}

func (c *synthCmd) Run(log *slog.Logger) error {
	return writeSynth(log, c.Preset, c.Type, c.EmbedType, c.Seed, c.Out)
}

// synthOptions resolves a preset and type names.
func synthOptions(preset, typ, embed string, seed uint64) (synth.Preset, synth.Options, error) {
	p, ok := synth.Presets[preset]
	if !ok {
		return p, synth.Options{}, fmt.Errorf("unknown preset %q (have %v)", preset, synth.PresetNames())
	}
	o := synth.Options{Seed: seed}
	var err error
	if typ != "" {
		if o.Type, err = synth.ParseType(typ); err != nil {
			return p, o, err
		}
	}
	if embed != "" {
		if o.EmbedType, err = synth.ParseType(embed); err != nil {
			return p, o, err
		}
	}
	return p, o, nil
}

// writeSynth writes a preset to path atomically (internal/atomicfile).
func writeSynth(log *slog.Logger, preset, typ, embed string, seed uint64, path string) error {
	p, o, err := synthOptions(preset, typ, embed, seed)
	if err != nil {
		return err
	}
	start := time.Now()
	var rep synth.Report
	err = atomicfile.Write(path, func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, 1<<20)
		var err error
		if rep, err = synth.Write(bw, p, o); err != nil {
			return err
		}
		return bw.Flush()
	}, nil)
	if err != nil {
		return err
	}
	for _, fb := range rep.Fallbacks {
		log.Debug("synth fallback", "tensor", fb.Tensor, "asked", fb.Asked, "wrote", fb.Written, "row", fb.RowWidth)
	}
	if n := len(rep.Fallbacks); n > 0 {
		log.Info("some matrices fell back to another type (see edgellm show)", "count", n, "asked", rep.Fallbacks[0].Asked, "wrote", rep.Fallbacks[0].Written)
	}
	log.Info("wrote synthetic model", "preset", p.Name, "file", path, "bytes", rep.Bytes, "took", time.Since(start).Round(time.Millisecond))
	return nil
}
