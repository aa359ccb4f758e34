package bench

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sort"
	"time"

	"github.com/edgellm/edgellm/backend"
)

// TimelineRow is one decoded token of the timeline pass (Options.Timeline):
// its time, its time over the trend of all tokens' times against position
// (the cost of the growing KV cache taken out, as p99_p50_detrended does),
// its per-operation times, and what the process and the runtime counted
// while it ran. Counters the system does not give stay 0 (see Timeline's
// Counters).
type TimelineRow struct {
	Token int `json:"token"`
	Pos   int `json:"pos"`
	// AtMS is when the token started, in ms since the pass's first token
	// (Timeline.StartUnixMS): to line tokens up with other records of
	// the machine.
	AtMS  float64            `json:"at_ms"`
	MS    float64            `json:"ms"`
	Ratio float64            `json:"ratio_to_trend"`
	OpsMS map[string]float64 `json:"ops_ms"`
	timelineCounts
}

// timelineCounts are one token's counts, or a mean of them.
type timelineCounts struct {
	MinorFaults float64 `json:"minor_faults"`
	MajorFaults float64 `json:"major_faults"`
	InvolCS     float64 `json:"involuntary_switches"` // the OS took a CPU from one of our threads
	VolCS       float64 `json:"voluntary_switches"`   // one of our threads blocked or slept
	RunqWaitMS  float64 `json:"runq_wait_ms"`         // our threads' time runnable but without a CPU
	Migrations  float64 `json:"migrations"`           // our threads' moves between CPUs
	GCCycles    float64 `json:"gc_cycles"`
	AllocBytes  float64 `json:"alloc_bytes"` // Go heap allocations
}

// Timeline is the per-token record of one decode pass with per-operation
// timing on, and where its slow tokens differ from the others.
type Timeline struct {
	// Counters names the process counters this system gave (getrusage,
	// /proc/self/task/*/schedstat and sched); the runtime's always count.
	Counters    []string      `json:"counters"`
	StartUnixMS int64         `json:"start_unix_ms"`
	Rows        []TimelineRow `json:"rows"`
	// Slow are the tokens over SlowRatio times the trend; SlowMean and
	// RestMean their mean time, operation times and counts, and the other
	// tokens'.
	SlowRatio float64       `json:"slow_ratio"`
	Slow      []int         `json:"slow_tokens"`
	SlowMean  *TimelineMean `json:"slow_mean,omitempty"`
	RestMean  *TimelineMean `json:"rest_mean,omitempty"`
}

// TimelineMean is the mean of a set of timeline rows.
type TimelineMean struct {
	MS    float64            `json:"ms"`
	OpsMS map[string]float64 `json:"ops_ms"`
	timelineCounts
}

// gcEvery is how many timeline tokens go between collections: about 3 MB
// of the /proc reads' garbage.
const gcEvery = 32

// slowRatio is how far over the trend a token must be to count as slow:
// above the control loop's p99/p50 on a quiet machine (1.05-1.13).
const slowRatio = 1.15

// runtimeCounters reads the runtime's cumulative GC cycles and heap
// allocations into s (allocation-free after the first call).
type runtimeCounters struct{ s []metrics.Sample }

func newRuntimeCounters() *runtimeCounters {
	return &runtimeCounters{s: []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}, {Name: "/gc/heap/allocs:bytes"}}}
}

func (c *runtimeCounters) read() (gc, alloc uint64) {
	metrics.Read(c.s)
	for i, s := range c.s {
		if s.Value.Kind() != metrics.KindUint64 {
			continue
		}
		if i == 0 {
			gc = s.Value.Uint64()
		} else {
			alloc = s.Value.Uint64()
		}
	}
	return gc, alloc
}

// counterSample is every cumulative count at one instant.
type counterSample struct {
	proc      procCounters
	gc, alloc uint64
}

// sample reads every count. Reading /proc allocates and may fault, so
// the runtime's counts are read nearest the token: last before it, first
// after it.
func (c *runtimeCounters) sample(before bool) counterSample {
	var s counterSample
	if before {
		s.proc = readProcCounters(true)
		s.gc, s.alloc = c.read()
		return s
	}
	s.gc, s.alloc = c.read()
	s.proc = readProcCounters(false)
	return s
}

