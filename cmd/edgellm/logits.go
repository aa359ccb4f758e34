package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/edgellm/edgellm/engine"
)

// logitsCmd prints the logits after every position of a sequence of ids,
// in the layout of llama.cpp's teacher-forced logits (one line a position,
// C's %.7g), so any architecture can be compared with llama.cpp's output.
type logitsCmd struct {
	Model   string `help:"Model file (GGUF, or a llama2.c checkpoint with tokenizer.bin beside it) or store name." short:"m" required:""`
	IDs     string `help:"Token ids, space- or comma-separated, run from position 0 (no BOS added)." name:"ids" required:""`
	Ctx     int    `help:"Context length (default: the file's trained length, at most 4096); the ids must fit it." short:"c"`
	Threads int    `help:"CPU threads (default: the cores this process may use)."`
	Backend string `help:"auto, cpu or cuda." enum:"auto,cpu,cuda" default:"auto"`
}

func (c *logitsCmd) Run(log *slog.Logger) error {
	out := bufio.NewWriter(os.Stdout)
	if err := c.write(out, log); err != nil {
		return err
	}
	return out.Flush()
}

// write computes the logits and writes them to out, nothing when it fails.
func (c *logitsCmd) write(out io.Writer, log *slog.Logger) error {
	ids, err := parseIDs(c.IDs)
	if err != nil {
		return err
	}
	src, err := resolveModel(c.Model)
	if err != nil {
		return err
	}
	m, err := engine.Load(src.Path, engine.Options{Backend: c.Backend, Threads: c.Threads, ContextLen: c.Ctx, Logger: log})
	if err != nil {
		return err
	}
	defer m.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	start := time.Now()
	logits, err := m.Logits(ctx, ids)
	if err != nil {
		return fmt.Errorf("logits: %w", err)
	}
	vocab := m.Config().Vocab
	log.Info("logits computed", "positions", len(ids), "vocab", vocab, "ms", time.Since(start).Milliseconds())
	var line []byte
	for p := range ids {
		line = line[:0]
		for i, v := range logits[p*vocab : (p+1)*vocab] {
			if i > 0 {
				line = append(line, ' ')
			}
			line = appendG7(line, v)
		}
		line = append(line, '\n')
		if _, err := out.Write(line); err != nil {
			return fmt.Errorf("logits: writing: %w", err)
		}
	}
	return nil
}

// parseIDs reads token ids separated by spaces and/or commas.
func parseIDs(s string) ([]int32, error) {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
	if len(fields) == 0 {
		return nil, fmt.Errorf("--ids: no token ids in %q", s)
	}
	ids := make([]int32, len(fields))
	for i, f := range fields {
		n, err := strconv.ParseInt(f, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("--ids: %q (id %d) is not a token id", f, i)
		}
		ids[i] = int32(n)
	}
	return ids, nil
}

// appendG7 appends v as C's printf("%.7g") does (llama.cpp's logits
// files): 7 significant digits, trailing zeros dropped, an exponent of at
// least two digits, and glibc's spelling of infinities and NaNs.
func appendG7(b []byte, v float32) []byte {
	x := float64(v)
	switch {
	case math.IsNaN(x) && math.Signbit(x):
		return append(b, "-nan"...)
	case math.IsNaN(x):
		return append(b, "nan"...)
	case math.IsInf(x, 1):
		return append(b, "inf"...)
	case math.IsInf(x, -1):
		return append(b, "-inf"...)
	}
	return strconv.AppendFloat(b, x, 'g', 7, 64)
}
