package bench

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/backend/cpu"
	"github.com/edgellm/edgellm/internal/testmodel"
	"github.com/edgellm/edgellm/quant"
)

// TestDetrended: a series rising linearly with position (a growing KV
// cache) has a large plain p99/p50 and a detrended one of 1; outliers on
// top of it show as their own size.
func TestDetrended(t *testing.T) {
	const n = 1000
	pos, times := make([]float64, n), make([]float64, n)
	for i := range n {
		pos[i] = float64(128 + i)
		times[i] = 1 + 0.002*float64(i) // 1 ms to 3 ms
	}
	if d := Detrended(pos, times); math.Abs(d-1) > 1e-9 {
		t.Fatalf("straight line: detrended %v, want 1", d)
	}
	for i := 0; i < n; i += 50 { // 2% of tokens 1.5x slower: p99 is one
		times[i] *= 1.5
	}
	sorted := append([]float64(nil), times...)
	sort.Float64s(sorted)
	plain := Percentile(sorted, 99) / Percentile(sorted, 50)
	d := Detrended(pos, times)
	if math.Abs(d-1.5) > 0.02 || plain < 1.4 {
		t.Fatalf("outliers: detrended %v (want ~1.5), plain %v", d, plain)
	}
	// Flat series: the same as the plain ratio.
	flat := []float64{2, 2, 2, 2, 8}
	if d := Detrended([]float64{0, 1, 2, 3, 4}, flat); d <= 1 {
		t.Fatalf("flat with outlier: %v", d)
	}
	// A line that falls through zero has no meaning: plain p99/p50.
	if d := Detrended([]float64{0, 1, 2, 3}, []float64{10, 0.1, 0.1, 0.1}); d != 100 {
		t.Fatalf("falling line: %v, want the plain 100", d)
	}
	if Detrended(nil, nil) != 0 || Detrended([]float64{1}, []float64{1, 2}) != 0 {
		t.Fatal("empty or mismatched input not 0")
	}
}

func TestFraction(t *testing.T) {
	// 500 MB per token at 30 tok/s is 15 GB/s: half of a 30 GB/s stream.
	if f := Fraction(500e6, 30, 30); math.Abs(f-0.5) > 1e-12 {
		t.Fatal(f)
	}
	if Fraction(500e6, 30, 0) != 0 {
		t.Fatal("unknown stream not 0")
	}
}

func TestParseCacheSize(t *testing.T) {
	for s, want := range map[string]int64{"32768K\n": 32 << 20, "32M": 32 << 20, "1G": 1 << 30, "512": 512, "": 0, "xK": 0, "-1K": 0} {
		if got := parseCacheSize(s); got != want {
			t.Errorf("%q: %d, want %d", s, got, want)
		}
	}
}

// TestSpanSum: every byte of a range across slices is read once, whatever
// the alignment and tails, and a ring wraps.
func TestSpanSum(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var parts [][]byte
	var all []byte
	for _, n := range []int{0, 7, 64, 200, 1, 1000, 63} {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rng.IntN(256))
		}
		parts, all = append(parts, p), append(all, p...)
	}
	s := newSpan(parts)
	if s.total != int64(len(all)) {
		t.Fatal(s.total)
	}
	for range 200 {
		lo := rng.Int64N(s.total + 1)
		hi := lo + rng.Int64N(s.total-lo+1)
		// Poison every byte outside [lo, hi) and the sum must not move;
		// bump one inside and it must.
		before := s.sum(lo, hi)
		if hi > lo {
			k := lo + rng.Int64N(hi-lo)
			i := partOf(s, k)
			parts[i][k-s.start[i]]++
			if s.sum(lo, hi) == before {
				t.Fatalf("[%d,%d): byte %d not read", lo, hi, k)
			}
			parts[i][k-s.start[i]]--
		}
		for k := range s.total {
			if k >= lo && k < hi {
				continue
			}
			i := partOf(s, k)
			parts[i][k-s.start[i]] ^= 0xff
		}
		if s.sum(lo, hi) != before {
			t.Fatalf("[%d,%d): bytes outside read", lo, hi)
		}
		for k := range s.total {
			if k < lo || k >= hi {
				i := partOf(s, k)
				parts[i][k-s.start[i]] ^= 0xff
			}
		}
	}
	if s.sumRing(s.total-5, 10) != s.sum(s.total-5, s.total)+s.sum(0, 5) {
		t.Fatal("ring does not wrap")
	}
	if s.sumRing(3, 3*s.total) != 3*s.sum(0, s.total) {
		t.Fatal("three laps of the ring")
	}
}

