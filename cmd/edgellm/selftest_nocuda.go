//go:build nocuda

package main

import (
	"errors"
	"log/slog"
)

func (c *selftestCmd) Run(*slog.Logger) error {
	return errors.New("selftest: this binary was built with -tags nocuda, which leaves the CUDA backend out")
}
