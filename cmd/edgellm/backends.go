package main

import (
	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/backend/cuda"
	"github.com/edgellm/edgellm/engine"
	"github.com/edgellm/edgellm/model"
)

// The CLI links every backend; the engine picks one by name ("auto" tries
// CUDA and falls back to the CPU with one log line).
func init() {
	engine.RegisterBackend("cuda", func(w *model.Weights, _ engine.Options) (backend.Model, error) {
		if err := cuda.Available(); err != nil {
			return nil, err
		}
		return cuda.Load(w, cuda.Options{})
	})
}