func partOf(s *span, k int64) int {
	for i := len(s.start) - 1; i >= 0; i-- {
		if s.start[i] <= k && k < s.start[i]+int64(len(s.parts[i])) {
			return i
		}
	}
	panic("no part")
}

// TestRunMachineFields: on the CPU backend bench measures the machine in
// the same run, over the model's own weights or (when they are under 4x
// the LLC) a buffer of 4x it, and the JSON carries the fields by their
// names.
func TestRunMachineFields(t *testing.T) {
	w := testmodel.Weights(t, testmodel.Write(t, testmodel.Tiny("llama", quant.Q8_0)))
	bm, err := cpu.Load(w, cpu.Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer bm.Close()
	var resident int64
	bm.(backend.WeightMemory).VisitWeightMemory(func(b []byte) { resident += int64(len(b)) })
	for _, c := range []struct {
		llc    int64
		buffer bool
	}{{resident / 4, false}, {resident / 2, true}, {256 << 10, true}} {
		o := Options{Prompt: 4, Gen: 24, Repeat: 2, Seed: 1, llc: c.llc, streamTime: 1}
		r, err := Run(context.Background(), bm, WeightBytesPerToken(w), o)
		if err != nil {
			t.Fatal(err)
		}
		if r.StreamGBPerS == nil || r.BandwidthFraction == nil || r.ControlP99P50 == nil {
			t.Fatalf("machine figures missing: %+v", r)
		}
		if s := *r.StreamGBPerS; !(s > 0) || math.IsInf(s, 0) {
			t.Fatalf("stream %v GB/s", s)
		}
		if want := Fraction(r.WeightBytesPerToken, r.DecodeTokPerS, *r.StreamGBPerS); *r.BandwidthFraction != want || !(want > 0) {
			t.Fatalf("fraction %v, want %v", *r.BandwidthFraction, want)
		}
		if *r.ControlP99P50 < 1 || r.P99P50Detrended < 1 || *r.ControlP50MS <= 0 {
			t.Fatalf("control p99/p50 %v, detrended %v, control p50 %v", *r.ControlP99P50, r.P99P50Detrended, *r.ControlP50MS)
		}
		wantBytes := resident
		if c.buffer {
			wantBytes = 4 * c.llc
		}
		if r.StreamBuffer != c.buffer || r.StreamBytes != wantBytes || r.LLCBytes != c.llc {
			t.Fatalf("llc %d: buffer %v, %d bytes streamed (want %v, %d)", c.llc, r.StreamBuffer, r.StreamBytes, c.buffer, wantBytes)
		}
		js, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{`"stream_gb_per_s":`, `"bandwidth_fraction":`, `"control_p99_p50":`, `"p99_p50_detrended":`, `"kernels":`} {
			if !strings.Contains(string(js), k) {
				t.Errorf("JSON lacks %s: %s", k, js)
			}
		}
		var sb strings.Builder
		r.Print(&sb)
		if !strings.Contains(sb.String(), "control loop") || !strings.Contains(sb.String(), "of the stream") {
			t.Errorf("text report lacks the machine's figures:\n%s", sb.String())
		}
	}
}

// TestStreamBufferNotInPeakRSS: where the weights are under 4x the
// last-level cache and the machine streams a buffer of 4x it instead, the buffer exists only
// while the machine is measured, and peak_rss_bytes is the engine's: here a
// 256 MB buffer beside a model of a few MB.
func TestStreamBufferNotInPeakRSS(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("PeakRSS reads Linux's /proc")
	}
	w := testmodel.Weights(t, testmodel.Write(t, testmodel.Tiny("llama", quant.Q8_0)))
	bm, err := cpu.Load(w, cpu.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer bm.Close()
	const llc = 64 << 20
	if !ResetPeakRSS() {
		t.Skip("/proc/self/clear_refs refused: the peak cannot be restarted")
	}
	o := Options{Prompt: 4, Gen: 8, Repeat: 2, Seed: 1, llc: llc, streamTime: 1}
	r, err := Run(context.Background(), bm, WeightBytesPerToken(w), o)
	if err != nil {
		t.Fatal(err)
	}
	if !r.StreamBuffer || r.StreamBytes != 4*llc {
		t.Fatalf("buffer %v, %d bytes streamed: want the %d-byte buffer", r.StreamBuffer, r.StreamBytes, 4*llc)
	}
	if r.PeakRSSBytes <= 0 || r.PeakRSSBytes >= 4*llc {
		t.Fatalf("peak RSS %d with a %d-byte stream buffer: the buffer counted", r.PeakRSSBytes, 4*llc)
	}
}

// tracedModel records its sessions' decodes in events ("d" each), beside
// the control steps ("c" each) a test's onControl records.
type tracedModel struct {
	backend.Model
	backend.WeightMemory
	backend.ThreadRunner
	events *[]byte
}

type tracedSession struct {
	backend.Session
	events *[]byte
}

func (m tracedModel) NewSession(ctx int) (backend.Session, error) {
	s, err := m.Model.NewSession(ctx)
	if err != nil {
		return nil, err
	}
	return tracedSession{s, m.events}, nil
}

func (s tracedSession) Decode(tok int32, logits []float32) error {
	*s.events = append(*s.events, 'd')
	return s.Session.Decode(tok, logits)
}

// TestControlSteps: after each repeat's decode, the control loop runs as
// many steps as tokens were timed, back to back, on the model's threads;
// the warm-up's tokens have none.
func TestControlSteps(t *testing.T) {
	w := testmodel.Weights(t, testmodel.Write(t, testmodel.Tiny("llama", quant.Q8_0)))
	for _, threads := range []int{1, 2} {
		bm, err := cpu.Load(w, cpu.Options{Threads: threads})
		if err != nil {
			t.Fatal(err)
		}
		var events []byte
		tm := tracedModel{bm, bm.(backend.WeightMemory), bm.(backend.ThreadRunner), &events}
		const gen, repeat = 12, 2
		o := Options{Prompt: 4, Gen: gen, Repeat: repeat, Seed: 1, streamTime: 1,
			onControl: func() { events = append(events, 'c') }}
		r, err := Run(context.Background(), tm, WeightBytesPerToken(w), o)
		bm.Close()
		if err != nil {
			t.Fatal(err)
		}
		want := strings.Repeat("d", gen) + strings.Repeat(strings.Repeat("d", gen)+strings.Repeat("c", gen), repeat) // warm-up, then each repeat
		if string(events) != want {
			t.Fatalf("%d threads: decodes and control steps ran as\n%s\nwant\n%s", threads, events, want)
		}
		if r.ControlP99P50 == nil || *r.ControlP99P50 < 1 || *r.ControlP50MS <= 0 {
			t.Fatalf("%d threads: control figures %v %v", threads, r.ControlP99P50, r.ControlP50MS)
		}
	}
}

// serialThreads runs a ThreadRunner's shares one after another.
type serialThreads int

func (n serialThreads) Threads() int { return int(n) }

func (n serialThreads) RunThreads(fn func(w, n int)) {
	for w := range int(n) {
		fn(w, int(n))
	}
}

// TestControlReadsWeights: with weights under 4x the last-level cache the
// stream passes read a buffer of 4x it, but the control steps read the
// weights themselves, as the tokens they judge do; and the buffer is gone
// once the machine has been measured.
func TestControlReadsWeights(t *testing.T) {
	weights := [][]byte{make([]byte, 3000), make([]byte, 5000)}
	const llc = 1 << 20
	m := newMachine(weights, serialThreads(2), 4096, llc)
	if !m.buffer {
		t.Fatal("8000 bytes of weights beside a 1 MiB cache: want a buffer")
	}
	steps := 0
	m.onStep = func() {
		steps++
		if m.s.total != 8000 {
			t.Fatalf("control step %d reads %d bytes of memory, want the 8000 of the weights", steps, m.s.total)
		}
	}
	m.measure(time.Millisecond, 5)
	if steps != 5 || len(m.lat) != 5 {
		t.Fatalf("%d control steps, %d timed: want 5", steps, len(m.lat))
	}
	if m.s.total != 8000 {
		t.Fatalf("after measuring, the machine reads %d bytes: want the weights back", m.s.total)
	}
	if r := m.result(); !r.Buffer || r.StreamBytes != 4*llc || r.StreamGBPerS <= 0 {
		t.Fatalf("stream figures %+v: want the 4 MiB buffer's", r)
	}
}
