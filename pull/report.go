package pull

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// NewReporter returns a Progress func that draws a progress bar (bytes, rate, ETA) when w is a
// terminal and writes plain log lines (a bounded number per blob) otherwise.
func NewReporter(w io.Writer) func(Progress) {
	tty := false
	if f, ok := w.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	return newReporter(w, tty, time.Now)
}

type reporter struct {
	mu     sync.Mutex
	w      io.Writer
	tty    bool
	now    func() time.Time
	status string // the last status line written

	// The blob being reported.
	digest    string
	bar       *progressbar.ProgressBar
	start     time.Time
	startedAt int64 // bytes present when it was first seen (a resumed file)
	step      int64 // tenths of the blob logged so far, -1 before the first line
	done      bool
}

func newReporter(w io.Writer, tty bool, now func() time.Time) func(Progress) {
	r := &reporter{w: w, tty: tty, now: now}
	return r.report
}

func (r *reporter) report(p Progress) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p.Digest == "" {
		r.endBlob()
		if p.Status != r.status {
			fmt.Fprintln(r.w, p.Status)
			r.status = p.Status
		}
		return
	}
	if p.Digest != r.digest {
		r.endBlob()
		r.digest, r.start, r.startedAt, r.step, r.done = p.Digest, r.now(), p.Completed, -1, false
		r.status = p.Status
		if r.tty {
			r.bar = progressbar.NewOptions64(p.Total,
				progressbar.OptionSetWriter(r.w),
				progressbar.OptionSetDescription(p.Status),
				progressbar.OptionShowBytes(true),
				progressbar.OptionShowTotalBytes(true),
				progressbar.OptionShowCount(),
				progressbar.OptionUseIECUnits(true),
				progressbar.OptionSetPredictTime(true),
				progressbar.OptionSetWidth(30),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionOnCompletion(func() { fmt.Fprintln(r.w) }),
				progressbar.OptionSetRenderBlankState(true),
			)
		}
	}
	if r.tty {
		r.bar.Set64(p.Completed)
		return
	}
	r.logLine(p)
}

// logLine writes a line when the blob is first seen, at each tenth and at
// the end: at most twelve lines a blob.
func (r *reporter) logLine(p Progress) {
	if r.done {
		return
	}
	var tenth int64
	if p.Total > 0 {
		tenth = p.Completed * 10 / p.Total
	}
	complete := p.Completed >= p.Total
	if tenth <= r.step && !complete {
		return
	}
	r.step = tenth
	elapsed := r.now().Sub(r.start)
	switch {
	case complete && r.startedAt >= p.Total:
		fmt.Fprintf(r.w, "%s: %s, already here\n", p.Status, bytesIEC(p.Total))
	case complete:
		fmt.Fprintf(r.w, "%s: %s done in %s\n", p.Status, bytesIEC(p.Total), elapsed.Round(time.Second))
	default:
		line := fmt.Sprintf("%s: %s of %s (%d%%)", p.Status, bytesIEC(p.Completed), bytesIEC(p.Total), p.Completed*100/p.Total)
		if got := p.Completed - r.startedAt; got > 0 && elapsed > 0 {
			rate := float64(got) / elapsed.Seconds()
			eta := time.Duration(float64(p.Total-p.Completed) / rate * float64(time.Second))
			line += fmt.Sprintf(", %s/s, ETA %s", bytesIEC(int64(rate)), eta.Round(time.Second))
		}
		fmt.Fprintln(r.w, line)
	}
	r.done = complete
}

func (r *reporter) endBlob() {
	if r.bar != nil && !r.bar.IsFinished() {
		r.bar.Exit() // keeps what it shows (a failed blob) and ends the line
	}
	r.bar = nil
	r.digest = ""
}

// bytesIEC prints a byte count as "1.5 GiB".
func bytesIEC(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f, u := float64(n)/unit, 0
	for f >= unit && u < 4 {
		f /= unit
		u++
	}
	return fmt.Sprintf("%.1f %ciB", f, "KMGTP"[u])
}
