//go:build !linux

package bench

// procCounters are not read on this system: the timeline keeps the
// runtime's counts alone.
type procCounters struct {
	minFlt, majFlt, nvcsw, nivcsw int64
	runqWait                      int64
	migrations                    int64
}

func procCounterNames() []string { return nil }

func readProcCounters(bool) procCounters { return procCounters{} }
