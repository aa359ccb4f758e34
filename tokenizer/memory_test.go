package tokenizer

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// A long text costs memory in proportion to its length with a small
// constant: the server tokenizes prompts of up to num_ctx x the longest
// token's bytes (megabytes). Measured as bytes allocated per input byte,
// which bounds the peak; before symbols were packed, the pair map dropped
// and the pre-tokenizer's words streamed, SentencePiece took ~310 and
// byte-level BPE ~210.
func TestEncodeMemoryLinear(t *testing.T) {
	if testing.Short() {
		t.Skip("tokenizes megabytes")
	}
	text := func(n int) string {
		var sb strings.Builder
		for i := 0; sb.Len() < n; i++ {
			fmt.Fprintf(&sb, "Once upon a time %d, a cat named Tom — «ça va» — saw %x birds.\n", i, i*7919)
		}
		return sb.String()
	}
	const maxPerByte = 150
	for _, v := range []string{"llama-spm", "gpt-2"} {
		tok := loadVocab(t, v)
		var per [2]float64
		for i, n := range []int{128 << 10, 512 << 10} {
			s := text(n)
			var a, b runtime.MemStats
			runtime.ReadMemStats(&a)
			if _, err := tok.Encode(s, true, false); err != nil {
				t.Fatal(err)
			}
			runtime.ReadMemStats(&b)
			per[i] = float64(b.TotalAlloc-a.TotalAlloc) / float64(len(s))
			t.Logf("%s: %d bytes: %.1f bytes allocated per input byte", v, len(s), per[i])
			if per[i] > maxPerByte {
				t.Errorf("%s: %d bytes of text allocate %.0f bytes a byte, want <= %d", v, len(s), per[i], maxPerByte)
			}
		}
		if per[1] > 1.3*per[0] {
			t.Errorf("%s: not linear: %.1f bytes a byte at 128 KB, %.1f at 512 KB", v, per[0], per[1])
		}
	}
}
