package cuda

import "testing"

// A result passes on its one-token checks alone where the many-row step
// was off, needs every many-row check where it was on, and judges the
// prompt's prefill at the many-row bound only where that step ran it.
func TestSelfTestPasses(t *testing.T) {
	base := SelfTestResult{Tol: 1e-4, MaxRelErr: 1e-6, GreedyWanted: 8, GreedyMatched: 8,
		PrefillRelErr: 1e-7, SampleTV: 0.02}
	if !base.passes(false) {
		t.Error("one-token checks passed, step off: fails")
	}
	if base.passes(true) {
		t.Error("step on without its checks: passes")
	}
	rows := base
	for _, n := range selfPrefillLens {
		rows.Prefills = append(rows.Prefills, PrefillCheck{Tokens: n, RelErr: 1e-3, Against: "reference"})
	}
	for _, n := range selfBatchSizes {
		rows.Batches = append(rows.Batches, BatchCheck{Sessions: n, MaxRelErr: 1e-3, Greedy: 4 * n, GreedyWanted: 4 * n})
	}
	if !rows.passes(true) {
		t.Error("every many-row check within its bound: fails")
	}
	over := rows
	over.Batches = append([]BatchCheck(nil), rows.Batches...)
	over.Batches[2].MaxRelErr = 2 * RowsTolerance(rows.Tol)
	if over.passes(true) {
		t.Error("a batch past the many-row bound: passes")
	}
	f16Prompt := rows
	f16Prompt.PrefillRelErr = 1e-3 // past Tol, within RowsTolerance(Tol)
	if !f16Prompt.passes(true) || f16Prompt.passes(false) {
		t.Errorf("prompt prefill at 1e-3: passes %v with the step, %v without; want true, false",
			f16Prompt.passes(true), f16Prompt.passes(false))
	}
	if lossy := RowsTolerance(0.15); lossy != 0.15 {
		t.Errorf("RowsTolerance(0.15) = %g: a lossy bound must not change", lossy)
	}
}

func TestRowsMode(t *testing.T) {
	for _, c := range []struct {
		env  string
		mode RowsMode
	}{{"", RowsAuto}, {"1", RowsOn}, {"0", RowsOff}, {"yes", RowsAuto}} {
		t.Setenv(RowsEnv, c.env)
		if got := RowsFromEnv(); got != c.mode {
			t.Errorf("%s=%q: %v, want %v", RowsEnv, c.env, got, c.mode)
		}
	}
	for _, c := range []struct {
		mode RowsMode
		wk   kind
		on   bool
	}{
		{RowsAuto, kindTernary, true}, {RowsAuto, kindQ8, false}, {RowsAuto, kindF16, false}, {RowsAuto, kindF32, false},
		{RowsOn, kindF32, true}, {RowsOn, kindTernary, true}, {RowsOff, kindTernary, false},
	} {
		if got := c.mode.on(c.wk); got != c.on {
			t.Errorf("mode %v, layers %v: on %v, want %v", c.mode, c.wk, got, c.on)
		}
	}
}
