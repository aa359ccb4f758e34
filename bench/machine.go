package bench

import (
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/backend/cpu/kernels"
	"github.com/edgellm/edgellm/internal/offheap"
)

// The machine's own figures, measured in the same run as the model so each
// figure is judged against the machine as it is at that moment (a
// neighbour on the host moves both): a streaming read over the weight
// memory (stream_gb_per_s, the roofline of bandwidth_fraction) and a
// control loop that streams one token's bytes per step (control_p99_p50,
// the jitter floor).

// figures is what a run found of the machine.
type figures struct {
	StreamGBPerS  float64 // median over passes of bytes read / time, all threads together
	StreamBytes   int64   // bytes one pass reads
	Buffer        bool    // the weights are under 4x the LLC: the stream passes read a buffer of 4x LLC instead
	LLCBytes      int64   // last-level cache size used for that decision
	LLCAssumed    bool    // the system did not say; assumedLLC was used
	ControlP50MS  float64 // the control loop's median step
	ControlJitter float64 // its p99/p50
}

// assumedLLC is the last-level cache assumed where the system does not say
// (VMs often hide /sys/.../cache): one CCD's L3 on current x86 servers.
const assumedLLC = 32 << 20

// lastLevelCache returns the size of cpu0's highest-level cache from
// sysfs, or 0 where it is not there.
func lastLevelCache() int64 {
	dirs, _ := filepath.Glob("/sys/devices/system/cpu/cpu0/cache/index*")
	var best, size int64
	for _, d := range dirs {
		lv, err1 := os.ReadFile(filepath.Join(d, "level"))
		sz, err2 := os.ReadFile(filepath.Join(d, "size"))
		if err1 != nil || err2 != nil {
			continue
		}
		l, err := strconv.ParseInt(strings.TrimSpace(string(lv)), 10, 64)
		if err != nil {
			continue
		}
		if b := parseCacheSize(string(sz)); b > 0 && l >= best {
			best, size = l, b
		}
	}
	return size
}

// parseCacheSize reads sysfs's "32768K" (or "32M", or plain bytes).
func parseCacheSize(s string) int64 {
	s = strings.TrimSpace(s)
	mul := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mul, s = 1<<10, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mul, s = 1<<20, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "G"):
		mul, s = 1<<30, strings.TrimSuffix(s, "G")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > 1<<40/mul {
		return 0
	}
	return n * mul
}

// span is a byte range of a concatenation of slices, read without copying.
type span struct {
	parts [][]byte
	start []int64 // start[i]: offset of parts[i] in the concatenation
	total int64
}

func newSpan(parts [][]byte) *span {
	s := &span{parts: parts, start: make([]int64, len(parts))}
	for i, p := range parts {
		s.start[i] = s.total
		s.total += int64(len(p))
	}
	return s
}

// sum reads every byte of [lo, hi) (0 <= lo <= hi <= total) and returns a
// value depending on all of them, so the reads cannot be dropped.
func (s *span) sum(lo, hi int64) uint64 {
	var acc uint64
	i := sort.Search(len(s.start), func(i int) bool { return s.start[i]+int64(len(s.parts[i])) > lo })
	for ; i < len(s.parts) && s.start[i] < hi; i++ {
		p := s.parts[i]
		a := max(lo-s.start[i], 0)
		b := min(hi-s.start[i], int64(len(p)))
		acc += kernels.StreamSum(p[a:b])
	}
	return acc
}

// sumRing reads n bytes starting at off, wrapping at total.
func (s *span) sumRing(off, n int64) uint64 {
	var acc uint64
	for n > 0 {
		off %= s.total
		k := min(n, s.total-off)
		acc += s.sum(off, off+k)
		off, n = off+k, n-k
	}
	return acc
}

// machine measures the machine between a run's repeats, so its figures
// come from the same minutes as the decode they judge: after each repeat,
// stream passes and that repeat's control steps. It runs on the model's
// own threads (backend.ThreadRunner: the CPU backend's pool, with the
// hand-off a decode's operations use), so the control competes for
// nothing the decode does not. (A control step after each token instead
// would pair them in time, but it slowed the decode it judged:
// docs/cpu-notes.md.)
type machine struct {
	s          *span
	threads    backend.ThreadRunner
	sink       []uint64       // one per thread, a cache line apart
	pass       func(w, n int) // thread w's share of one stream pass
	step       func(w, n int) // thread w's share of one control step, from off
	stepBytes  int64          // bytes per control step (weight_bytes_per_token)
	off        int64          // where the next control step starts
	buffer     bool
	llc        int64
	llcAssumed bool
	rates      []float64       // GB/s of each pass
	lat        []time.Duration // each control step
	onStep     func()          // tests: called as each control step starts
}

// newMachine prepares to stream weights (or, where they are under 4x the
// last-level cache llc, 0 to ask the system, a buffer of 4x it) on
// threads.
func newMachine(weights [][]byte, threads backend.ThreadRunner, stepBytes, llc int64) *machine {
	m := &machine{threads: threads, stepBytes: stepBytes, llc: llc, sink: make([]uint64, 8*max(threads.Threads(), 1))}
	if m.llc <= 0 {
		if m.llc = lastLevelCache(); m.llc <= 0 {
			m.llc, m.llcAssumed = assumedLLC, true
		}
	}
	m.s = newSpan(weights)
	// Reads of weights the cache holds would hit it, and weights of a
	// few times the cache still partly stay in it between passes
	// (docs/cpu-notes.md): under 4x the cache the stream passes read a
	// buffer of 4x it instead, which exists only while they run
	// (measure), so that the engine's peak RSS does not count it.
	m.buffer = m.s.total < 4*m.llc
	// Made once: a closure per step would allocate between tokens.
	m.pass = func(w, n int) {
		t := m.s.total
		m.sink[8*w] += m.s.sum(t*int64(w)/int64(n), t*int64(w+1)/int64(n))
	}
	m.step = func(w, n int) {
		lo, hi := m.stepBytes*int64(w)/int64(n), m.stepBytes*int64(w+1)/int64(n)
		m.sink[8*w] += m.s.sumRing(m.off+lo, hi-lo)
	}
	return m
}

