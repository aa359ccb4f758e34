package cpu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/internal/testfiles"
	"github.com/edgellm/edgellm/internal/testmodel"
)

// A model file truncated while loaded (its F32 weights are read from the
// mapping in place) makes the next step fail with an error, on the caller
// and on the pool's workers alike, instead of killing the process with
// SIGBUS.
func TestTruncatedFileIsAnError(t *testing.T) {
	src, err := os.ReadFile(testfiles.Path(t, "models/stories260K/stories260K-f32.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, threads := range []int{1, 2} {
		path := filepath.Join(t.TempDir(), "m.gguf")
		if err := os.WriteFile(path, src, 0o644); err != nil {
			t.Fatal(err)
		}
		w := testmodel.Weights(t, path)
		bm, err := Load(w, Options{Threads: threads})
		if err != nil {
			t.Fatal(err)
		}
		s, err := bm.NewSession(16)
		if err != nil {
			t.Fatal(err)
		}
		logits := make([]float32, w.Config.Vocab)
		if err := s.Decode(1, logits); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, 4096); err != nil {
			t.Fatal(err)
		}
		err = s.Decode(2, logits)
		if err == nil || !strings.Contains(err.Error(), "memory fault") {
			t.Errorf("threads %d: decode after truncation: %v, want a memory fault error", threads, err)
		}
		s.Close()
		bm.Close()
	}
}
