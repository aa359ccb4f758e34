package main

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
	"github.com/edgellm/edgellm/internal/testmodel"
	"github.com/edgellm/edgellm/quant"
)

// parseCLI parses args as main does, without exiting.
func parseCLI(t *testing.T, args ...string) (*cli, error) {
	t.Helper()
	var c cli
	p, err := kong.New(&c, kong.Name("edgellm"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Parse(args)
	return &c, err
}

// --batch is a comma list, kept in the order given; bad lists are errors
// at parse time, before any model is loaded.
func TestBenchBatchFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []int
		err  string
	}{
		{nil, []int{1}, ""},
		{[]string{"--batch", "1,4,16,64"}, []int{1, 4, 16, 64}, ""},
		{[]string{"--batch", "16,1"}, []int{16, 1}, ""},
		{[]string{"--batch", "256"}, []int{256}, ""},
		{[]string{"--batch", "0"}, nil, "outside 1..256"},
		{[]string{"--batch", "1,257"}, nil, "outside 1..256"},
		{[]string{"--batch", "4,1,4"}, nil, "twice"},
		{[]string{"--batch", "1,x"}, nil, "x"},
	} {
		c, err := parseCLI(t, append([]string{"bench"}, tc.args...)...)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: error %v, want one about %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tc.args, err)
		} else if !slices.Equal(c.Bench.Batch, tc.want) {
			t.Errorf("%v: batch %v, want %v", tc.args, c.Bench.Batch, tc.want)
		}
	}
}

// `bench --json --batch 1,3` on a tiny model prints one JSON object with
// today's fields and a batches array of the two sizes.
func TestBenchBatchJSON(t *testing.T) {
	path := testmodel.Write(t, testmodel.Tiny("llama", quant.Q8_0))
	c, err := parseCLI(t, "bench", "--json", "-m", path, "--backend", "cpu", "--threads", "1",
		"-p", "4", "-n", "12", "--repeat", "1", "--batch", "1,3")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := c.Bench.write(&out, quiet); err != nil {
		t.Fatal(err)
	}
	var r struct {
		Backend string  `json:"backend"`
		Decode  float64 `json:"decode_tok_per_s"`
		P50     float64 `json:"p50_ms"`
		KV      int64   `json:"kv_bytes_per_session"`
		Batches []struct {
			Batch  int     `json:"batch"`
			Decode float64 `json:"decode_tok_per_s"`
			P50    float64 `json:"p50_ms"`
			P99    float64 `json:"p99_ms"`
		} `json:"batches"`
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("not one JSON object: %v\n%s", err, out.String())
	}
	if r.Backend != "cpu" || !(r.Decode > 0) || !(r.P50 > 0) || r.KV <= 0 {
		t.Errorf("top level: %+v", r)
	}
	if len(r.Batches) != 2 || r.Batches[0].Batch != 1 || r.Batches[1].Batch != 3 {
		t.Fatalf("batches %+v", r.Batches)
	}
	for _, b := range r.Batches {
		if !(b.Decode > 0) || !(b.P50 > 0) || b.P99 < b.P50 {
			t.Errorf("batch %d: %+v", b.Batch, b)
		}
	}
}
