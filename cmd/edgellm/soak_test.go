package main

import (
	"context"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/edgellm/edgellm/internal/testfiles"
	"github.com/edgellm/edgellm/store"
)

// A short soak on stories260K: every kind of request runs, and each ends
// as it should (served, hung up by the client, refused with its 4xx, or
// cut by the soak's end): no 5xx, no transport or stream error.
func TestSoakShort(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for seconds")
	}
	c := &loadtestCmd{Model: testfiles.Path(t, "models/stories260K/stories260K-f32.gguf"), NumPredict: 8,
		Prompt: "Once upon a time", Soak: 3 * time.Second}
	stop, addr, name, err := startLocal(slog.New(slog.DiscardHandler), &store.Model{Name: c.Model, Path: c.Model}, "cpu", 1, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	hc := &http.Client{}
	// As Run does: the model loaded first, so the goroutines counted at
	// the start include its own.
	if _, _, err := c.one(context.Background(), hc, "http://"+addr, name); err != nil {
		t.Fatal(err)
	}
	st := c.soak(hc, "http://"+addr, name, 4, true)
	good := map[string]bool{"ok": true, "hung_up": true, "refused_as_expected": true, "cut_by_soak_end": true}
	for _, k := range soakKinds {
		outs := st.counts[k.name]
		if len(outs) == 0 && k.weight >= 10 {
			t.Errorf("%s never ran", k.name)
		}
		for o, n := range outs {
			if !good[o] {
				t.Errorf("%s: %d x %s", k.name, n, o)
			}
		}
	}
}
