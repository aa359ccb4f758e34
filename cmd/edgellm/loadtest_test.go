package main

import (
	"context"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/backend/cpu"
	"github.com/edgellm/edgellm/engine"
	"github.com/edgellm/edgellm/internal/testfiles"
	"github.com/edgellm/edgellm/internal/testmodel"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/store"
)

// loadtest --parallel 16 on a backend that batches and picks tokens on the
// device (testmodel.Device standing in for cuda): every request of the 1-
// and 16-client levels is served with its tokens and a time to first
// token, and the device ran the steps.
func TestLoadtestDeviceParallel(t *testing.T) {
	var dev *testmodel.Device
	engine.RegisterBackend(testmodel.DeviceName, func(w *model.Weights, o engine.Options) (backend.Model, error) {
		m, err := cpu.Load(w, cpu.Options{Threads: o.Threads})
		if err != nil {
			return nil, err
		}
		dev, err = testmodel.NewDevice(m)
		return dev, err
	})
	c := &loadtestCmd{Model: testfiles.Path(t, "models/stories260K/stories260K-f32.gguf"), NumPredict: 8,
		Prompt: "Once upon a time", Requests: 32, MaxTime: time.Minute}
	stop, addr, name, err := startLocal(slog.New(slog.DiscardHandler), &store.Model{Name: c.Model, Path: c.Model}, testmodel.DeviceName, 1, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	hc := &http.Client{}
	if _, _, err := c.one(context.Background(), hc, "http://"+addr, name); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 16} {
		r := c.level(hc, "http://"+addr, name, n)
		if r.done != 32 || r.failed != 0 || r.tokens != 32*8 || len(r.ttft) != 32 {
			t.Errorf("%d clients: %d done, %d failed, %d tokens, %d first-token times", n, r.done, r.failed, r.tokens, len(r.ttft))
		}
		for _, d := range r.ttft {
			if d <= 0 {
				t.Errorf("%d clients: time to first token %v", n, d)
				break
			}
		}
	}
	if dev.Samples.Load() == 0 || dev.Batches.Load() != 0 {
		t.Fatalf("%d steps on the device, %d with logits", dev.Samples.Load(), dev.Batches.Load())
	}
}
