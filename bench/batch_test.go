package bench

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/backend/cpu"
	"github.com/edgellm/edgellm/internal/testmodel"
	"github.com/edgellm/edgellm/quant"
)

func tinyCPU(t *testing.T) (backend.Model, int64) {
	t.Helper()
	w := testmodel.Weights(t, testmodel.Write(t, testmodel.Tiny("llama", quant.Q8_0)))
	m, err := cpu.Load(w, cpu.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, WeightBytesPerToken(w)
}

// fast keeps the machine's measurement short in tests.
func fast(o Options) Options {
	o.Seed, o.Repeat, o.streamTime, o.llc = 1, 1, 1, 256<<10
	return o
}

// TestRunBatches: --batch 1,3 adds one row a size, in the order given, with
// sane figures, and the JSON carries them under their documented names.
func TestRunBatches(t *testing.T) {
	m, wb := tinyCPU(t)
	o := fast(Options{Prompt: 4, Gen: 16, Batches: []int{3, 1}})
	r, err := Run(context.Background(), m, wb, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Batches) != 2 || r.Batches[0].Batch != 3 || r.Batches[1].Batch != 1 {
		t.Fatalf("batches %+v, want sizes 3 then 1", r.Batches)
	}
	for _, b := range r.Batches {
		if !(b.DecodeTokPerS > 0) || !(b.P50MS > 0) || b.P99MS < b.P50MS {
			t.Errorf("batch %d: %.1f tok/s, p50 %.4f ms, p99 %.4f ms", b.Batch, b.DecodeTokPerS, b.P50MS, b.P99MS)
		}
	}
	if want := m.(backend.KVSizer).KVBytes(4 + 16); r.KVBytesPerSession != want || want <= 0 {
		t.Errorf("KV bytes a session %d, want %d", r.KVBytesPerSession, want)
	}
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Batches []map[string]any `json:"batches"`
		KV      float64          `json:"kv_bytes_per_session"`
		Decode  float64          `json:"decode_tok_per_s"`
	}
	if err := json.Unmarshal(js, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Batches) != 2 || got.KV <= 0 || got.Decode <= 0 {
		t.Fatalf("JSON: %s", js)
	}
	for _, row := range got.Batches {
		if len(row) != 4 {
			t.Errorf("row %v: want exactly batch, decode_tok_per_s, p50_ms, p99_ms", row)
		}
		for _, k := range []string{"batch", "decode_tok_per_s", "p50_ms", "p99_ms"} {
			if _, ok := row[k]; !ok {
				t.Errorf("row %v lacks %q", row, k)
			}
		}
	}
	var sb strings.Builder
	r.Print(&sb)
	if !strings.Contains(sb.String(), "batched decode") || !strings.Contains(sb.String(), "KV cache") {
		t.Errorf("text report lacks the batch table:\n%s", sb.String())
	}
}

// TestRunDefaultNoBatches: the default (no list, or batch 1 alone) is
// today's report: no batches, no KV field in the JSON.
func TestRunDefaultNoBatches(t *testing.T) {
	m, wb := tinyCPU(t)
	for _, sizes := range [][]int{nil, {1}} {
		r, err := Run(context.Background(), m, wb, fast(Options{Prompt: 4, Gen: 8, Batches: sizes}))
		if err != nil {
			t.Fatal(err)
		}
		js, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(js), `"batches"`) || strings.Contains(string(js), `"kv_bytes_per_session"`) {
			t.Errorf("sizes %v: JSON has batch fields: %s", sizes, js)
		}
	}
}

// plain hides the CPU model's batched decode, as a backend without one.
type plain struct{ backend.Model }

func (plain) Name() string { return "nobatch" }

// TestBatchNeedsBatchDecoder: sizes above 1 on a backend without a batched
// step are an error naming the backend, before anything is measured; batch
// 1 alone still runs.
func TestBatchNeedsBatchDecoder(t *testing.T) {
	m, wb := tinyCPU(t)
	p := plain{m}
	if _, ok := backend.Model(p).(backend.BatchDecoder); ok {
		t.Fatal("the fake backend batches")
	}
	_, err := Run(context.Background(), p, wb, fast(Options{Prompt: 4, Gen: 8, Batches: []int{1, 4}}))
	if err == nil || !strings.Contains(err.Error(), "nobatch") {
		t.Fatalf("error %v, want one naming the backend", err)
	}
	if _, err := Run(context.Background(), p, wb, fast(Options{Prompt: 4, Gen: 8, Batches: []int{1}})); err != nil {
		t.Fatalf("batch 1 alone: %v", err)
	}
}

// TestBatchKVLimit: a batch whose caches would exceed the limit is an
// error before anything is allocated.
func TestBatchKVLimit(t *testing.T) {
	m, wb := tinyCPU(t)
	_, err := Run(context.Background(), m, wb, fast(Options{Prompt: 1 << 28, Gen: 8, Batches: []int{256}}))
	if err == nil || !strings.Contains(err.Error(), "KV cache") {
		t.Fatalf("error %v, want one about the KV cache", err)
	}
}

func TestCheckBatchSizes(t *testing.T) {
	for _, c := range []struct {
		sizes []int
		want  string
	}{
		{[]int{1}, ""}, {[]int{16, 1, 4}, ""}, {[]int{256}, ""},
		{[]int{0}, "outside"}, {[]int{257}, "outside"}, {[]int{-3}, "outside"},
		{[]int{1, 4, 1}, "twice"},
	} {
		err := CheckBatchSizes(c.sizes)
		if (c.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want %q", c.sizes, err, c.want)
		}
	}
}
