package bench

import (
	"context"
	"encoding/json"
	"math"
	"strings"
	"testing"
)

// TestRunTimeline: --timeline records one row a generated token, each with
// its position, a positive time whose operations add up to at most it, a
// ratio to the trend, and no allocation (the decode path allocates
// nothing); the ops table is the rows' sum; slow tokens are exactly those
// over the ratio, and the JSON and text carry them.
func TestRunTimeline(t *testing.T) {
	m, wb := tinyCPU(t)
	const prompt, gen = 4, 40
	r, err := Run(context.Background(), m, wb, fast(Options{Prompt: prompt, Gen: gen, Ops: true, Timeline: true}))
	if err != nil {
		t.Fatal(err)
	}
	tl := r.Timeline
	if tl == nil || len(tl.Rows) != gen || tl.StartUnixMS <= 0 {
		t.Fatalf("timeline %+v, want %d rows", tl, gen)
	}
	sums := map[string]float64{}
	slow := 0
	for i, row := range tl.Rows {
		if row.Token != i || row.Pos != prompt+i || !(row.MS > 0) || !(row.Ratio > 0) || math.IsInf(row.Ratio, 0) ||
			(i == 0) != (row.AtMS == 0) || (i > 0 && row.AtMS < tl.Rows[i-1].AtMS+tl.Rows[i-1].MS) {
			t.Fatalf("row %d: %+v", i, row)
		}
		var ops float64
		for k, v := range row.OpsMS {
			ops += v
			sums[k] += v
		}
		if ops > row.MS*1.0001 || ops <= 0 {
			t.Fatalf("row %d: operations %v ms of a %v ms token", i, ops, row.MS)
		}
		if row.AllocBytes != 0 || row.GCCycles != 0 {
			t.Errorf("row %d: %v bytes allocated, %v GC cycles while decoding", i, row.AllocBytes, row.GCCycles)
		}
		if row.Ratio > tl.SlowRatio {
			if slow >= len(tl.Slow) || tl.Slow[slow] != i {
				t.Fatalf("token %d at %.3fx the trend is not in slow %v", i, row.Ratio, tl.Slow)
			}
			slow++
		}
	}
	if slow != len(tl.Slow) {
		t.Fatalf("slow %v, %d rows over %v", tl.Slow, slow, tl.SlowRatio)
	}
	if tl.RestMean == nil || (len(tl.Slow) > 0) != (tl.SlowMean != nil) {
		t.Fatalf("means: slow %+v, rest %+v", tl.SlowMean, tl.RestMean)
	}
	for _, o := range r.Ops {
		if got := o.MSPerTk * gen; math.Abs(got-sums[o.Op]) > 1e-9*gen+1e-6*got {
			t.Errorf("ops table %s: %v ms in all, rows sum to %v", o.Op, got, sums[o.Op])
		}
	}
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{`"timeline":`, `"ratio_to_trend":`, `"minor_faults":`, `"runq_wait_ms":`, `"slow_tokens":`} {
		if !strings.Contains(string(js), k) {
			t.Errorf("JSON lacks %s", k)
		}
	}
	var sb strings.Builder
	r.Print(&sb)
	if !strings.Contains(sb.String(), "timeline") || !strings.Contains(sb.String(), "minor faults") {
		t.Errorf("text report lacks the timeline:\n%s", sb.String())
	}
}
