package bench

import "testing"

// TestSchedField reads a sched file's line and gives 0 for a missing or
// bad one.
func TestSchedField(t *testing.T) {
	b := []byte("x (1, #threads: 1)\n-----\nse.exec_start   :   12.5\nse.nr_migrations                             :                    7\nbad : x\n")
	if got := schedField(b, "se.nr_migrations"); got != 7 {
		t.Errorf("migrations %d, want 7", got)
	}
	if got := schedField(b, "nr_switches"); got != 0 {
		t.Errorf("missing field %d, want 0", got)
	}
	if got := schedField(b, "bad"); got != 0 {
		t.Errorf("bad field %d, want 0", got)
	}
}