// diff is the counts between two samples.
func diff(a, b counterSample) timelineCounts {
	return timelineCounts{
		MinorFaults: float64(b.proc.minFlt - a.proc.minFlt),
		MajorFaults: float64(b.proc.majFlt - a.proc.majFlt),
		InvolCS:     float64(b.proc.nivcsw - a.proc.nivcsw),
		VolCS:       float64(b.proc.nvcsw - a.proc.nvcsw),
		RunqWaitMS:  float64(b.proc.runqWait-a.proc.runqWait) / 1e6,
		Migrations:  float64(b.proc.migrations - a.proc.migrations),
		GCCycles:    float64(b.gc - a.gc),
		AllocBytes:  float64(b.alloc - a.alloc),
	}
}

// profile prefills the prompt, then decodes gen tokens, with per-operation
// timing on: the prefill's table (nil when the backend records nothing
// for a prefill) and the decode's; with timeline, also each decoded
// token's row. The counters are read between tokens, outside the tokens'
// times.
func profile(sess backend.Session, dec *decoder, prompt []int32, gen int, timeline bool) (prefill, decode []OpRow, tl *Timeline, err error) {
	p, ok := sess.(backend.Profiler)
	if !ok {
		return nil, nil, nil, fmt.Errorf("bench: this backend cannot time its operations")
	}
	if err := sess.Rewind(0); err != nil {
		return nil, nil, nil, err
	}
	p.Profile(true)
	defer p.Profile(false)
	p.OpTimes() // reset
	if err := sess.Prefill(prompt, nil); err != nil {
		return nil, nil, nil, err
	}
	if t := p.OpTimes(); t != (backend.OpTimes{}) {
		prefill = opRows(t, len(prompt))
	}
	rc := newRuntimeCounters()
	if timeline {
		tl = &Timeline{Counters: procCounterNames(), SlowRatio: slowRatio, Rows: make([]TimelineRow, 0, gen)}
		// The timeline's own reads of /proc allocate between tokens; a
		// collection of that garbage, started there, could run on into
		// a token and be counted as the token's (and slow it). So the
		// collector runs only between tokens, every gcEvery of them.
		defer debug.SetGCPercent(debug.SetGCPercent(-1))
		runtime.GC()
	}
	var total backend.OpTimes
	tok := prompt[len(prompt)-1]
	var start time.Time
	for i := 0; i < gen; i++ {
		var c0 counterSample
		if timeline {
			c0 = rc.sample(true)
		}
		t0 := time.Now()
		if i == 0 {
			start = t0
			if tl != nil {
				tl.StartUnixMS = t0.UnixMilli()
			}
		}
		if tok, err = dec.step(tok); err != nil {
			return nil, nil, nil, err
		}
		d := time.Since(t0)
		if !timeline {
			continue
		}
		c1 := rc.sample(false)
		ot := p.OpTimes()
		addOpTimes(&total, ot)
		row := TimelineRow{Token: i, Pos: len(prompt) + i, AtMS: float64(t0.Sub(start)) / 1e6, MS: float64(d) / 1e6, OpsMS: map[string]float64{}, timelineCounts: diff(c0, c1)}
		for _, o := range opRows(ot, 1) {
			row.OpsMS[o.Op] = o.MSPerTk
		}
		tl.Rows = append(tl.Rows, row)
		if (i+1)%gcEvery == 0 {
			runtime.GC()
		}
	}
	if !timeline {
		total = p.OpTimes()
	}
	if tl != nil {
		tl.summarize()
	}
	return prefill, opRows(total, gen), tl, nil
}

// addOpTimes adds b's times to a.
func addOpTimes(a *backend.OpTimes, b backend.OpTimes) {
	a.Embedding += b.Embedding
	a.QKV += b.QKV
	a.Attention += b.Attention
	a.Output += b.Output
	a.FFNUpGate += b.FFNUpGate
	a.FFNDown += b.FFNDown
	a.LMHead += b.LMHead
	a.Other += b.Other
	a.QKVInAttention = a.QKVInAttention || b.QKVInAttention
}

