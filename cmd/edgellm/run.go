package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/alecthomas/kong"

	"github.com/edgellm/edgellm/engine"
	"github.com/edgellm/edgellm/sample"
)

type runCmd struct {
	Model         string   `help:"GGUF model file or store name (or a llama2.c .bin with --tokenizer); or give it as the first argument." short:"m"`
	Args          []string `arg:"" optional:"" name:"model" help:"The model (unless -m gives it), then the prompt's words (instead of -p)."`
	Tokenizer     string   `help:"llama2.c tokenizer .bin, for a llama2.c checkpoint." type:"existingfile"`
	Prompt        string   `help:"Prompt text (empty: BOS only where the model adds one)." short:"p"`
	File          string   `help:"Read the prompt from a file." short:"f" type:"existingfile"`
	N             int      `help:"Tokens to generate (default: until an end token or the context is full)." short:"n" default:"-1"`
	Ctx           int      `help:"Context length (default: the file's trained length, at most 4096)." short:"c"`
	Temp          float64  `help:"Temperature; 0 is greedy." default:"0.8"`
	TopK          int      `help:"Top-k (0: off)." name:"top-k" default:"40"`
	TopP          float64  `help:"Top-p (1: off)." name:"top-p" default:"0.95"`
	MinP          float64  `help:"Min-p (0: off)." name:"min-p" default:"0.05"`
	RepeatPenalty float64  `help:"Repetition penalty (1: off)." name:"repeat-penalty" default:"1.0"`
	RepeatLastN   int      `help:"Tokens the repetition penalty looks back over." name:"repeat-last-n" default:"64"`
	Seed          int64    `help:"Sampling seed (-1: random)." default:"-1"`
	Threads       int      `help:"CPU threads (default: the cores this process may use)."`
	Backend       string   `help:"auto, cpu or cuda." enum:"auto,cpu,cuda" default:"auto"`
	IgnoreEOS     bool     `help:"Do not stop at end-of-generation tokens." name:"ignore-eos"`
	Interactive   bool     `help:"Read prompts from stdin in a loop; the conversation carries on." short:"i"`

	stops []string // a pulled model's stop strings (its params layer)
}

func (c *runCmd) sampling() sample.Params {
	seed := uint64(c.Seed)
	if c.Seed < 0 {
		seed = uint64(time.Now().UnixNano())
	}
	return sample.Params{
		Temperature: float32(c.Temp), TopK: c.TopK, TopP: float32(c.TopP), MinP: float32(c.MinP),
		RepeatPenalty: float32(c.RepeatPenalty), RepeatLastN: c.RepeatLastN, Seed: seed,
	}
}

func (c *runCmd) Run(log *slog.Logger, kctx *kong.Context) error {
	args := c.Args
	if c.Model == "" && len(args) > 0 {
		c.Model, args = args[0], args[1:]
	}
	prompt := c.Prompt
	if len(args) > 0 {
		if c.Prompt != "" || c.File != "" {
			return fmt.Errorf("give the prompt as arguments, -p or -f, not two of them")
		}
		prompt = strings.Join(args, " ")
	}
	src, err := resolveModel(c.Model)
	if err != nil {
		return err
	}
	if c.stops, err = c.applyParams(kctx, src.Name, src.Params); err != nil {
		return err
	}
	if c.File != "" {
		if prompt != "" {
			return fmt.Errorf("give -p or -f, not both")
		}
		b, err := os.ReadFile(c.File)
		if err != nil {
			return err
		}
		prompt = string(b)
	}
	m, err := engine.Load(src.Path, engine.Options{
		Backend: c.Backend, Threads: c.Threads, ContextLen: c.Ctx, TokenizerPath: c.Tokenizer, Logger: log,
	})
	if err != nil {
		return err
	}
	defer m.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()

	if !c.Interactive {
		return c.generate(ctx, log, m, prompt, out)
	}
	// Interactive: each line read is appended to the transcript, which is the
	// next prompt; the engine reuses the KV cache of the common prefix.
	transcript := prompt
	in := bufio.NewReader(os.Stdin)
	for {
		fmt.Fprint(os.Stderr, "> ")
		line, err := in.ReadString('\n')
		if line == "" && err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		transcript += line
		var gen strings.Builder
		if err := c.generateTo(ctx, log, m, transcript, out, &gen); err != nil {
			return err
		}
		transcript += gen.String()
		if ctx.Err() != nil {
			return nil
		}
	}
}

func (c *runCmd) generate(ctx context.Context, log *slog.Logger, m *engine.Model, prompt string, out *bufio.Writer) error {
	return c.generateTo(ctx, log, m, prompt, out, nil)
}

// generateTo streams the continuation of prompt to out (and to keep, when
// non-nil), then prints the figures on stderr.
func (c *runCmd) generateTo(ctx context.Context, log *slog.Logger, m *engine.Model, prompt string, out *bufio.Writer, keep *strings.Builder) error {
	req := engine.Request{Prompt: prompt, MaxTokens: max(c.N, 0), Sampling: c.sampling(), IgnoreEOS: c.IgnoreEOS, Stop: c.stops}
	st, err := m.Generate(ctx, req, func(t engine.Token) error {
		out.WriteString(t.Text)
		if keep != nil {
			keep.WriteString(t.Text)
		}
		return out.Flush()
	})
	out.WriteString("\n")
	out.Flush()
	if err != nil && ctx.Err() == nil {
		return err
	}
	fmt.Fprintln(os.Stderr, st.Summary())
	return nil
}
