package bench

import (
	"math"
	"runtime"
	"testing"
	"time"

	"github.com/edgellm/edgellm/backend"
)

func TestPercentileNearestRank(t *testing.T) {
	v := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, c := range []struct{ p, want float64 }{{50, 5}, {90, 9}, {99, 10}, {100, 10}, {0, 1}, {10, 1}, {11, 2}} {
		if got := Percentile(v, c.p); got != c.want {
			t.Errorf("Percentile(%v) = %v, want %v", c.p, got, c.want)
		}
	}
	if Percentile(nil, 50) != 0 {
		t.Error("empty percentile not 0")
	}
}

func TestSummarize(t *testing.T) {
	d := []time.Duration{4 * time.Millisecond, 2 * time.Millisecond, 2 * time.Millisecond, 8 * time.Millisecond}
	l := Summarize(d)
	if l.P50 != 2 || l.Max != 8 || l.Mean != 4 || l.P99 != 8 {
		t.Fatalf("got %+v", l)
	}
	if math.Abs(l.Std-math.Sqrt(6)) > 1e-12 || l.Jitter != 4 {
		t.Fatalf("std/jitter %+v", l)
	}
}

func TestMedian(t *testing.T) {
	if m := Median([]float64{3, 1, 2}); m != 2 {
		t.Fatal(m)
	}
	if m := Median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Fatal(m)
	}
}

// A peak from before ResetPeakRSS (256 MB touched, then dropped) is not
// in PeakRSS after it.
func TestResetPeakRSS(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("PeakRSS reads Linux's /proc")
	}
	const big = 256 << 20
	b := make([]byte, big)
	for i := range b {
		b[i] = byte(i)
	}
	runtime.KeepAlive(b)
	b = nil
	before := PeakRSS()
	if before < big {
		t.Fatalf("peak RSS %d after touching %d bytes", before, big)
	}
	if !ResetPeakRSS() {
		t.Fatal("/proc/self/clear_refs refused")
	}
	if after := PeakRSS(); after > before-big/2 {
		t.Errorf("peak RSS %d after the reset, %d before: the dropped %d bytes still counted", after, before, big)
	}
}

func TestPeakRSS(t *testing.T) {
	if PeakRSS() <= 0 {
		t.Skip("no /proc/self/status VmHWM here")
	}
}

func TestParseLlamaBench(t *testing.T) {
	out := []byte(`[{"n_prompt":128,"n_gen":0,"avg_ts":22.8},{"n_prompt":0,"n_gen":256,"avg_ts":12.3}]`)
	lb, err := parseLlamaBench(out)
	if err != nil {
		t.Fatal(err)
	}
	if lb.PrefillTokPerS != 22.8 || lb.DecodeTokPerS != 12.3 {
		t.Fatalf("%+v", lb)
	}
	r := Result{PrefillTokPerS: 45.6, DecodeTokPerS: 24.6}
	lb.Compare(&r)
	if lb.PrefillRatio != 2 || lb.DecodeRatio != 2 {
		t.Fatalf("%+v", lb)
	}
	if _, err := parseLlamaBench([]byte("not json")); err == nil {
		t.Fatal("want error")
	}
	if _, err := parseLlamaBench([]byte("[]")); err == nil {
		t.Fatal("want error for no rows")
	}
}

// TestOpRows: one row per operation, ms per token and shares of the total;
// a backend that runs QKV inside attention gets one row for both.
func TestOpRows(t *testing.T) {
	times := backend.OpTimes{Embedding: 0.01, QKV: 0.02, Attention: 0.03, Output: 0.01, FFNUpGate: 0.01, FFNDown: 0.01, LMHead: 0.01}
	rows := opRows(times, 10)
	if len(rows) != 8 || rows[1].Op != "qkv_projection" || math.Abs(rows[1].MSPerTk-2) > 1e-9 || math.Abs(rows[2].Share-0.3) > 1e-9 {
		t.Fatalf("rows %+v", rows)
	}
	times.QKV, times.Attention, times.QKVInAttention = 0, 0.05, true
	rows = opRows(times, 10)
	if len(rows) != 7 || rows[1].Op != "qkv_attention" || math.Abs(rows[1].MSPerTk-5) > 1e-9 || rows[2].Op != "output_projection" {
		t.Fatalf("fused rows %+v", rows)
	}
}
