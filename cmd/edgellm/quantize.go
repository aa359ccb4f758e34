package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"

	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/quant"
	"github.com/edgellm/edgellm/quantize"
)

type quantizeCmd struct {
	In        string `arg:"" help:"Input GGUF model: a file or a store name."`
	Out       string `arg:"" help:"Output GGUF file (written to a temporary file, then renamed)."`
	Type      string `help:"Target type: tq1_0, tq2_0, q2_0, i2_s, q4_0, q8_0 or f16." required:""`
	TokenEmbd string `help:"Type of token_embd.weight (default: the policy's; see the README)." name:"token-embedding-type"`
	Output    string `help:"Type of output.weight (default: the policy's)." name:"output-type"`
	I2SLayout string `help:"Layout of I2_S output: x86 (128-weight blocks, the default) or arm (64-weight blocks, bitnet.cpp's ARM builds)." name:"i2s-layout" default:"x86" enum:"x86,arm"`
	InLayout  string `help:"How to read I2_S input: x86, arm, or empty for the rule (option, $EDGELLM_I2S_LAYOUT, the file's key, row width, x86)." name:"input-i2s-layout"`
}

func (c *quantizeCmd) Run(log *slog.Logger) error {
	opt := quantize.Options{Progress: os.Stderr}
	var err error
	if opt.Type, err = quantize.ParseType(c.Type); err != nil {
		return err
	}
	for _, o := range []struct {
		name string
		dst  **quant.Type
	}{{c.TokenEmbd, &opt.TokenEmbdType}, {c.Output, &opt.OutputType}} {
		if o.name != "" {
			t, err := quantize.ParseType(o.name)
			if err != nil {
				return err
			}
			*o.dst = &t
		}
	}
	if opt.I2SLayout, err = model.ParseI2SLayout(c.I2SLayout); err != nil {
		return err
	}
	if opt.InputI2SLayout, err = model.ParseI2SLayout(c.InLayout); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	src, err := resolveModel(c.In)
	if err != nil {
		return err
	}
	sum, err := quantize.File(ctx, src.Path, c.Out, opt)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s as %s\n", c.Out, opt.Type)
	sum.Print(os.Stderr)
	return nil
}
