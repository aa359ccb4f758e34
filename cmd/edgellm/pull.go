package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"

	"github.com/edgellm/edgellm/pull"
	"github.com/edgellm/edgellm/store"
)

type pullCmd struct {
	Name     string `arg:"" help:"hf.co/OWNER/REPO[:QUANT], NAME[:TAG] (Ollama's registry) or HOST[:PORT]/NAMESPACE/NAME[:TAG]; the store keeps it under this name."`
	Insecure bool   `help:"Allow plain http to a registry named in the model name."`
}

func (c *pullCmd) Run(log *slog.Logger) error {
	dir, err := store.Dir()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	n, _, err := pull.Pull(ctx, dir, c.Name, pull.Options{Insecure: c.Insecure, Progress: pull.NewReporter(os.Stderr)})
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "pulled %s into %s; run it with: edgellm run %s\n", n.Display(), dir, c.Name)
	return nil
}
