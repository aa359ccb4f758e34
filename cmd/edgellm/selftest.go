package main

import (
	"fmt"
	"log/slog"
)

type selftestCmd struct {
	Backend string   `help:"Backend to check against the CPU reference." enum:"cuda,cpu" default:"cuda"`
	Models  []string `arg:"" optional:"" help:"Extra model files to check (stories260K, tiny-random files)." type:"existingfile"`
}

func (c *selftestCmd) Run(log *slog.Logger) error {
	return fmt.Errorf("selftest: not wired yet")
}
