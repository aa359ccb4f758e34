// Package bench measures a loaded model the way `edgellm bench` reports it:
// prefill and decode throughput, per-token latency percentiles and jitter,
// peak memory, bytes streamed per token, per-operation times, the machine
// itself in the same run (CPU: stream bandwidth over the weights, a control
// loop's jitter; machine.go), and the same figures from llama.cpp's
// llama-bench for a side-by-side row. It drives a
// backend directly and knows nothing of HTTP.
package bench

import (
	"math"
	"os"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Latency summarizes per-token latencies in milliseconds.
type Latency struct {
	P50, P90, P99, Max, Mean, Std float64
	Jitter                        float64 // p99 / p50
}

// Summarize computes percentiles (nearest rank) and the standard deviation.
func Summarize(d []time.Duration) Latency {
	if len(d) == 0 {
		return Latency{}
	}
	ms := make([]float64, len(d))
	var sum float64
	for i, x := range d {
		ms[i] = float64(x) / 1e6
		sum += ms[i]
	}
	sort.Float64s(ms)
	mean := sum / float64(len(ms))
	var ss float64
	for _, x := range ms {
		ss += (x - mean) * (x - mean)
	}
	l := Latency{
		P50: Percentile(ms, 50), P90: Percentile(ms, 90), P99: Percentile(ms, 99),
		Max: ms[len(ms)-1], Mean: mean, Std: math.Sqrt(ss / float64(len(ms))),
	}
	if l.P50 > 0 {
		l.Jitter = l.P99 / l.P50
	}
	return l
}

// Percentile returns the nearest-rank p-th percentile of sorted values.
func Percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	if rank < 1 {
		rank = 1
	}
	if rank > len(sorted) {
		rank = len(sorted)
	}
	return sorted[rank-1]
}

// Median of values (not necessarily sorted); 0 for none.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// ResetPeakRSS returns the heap's free pages to the system and starts
// PeakRSS again from the resident size now (Linux: clear_refs 5), so that
// work before a measurement (writing a synthetic preset in the same
// process) is not counted in it. It tells whether the system allowed it.
func ResetPeakRSS() bool {
	debug.FreeOSMemory()
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// PeakRSS returns the process's peak resident set size in bytes (Linux's
// VmHWM), or 0 where the system does not say.
func PeakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				if err == nil {
					return kb * 1024
				}
			}
		}
	}
	return 0
}
