package bench

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
	"time"
)

// procCounters are the process's cumulative counts: getrusage's faults and
// context switches, and summed over its threads the time runnable but
// waiting for a CPU (schedstat's second field) and the moves between CPUs
// (sched's se.nr_migrations, where the kernel has scheduler debugging).
type procCounters struct {
	minFlt, majFlt, nvcsw, nivcsw int64
	runqWait                      time.Duration
	migrations                    int64
}

func procCounterNames() []string {
	names := []string{"getrusage (faults, context switches)"}
	if _, err := os.Stat("/proc/self/schedstat"); err == nil {
		names = append(names, "schedstat (runqueue wait)")
	}
	if _, err := os.Stat("/proc/self/sched"); err == nil {
		names = append(names, "sched (migrations)")
	}
	return names
}

// readProcCounters reads the counts; with before, getrusage last, after
// the reads of /proc (which allocate and may fault), else first, so that
// a token's faults are its own.
func readProcCounters(before bool) (c procCounters) {
	rusage := func() {
		var ru syscall.Rusage
		if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
			// int64 on 64-bit Linux, int32 on 32-bit (arm, 386)
			c.minFlt, c.majFlt, c.nvcsw, c.nivcsw = int64(ru.Minflt), int64(ru.Majflt), int64(ru.Nvcsw), int64(ru.Nivcsw)
		}
	}
	if before {
		defer rusage()
	} else {
		rusage()
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return c
	}
	for _, t := range tasks {
		dir := "/proc/self/task/" + t.Name() + "/"
		if b, err := os.ReadFile(dir + "schedstat"); err == nil {
			if f := bytes.Fields(b); len(f) >= 2 {
				if ns, err := strconv.ParseInt(string(f[1]), 10, 64); err == nil {
					c.runqWait += time.Duration(ns)
				}
			}
		}
		if b, err := os.ReadFile(dir + "sched"); err == nil {
			c.migrations += schedField(b, "se.nr_migrations")
		}
	}
	return c
}

// schedField is the integer value of a "name : value" line of a sched file,
// or 0.
func schedField(b []byte, name string) int64 {
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok || string(bytes.TrimSpace(k)) != name {
			continue
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
		if err != nil {
			return 0
		}
		return n
	}
	return 0
}
