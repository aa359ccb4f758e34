// Command edgellm runs, benchmarks and serves LLMs (ternary BitNet models
// above all) on CPUs and NVIDIA GPUs. Stdout carries only what the user asked
// for; logs, warnings, progress and figures go to stderr.
package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"

	"github.com/alecthomas/kong"

	"github.com/edgellm/edgellm/backend/cpu/kernels"
	"github.com/edgellm/edgellm/version"
)

type cli struct {
	Verbose bool `help:"Log more to stderr." short:"v"`

	Run      runCmd      `cmd:"" help:"Generate text from a prompt."`
	Tokenize tokenizeCmd `cmd:"" help:"Print the token ids of stdin."`
	Logits   logitsCmd   `cmd:"" help:"Print the logits after every position of a sequence of token ids (llama.cpp's layout)."`
	Show     showCmd     `cmd:"" help:"Describe a GGUF model file or a store model."`
	Pull     pullCmd     `cmd:"" help:"Download a model into the store (Hugging Face hf.co/OWNER/REPO[:QUANT], or an Ollama registry)."`
	List     listCmd     `cmd:"" help:"List the models of the store ($EDGELLM_MODELS, else ~/.edgellm/models)."`
	Rm       rmCmd       `cmd:"" help:"Delete models from the store."`
	Cp       cpCmd       `cmd:"" help:"Copy a store model to a new name (sharing its bytes on disk)."`
	Synth    synthCmd    `cmd:"" help:"Write a deterministic synthetic model at a preset shape."`
	Convert  convertCmd  `cmd:"" help:"Convert a Hugging Face checkpoint folder or a llama2.c checkpoint to GGUF."`
	Quantize quantizeCmd `cmd:"" help:"Rewrite a model's tensors in another type (ternary by absmean)."`
	Bench    benchCmd    `cmd:"" help:"Benchmark a model (the built-in smollm-135m preset by default)."`
	Selftest selftestCmd `cmd:"" help:"Check a backend against the CPU reference on real and synthetic models."`
	Serve    serveCmd    `cmd:"" help:"Serve models over HTTP (Ollama- and OpenAI-compatible APIs)."`
	Loadtest loadtestCmd `cmd:"" help:"Load-test a server on loopback: requests/s, tokens/s, time to first token."`
	Version  versionCmd  `cmd:"" help:"Print the version."`
}

type versionCmd struct{}

// Run prints the version, then the CPU kernel set this machine gets (what
// a user checks first when decode is slower than expected).
func (versionCmd) Run() error {
	fmt.Println("edgellm", version.Version)
	fmt.Printf("cpu kernels: %s (%s/%s)\n", kernels.Path(), runtime.GOOS, runtime.GOARCH)
	return nil
}

// logger writes to stderr; -v lowers its level to debug.
func newLogger(verbose bool) *slog.Logger {
	lvl := slog.LevelInfo
	if verbose {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

func main() {
	var c cli
	ctx := kong.Parse(&c,
		kong.Name("edgellm"),
		kong.Description("EdgeLLM: fast, steady LLM inference for ternary models on CPUs and NVIDIA GPUs."),
		kong.UsageOnError(),
	)
	log := newLogger(c.Verbose)
	if err := ctx.Run(log); err != nil {
		fmt.Fprintln(os.Stderr, "edgellm:", err)
		os.Exit(1)
	}
}