// summarize sets each row's ratio to the trend and the slow tokens' and
// the others' means.
func (t *Timeline) summarize() {
	pos, ms := make([]float64, len(t.Rows)), make([]float64, len(t.Rows))
	for i, r := range t.Rows {
		pos[i], ms[i] = float64(r.Pos), r.MS
	}
	ratios := detrendRatios(pos, ms)
	if ratios == nil {
		return
	}
	// detrendRatios gives the plain times where the trend is not positive:
	// then compare each with the median instead.
	med := Median(ratios)
	if ratios[0] == ms[0] && med > 0 {
		for i := range ratios {
			ratios[i] /= med
		}
	}
	var slow, rest []TimelineRow
	for i := range t.Rows {
		t.Rows[i].Ratio = ratios[i]
		if ratios[i] > t.SlowRatio {
			t.Slow = append(t.Slow, t.Rows[i].Token)
			slow = append(slow, t.Rows[i])
		} else {
			rest = append(rest, t.Rows[i])
		}
	}
	t.SlowMean, t.RestMean = meanRows(slow), meanRows(rest)
}

func meanRows(rows []TimelineRow) *TimelineMean {
	if len(rows) == 0 {
		return nil
	}
	m := &TimelineMean{OpsMS: map[string]float64{}}
	n := float64(len(rows))
	for _, r := range rows {
		m.MS += r.MS / n
		for k, v := range r.OpsMS {
			m.OpsMS[k] += v / n
		}
		c := &m.timelineCounts
		c.MinorFaults += r.MinorFaults / n
		c.MajorFaults += r.MajorFaults / n
		c.InvolCS += r.InvolCS / n
		c.VolCS += r.VolCS / n
		c.RunqWaitMS += r.RunqWaitMS / n
		c.Migrations += r.Migrations / n
		c.GCCycles += r.GCCycles / n
		c.AllocBytes += r.AllocBytes / n
	}
	return m
}

// Print writes the timeline's summary: the slow tokens, and the means of
// the slow tokens and the others side by side.
func (t *Timeline) Print(w io.Writer) {
	fmt.Fprintf(w, "\ntimeline         %d tokens, %d over %.2fx the trend", len(t.Rows), len(t.Slow), t.SlowRatio)
	if len(t.Slow) > 0 {
		fmt.Fprintf(w, ": %v", t.Slow)
	}
	fmt.Fprintf(w, "\ncounters         runtime (GC cycles, allocations)")
	for _, c := range t.Counters {
		fmt.Fprintf(w, ", %s", c)
	}
	fmt.Fprintln(w)
	if t.SlowMean == nil || t.RestMean == nil {
		return
	}
	s, r := t.SlowMean, t.RestMean
	fmt.Fprintf(w, "%-22s %12s %12s\n", "mean a token", "slow", "others")
	fmt.Fprintf(w, "%-22s %12.3f %12.3f\n", "ms", s.MS, r.MS)
	ops := make([]string, 0, len(r.OpsMS))
	for k := range r.OpsMS {
		ops = append(ops, k)
	}
	sort.Strings(ops)
	for _, k := range ops {
		fmt.Fprintf(w, "%-22s %12.3f %12.3f\n", k+" ms", s.OpsMS[k], r.OpsMS[k])
	}
	for _, c := range []struct {
		name string
		s, r float64
	}{
		{"minor faults", s.MinorFaults, r.MinorFaults}, {"major faults", s.MajorFaults, r.MajorFaults},
		{"involuntary switches", s.InvolCS, r.InvolCS}, {"voluntary switches", s.VolCS, r.VolCS},
		{"runqueue wait ms", s.RunqWaitMS, r.RunqWaitMS}, {"migrations", s.Migrations, r.Migrations},
		{"GC cycles", s.GCCycles, r.GCCycles}, {"allocated bytes", s.AllocBytes, r.AllocBytes},
	} {
		fmt.Fprintf(w, "%-22s %12.3f %12.3f\n", c.name, c.s, c.r)
	}
}
