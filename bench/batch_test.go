package bench

import (
	"context"
	"encoding/json"
	"math"
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

// TestRunBatchesOnDevice: a model that picks the batch's tokens itself is
// measured through DecodeBatchSample, fed its own picks, and says so.
func TestRunBatchesOnDevice(t *testing.T) {
	m, wb := tinyCPU(t)
	d, err := testmodel.NewDevice(m)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Run(context.Background(), d, wb, fast(Options{Prompt: 4, Gen: 16, Batches: []int{1, 3}}))
	if err != nil {
		t.Fatal(err)
	}
	// Per size: 4 warm-up steps, then 16 timed; all but the first of each
	// run (after a prefill or the rewind) take each session's last pick.
	if len(r.Batches) != 2 || !r.BatchDevicePick || d.Samples.Load() != 2*(4+16) || d.Batches.Load() != 0 || d.Fed.Load() != (1+3)*(4+16-2) {
		t.Fatalf("%d batches, device pick %v, %d device steps, %d host steps, %d picks fed", len(r.Batches), r.BatchDevicePick,
			d.Samples.Load(), d.Batches.Load(), d.Fed.Load())
	}
	var sb strings.Builder
	r.Print(&sb)
	if !strings.Contains(sb.String(), "picked on the device") {
		t.Errorf("text report does not say where the tokens were picked:\n%s", sb.String())
	}
}

// TestRunOps: --ops gives decode's per-operation table and prefill's,
// each summing to the whole, and says when a backend does not time its
// prefill.
func TestRunOps(t *testing.T) {
	m, wb := tinyCPU(t)
	r, err := Run(context.Background(), m, wb, fast(Options{Prompt: 6, Gen: 8, Ops: true}))
	if err != nil {
		t.Fatal(err)
	}
	for name, rows := range map[string][]OpRow{"decode": r.Ops, "prefill": r.PrefillOps} {
		sum, ms := 0.0, 0.0
		for _, o := range rows {
			sum += o.Share
			ms += o.MSPerTk
		}
		if len(rows) == 0 || math.Abs(sum-1) > 1e-9 || !(ms > 0) {
			t.Errorf("%s: %d rows, shares sum to %v, %v ms a token", name, len(rows), sum, ms)
		}
	}
	var sb strings.Builder
	r.Print(&sb)
	if !strings.Contains(sb.String(), "decode, per operation (cpu") || !strings.Contains(sb.String(), "prefill of 6 tokens, per operation (cpu") {
		t.Errorf("text report:\n%s", sb.String())
	}

	r, err = Run(context.Background(), noPrefillTimes{m}, wb, fast(Options{Prompt: 6, Gen: 8, Ops: true}))
	if err != nil {
		t.Fatal(err)
	}
	sb.Reset()
	r.Print(&sb)
	if len(r.Ops) == 0 || r.PrefillOps != nil || !strings.Contains(sb.String(), "prefill, per operation: not timed") {
		t.Errorf("a backend that does not time its prefill: %d decode rows, %d prefill rows\n%s", len(r.Ops), len(r.PrefillOps), sb.String())
	}
}

// noPrefillTimes is the CPU model with sessions that time only decode
// steps, as a backend whose prefill records nothing.
type noPrefillTimes struct{ backend.Model }

type quietPrefill struct {
	*cpu.Session
	on bool
}

func (n noPrefillTimes) NewSession(ctx int) (backend.Session, error) {
	s, err := n.Model.NewSession(ctx)
	if err != nil {
		return nil, err
	}
	return &quietPrefill{Session: s.(*cpu.Session)}, nil
}

func (q *quietPrefill) Profile(on bool) { q.on = on; q.Session.Profile(on) }

func (q *quietPrefill) Prefill(tokens []int32, logits []float32) error {
	q.Session.Profile(false)
	defer q.Session.Profile(q.on)
	return q.Session.Prefill(tokens, logits)
}