// measure runs the stream passes (at least minTime) and n control steps.
// With a buffer, the passes read it: it is made for them and given back
// after, and the process's peak RSS, read just before it is made, is
// returned as the engine's (and the peak restarted once it is gone:
// ResetPeakRSS); without one, measure returns 0. The control steps read
// the weights either way: they judge the engine's tokens, which read the
// weights with whatever share of them the cache holds, and a buffer that
// always comes from memory ran steadier than a token over the same bytes
// can (docs/cpu-notes.md).
func (m *machine) measure(minTime time.Duration, n int) (enginePeak int64) {
	if m.buffer {
		enginePeak = PeakRSS()
		// outside the heap, so that release gives it back at once and
		// the peak restarted after it does not count it (offheap)
		buf, release := offheap.Alloc(int(4 * m.llc))
		// Written, so every page is a page of its own (untouched pages
		// all map the one zero page, which stays cached).
		for i := range buf {
			buf[i] = byte(i*131 + 7)
		}
		weights := m.s
		m.s = newSpan([][]byte{buf})
		m.stream(minTime)
		m.s = weights
		release()
		ResetPeakRSS()
	} else {
		m.stream(minTime)
	}
	for range n {
		m.control()
	}
	return enginePeak
}

// timed runs fn on the threads and returns how long it took.
func (m *machine) timed(fn func(w, n int)) time.Duration {
	t0 := time.Now()
	m.threads.RunThreads(fn)
	return time.Since(t0)
}

// stream reads whole passes over the memory for at least minTime (and 3
// passes), after one untimed pass (pages and TLB).
func (m *machine) stream(minTime time.Duration) {
	if m.s.total == 0 {
		return
	}
	m.timed(m.pass)
	for t0, k := time.Now(), 0; k < 3 || time.Since(t0) < minTime; k++ {
		if d := m.timed(m.pass).Seconds(); d > 0 {
			m.rates = append(m.rates, float64(m.s.total)/d/1e9)
		}
	}
}

// control runs one control step: stepBytes read by the threads together,
// moving on through the memory (wrapping), its time kept.
func (m *machine) control() {
	if m.s.total == 0 || m.stepBytes <= 0 {
		return
	}
	if m.onStep != nil {
		m.onStep()
	}
	m.lat = append(m.lat, m.timed(m.step))
	m.off = (m.off + m.stepBytes) % m.s.total
}

// result is the median pass rate and the control steps' percentiles.
func (m *machine) result() figures {
	r := figures{StreamGBPerS: Median(m.rates), StreamBytes: m.s.total, Buffer: m.buffer, LLCBytes: m.llc, LLCAssumed: m.llcAssumed}
	if m.buffer {
		r.StreamBytes = 4 * m.llc
	}
	if len(m.lat) > 0 {
		l := Summarize(m.lat)
		r.ControlP50MS, r.ControlJitter = l.P50, l.Jitter
	}
	return r
}

// Fraction is the share of the streaming bandwidth a decode uses:
// weightBytes x tokPerS / (streamGBPerS x 1e9); 0 when stream is unknown.
func Fraction(weightBytes int64, tokPerS, streamGBPerS float64) float64 {
	if streamGBPerS <= 0 {
		return 0
	}
	return float64(weightBytes) * tokPerS / (streamGBPerS * 1e9)
}

// Detrended is p99/p50 (Percentile's nearest rank) of times divided by
// their least-squares line over pos, so a cost that grows with the
// position (the KV cache) is not counted as jitter. Where the line is not
// positive at every position (no meaningful trend) it is the plain p99/p50.
func Detrended(pos, times []float64) float64 {
	r := detrendRatios(pos, times)
	if r == nil {
		return 0
	}
	sort.Float64s(r)
	p50 := Percentile(r, 50)
	if !(p50 > 0) || math.IsInf(p50, 0) {
		return 0
	}
	return Percentile(r, 99) / p50
}

// detrendRatios is each time over the least-squares line of times against
// pos, in order (the plain times where the line is not positive at every
// position: a ratio of their percentiles ignores one common scale); nil
// for no times.
func detrendRatios(pos, times []float64) []float64 {
	n := len(times)
	if n == 0 || len(pos) != n {
		return nil
	}
	var mx, my float64
	for i := range n {
		mx += pos[i]
		my += times[i]
	}
	mx, my = mx/float64(n), my/float64(n)
	var sxy, sxx float64
	for i := range n {
		sxy += (pos[i] - mx) * (times[i] - my)
		sxx += (pos[i] - mx) * (pos[i] - mx)
	}
	slope := 0.0
	if sxx > 0 {
		slope = sxy / sxx
	}
	r := make([]float64, n)
	for i := range n {
		fit := my + slope*(pos[i]-mx)
		if !(fit > 0) {
			copy(r, times)
			break
		}
		r[i] = times[i] / fit
	}
	return r
}
