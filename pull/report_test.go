package pull

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestReporterPlain(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(0, 0)
	report := newReporter(&buf, false, func() time.Time { return now })
	report(Progress{Status: "pulling manifest"})
	report(Progress{Status: "pulling manifest"})
	const total = 10 << 20
	for done := int64(0); done <= total; done += 4096 {
		now = now.Add(time.Millisecond)
		report(Progress{Status: "pulling 0123456789ab", Digest: "sha256:0123456789ab", Total: total, Completed: done})
	}
	report(Progress{Status: "pulling 0123456789ab", Digest: "sha256:0123456789ab", Total: total, Completed: total})
	// A blob already present is one line.
	report(Progress{Status: "pulling ba9876543210", Digest: "sha256:ba9876543210", Total: 5, Completed: 5})
	report(Progress{Status: "verifying sha256 digest"})
	report(Progress{Status: "success"})

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) > 16 {
		t.Fatalf("%d lines for one blob:\n%s", len(lines), buf.String())
	}
	out := buf.String()
	for _, want := range []string{
		"pulling manifest\npulling 0123456789ab: 0 B of 10.0 MiB (0%)\n",
		"pulling 0123456789ab: 5.0 MiB of 10.0 MiB (50%), 3.9 MiB/s, ETA 1s\n",
		"pulling 0123456789ab: 10.0 MiB done in 3s\n",
		"pulling ba9876543210: 5 B, already here\nverifying sha256 digest\nsuccess\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "pulling manifest") != 1 {
		t.Errorf("a repeated status was written twice:\n%s", out)
	}
}

func TestReporterTerminal(t *testing.T) {
	var buf bytes.Buffer
	report := newReporter(&buf, true, time.Now)
	report(Progress{Status: "pulling manifest"})
	for done := int64(0); done <= 1<<20; done += 256 << 10 {
		report(Progress{Status: "pulling 0123456789ab", Digest: "sha256:0123456789ab", Total: 1 << 20, Completed: done})
	}
	report(Progress{Status: "success"})
	out := buf.String()
	for _, want := range []string{"pulling manifest\n", "pulling 0123456789ab", "100%", "1.0 MiB", "success\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q: %q", want, out)
		}
	}
}

func TestBytesIEC(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536 << 20: "1.5 GiB", 1 << 62: "4096.0 PiB"} {
		if got := bytesIEC(n); got != want {
			t.Errorf("bytesIEC(%d) = %q, want %q", n, got, want)
		}
	}
}
