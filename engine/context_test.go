package engine

import (
	"testing"

	"github.com/edgellm/edgellm/internal/testmodel"
	"github.com/edgellm/edgellm/quant"
)

// TestDefaultContext: with no context asked for, a session gets the file's
// trained length up to DefaultContextCap; asked for, exactly that.
func TestDefaultContext(t *testing.T) {
	for _, tc := range []struct {
		trained, asked, want int
	}{
		{64, 0, 64},
		{DefaultContextCap * 32, 0, DefaultContextCap},
		{DefaultContextCap * 32, DefaultContextCap + 100, DefaultContextCap + 100},
		{64, 200, 200},
	} {
		p := testmodel.Tiny("llama", quant.F32)
		p.Context = tc.trained
		m, err := Load(testmodel.Write(t, p), Options{Backend: "cpu", Threads: 1, ContextLen: tc.asked})
		if err != nil {
			t.Fatal(err)
		}
		if got := m.ContextLen(); got != tc.want {
			t.Errorf("trained %d, asked %d: context %d, want %d", tc.trained, tc.asked, got, tc.want)
		}
		m.Close()
	}
}
