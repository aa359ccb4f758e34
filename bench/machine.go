package bench

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
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
	Buffer        bool    // the weights fit the LLC: a buffer of 4x LLC was streamed instead
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
		acc += sumBytes(p[a:b])
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

// sumBytes adds b's 8-byte words in eight chains (so loads, not the adds,
// bound it), then its tail bytes.
func sumBytes(b []byte) uint64 {
	var s0, s1, s2, s3, s4, s5, s6, s7 uint64
	le := binary.LittleEndian
	for len(b) >= 64 {
		w := b[:64:64]
		s0 += le.Uint64(w[0:])
		s1 += le.Uint64(w[8:])
		s2 += le.Uint64(w[16:])
		s3 += le.Uint64(w[24:])
		s4 += le.Uint64(w[32:])
		s5 += le.Uint64(w[40:])
		s6 += le.Uint64(w[48:])
		s7 += le.Uint64(w[56:])
		b = b[64:]
	}
	for _, x := range b {
		s0 += uint64(x)
	}
	return s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7
}

// gang runs one job on n threads (the caller is thread 0) and returns when
// all are done: one hand-off per job, the workers spinning in between with
// a yield every 256 polls, as the CPU backend's pool waits on a small
// machine.
type gang struct {
	n       int
	gen     atomic.Uint64
	pending atomic.Int32
	job     func(w int)
	stop    atomic.Bool
	done    sync.WaitGroup
	sink    []uint64 // one per thread, a cache line apart
}

func newGang(n int) *gang {
	g := &gang{n: max(n, 1), sink: make([]uint64, 8*max(n, 1))}
	for w := 1; w < g.n; w++ {
		g.done.Add(1)
		go g.worker(w)
	}
	return g
}

func (g *gang) worker(w int) {
	defer g.done.Done()
	var seen uint64
	for {
		for i := 0; g.gen.Load() == seen; i++ {
			if i&255 == 255 {
				runtime.Gosched()
			}
		}
		seen = g.gen.Load()
		if g.stop.Load() {
			return
		}
		g.job(w)
		g.pending.Add(-1)
	}
}

func (g *gang) run(job func(w int)) {
	g.job = job
	g.pending.Store(int32(g.n - 1))
	g.gen.Add(1)
	job(0)
	for i := 0; g.pending.Load() != 0; i++ {
		if i&63 == 63 {
			runtime.Gosched()
		}
	}
}

func (g *gang) close() {
	g.stop.Store(true)
	g.gen.Add(1)
	g.done.Wait()
}

// machine measures the machine between a run's repeats, so its figures
// come from the same minutes as the decode they judge: after each repeat,
// stream passes and that repeat's control steps.
type machine struct {
	s          *span
	threads    int
	stepBytes  int64 // bytes per control step (weight_bytes_per_token)
	buffer     bool
	llc        int64
	llcAssumed bool
	rates      []float64       // GB/s of each pass
	lat        []time.Duration // each control step
}

// newMachine prepares to stream weights (or, where they fit the last-level
// cache llc, 0 to ask the system, a buffer of 4x it) with threads threads.
func newMachine(weights [][]byte, threads int, stepBytes, llc int64) *machine {
	m := &machine{threads: max(threads, 1), stepBytes: stepBytes, llc: llc}
	if m.llc <= 0 {
		if m.llc = lastLevelCache(); m.llc <= 0 {
			m.llc, m.llcAssumed = assumedLLC, true
		}
	}
	m.s = newSpan(weights)
	if m.s.total < m.llc {
		// Reads would hit the cache: stream memory the cache cannot hold.
		// Written, so every page is a page of its own (untouched pages all
		// map the one zero page, which stays cached).
		buf := make([]byte, 4*m.llc)
		for i := range buf {
			buf[i] = byte(i*131 + 7)
		}
		m.s, m.buffer = newSpan([][]byte{buf}), true
	}
	return m
}

// measure streams whole passes for at least minTime (and 3 passes), then
// runs steps control steps of stepBytes each, moving on through the memory.
// Its threads exist only while it runs, so they never compete with decode.
func (m *machine) measure(minTime time.Duration, steps int) {
	s := m.s
	if s.total == 0 {
		return
	}
	g := newGang(m.threads)
	defer g.close()
	n := int64(g.n)
	pass := func(w int) { g.sink[8*w] += s.sum(s.total*int64(w)/n, s.total*int64(w+1)/n) }
	g.run(pass) // warm-up: the threads, pages and TLB
	for t0, k := time.Now(), 0; k < 3 || time.Since(t0) < minTime; k++ {
		p0 := time.Now()
		g.run(pass)
		if d := time.Since(p0).Seconds(); d > 0 {
			m.rates = append(m.rates, float64(s.total)/d/1e9)
		}
	}
	if steps <= 0 || m.stepBytes <= 0 {
		return
	}
	var off int64
	step := func(w int) {
		lo, hi := m.stepBytes*int64(w)/n, m.stepBytes*int64(w+1)/n
		g.sink[8*w] += s.sumRing(off+lo, hi-lo)
	}
	g.run(step)
	prev := time.Now()
	for range steps {
		off = (off + m.stepBytes) % s.total
		g.run(step)
		now := time.Now()
		m.lat = append(m.lat, now.Sub(prev))
		prev = now
	}
}

// result is the median pass rate and the control steps' percentiles.
func (m *machine) result() figures {
	r := figures{StreamGBPerS: Median(m.rates), StreamBytes: m.s.total, Buffer: m.buffer, LLCBytes: m.llc, LLCAssumed: m.llcAssumed}
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
