package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/edgellm/edgellm/convert"
	"github.com/edgellm/edgellm/convert/vocab"
	"github.com/edgellm/edgellm/gguf"
)

type convertCmd struct {
	Input     string `arg:"" help:"A Hugging Face checkpoint folder (config.json and safetensors), or a llama2.c checkpoint (.bin, with --tokenizer)."`
	Out       string `help:"Output GGUF file (written to a temporary file, then renamed)." short:"o" required:""`
	Type      string `help:"Matrix type: auto (BF16 for a BF16 checkpoint, else F16; F32 for llama2.c), f32, f16, bf16 or q8_0; for ternary-trained checkpoints also tq1_0, tq2_0, q2_0 or i2_s (edgellm quantize's per-tensor policy). Vectors and norms stay F32." default:"auto"`
	Tokenizer string `help:"The llama2.c tokenizer (tok.bin) of a llama2.c checkpoint." type:"existingfile"`
	Name      string `help:"general.name (default: the folder or file name)."`
	Quiet     bool   `help:"No per-tensor progress on stderr." short:"q"`
}

func (c *convertCmd) Run(log *slog.Logger) error {
	st, err := os.Stat(c.Input)
	if err != nil {
		return err
	}
	o := convert.Options{Type: c.Type, Name: c.Name}
	if !c.Quiet {
		o.Progress = os.Stderr
	}
	var sum *convert.Summary
	if st.IsDir() {
		if c.Tokenizer != "" {
			return errors.New("--tokenizer is for llama2.c checkpoints; a Hugging Face folder's tokenizer is read from the folder")
		}
		var v *vocab.Vocab
		if v, err = vocab.Load(c.Input); err != nil {
			return err
		}
		o.Vocab = v
		sum, err = convert.HF(c.Input, c.Out, o)
	} else {
		if c.Tokenizer == "" {
			return fmt.Errorf("%s is a file: a llama2.c checkpoint needs --tokenizer TOK.bin (a Hugging Face checkpoint is a folder)", c.Input)
		}
		var v *vocab.Vocab
		if v, err = vocab.FromLlama2C(c.Tokenizer); err != nil {
			return err
		}
		o.Vocab = v
		sum, err = convert.Llama2C(c.Input, c.Out, o)
	}
	if err != nil {
		return err
	}
	for _, f := range sum.Fallbacks {
		log.Info("type fallback", "note", f)
	}
	log.Info("converted", "file", c.Out, "arch", sum.Arch, "tensors", sum.Tensors,
		"bytes_in", sum.BytesIn, "bytes_out", sum.BytesOut, "took", sum.Took.Round(time.Millisecond))
	// What show would say: bitnet-b1.58 and I2_S are bitnet.cpp's, not
	// upstream llama.cpp's.
	if f, err := gguf.Open(c.Out); err == nil {
		ok, why := llamaCppReadable(f, sum.Arch)
		f.Close()
		log.Info("llama.cpp", "can_read", ok, "note", why)
	}
	return nil
}
