package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/tokenizer"
)

type tokenizeCmd struct {
	Model     string `help:"GGUF file (a vocab-only file is enough) or store name." short:"m" required:""`
	NoSpecial bool   `help:"Add no BOS/EOS and do not parse special-token text." name:"no-special"`
}

func (c *tokenizeCmd) Run(log *slog.Logger) error {
	src, err := resolveModel(c.Model)
	if err != nil {
		return err
	}
	f, err := gguf.Open(src.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		return err
	}
	text, err := io.ReadAll(os.Stdin)
	if err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}
	ids, err := tok.Encode(string(text), !c.NoSpecial, !c.NoSpecial)
	if err != nil {
		return err
	}
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.Itoa(int(id)))
	}
	b.WriteByte('\n')
	_, err = os.Stdout.WriteString(b.String())
	return err
}
