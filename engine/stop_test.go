package engine

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// holdStops on random splits of a text releases exactly the text before the
// first stop string, whatever the token boundaries.
func TestHoldStops(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := "ab c"
	for range 2000 {
		text := randString(r, alphabet, r.IntN(30))
		stops := []string{randString(r, alphabet, 1+r.IntN(4))}
		if r.IntN(2) == 0 {
			stops = append(stops, randString(r, alphabet, 1+r.IntN(4)))
		}
		want, wantStop := text, false
		first := len(text)
		for _, s := range stops {
			if i := strings.Index(text, s); i >= 0 && i < first {
				first = i
			}
		}
		if first < len(text) {
			want, wantStop = text[:first], true
		}

		var hold strings.Builder
		var got strings.Builder
		stopped := false
		rest := text
		for len(rest) > 0 && !stopped {
			n := 1 + r.IntN(min(4, len(rest)))
			out, stop := holdStops(&hold, rest[:n], stops)
			got.WriteString(out)
			rest = rest[n:]
			stopped = stop
		}
		if !stopped {
			// End of generation: what is held is flushed up to a stop string.
			held := hold.String()
			if i := firstStop(held, stops); i >= 0 {
				held, stopped = held[:i], true
			}
			got.WriteString(held)
		}
		if got.String() != want || stopped != wantStop {
			t.Fatalf("text %q stops %q: released %q (stop %v), want %q (stop %v)", text, stops, got.String(), stopped, want, wantStop)
		}
	}
}

func randString(r *rand.Rand, alphabet string, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return string(b)
}
