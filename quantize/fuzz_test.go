package quantize

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgellm/edgellm/internal/testmodel"
	"github.com/edgellm/edgellm/quant"
)

// Any input file gives an error or a file that loads, never a panic, a
// hang or a huge allocation.
func FuzzFile(f *testing.F) {
	for _, typ := range []quant.Type{quant.F16, quant.I2_S} {
		p := tiny("bitnet", 128, 256, typ)
		p.Vocab = 64
		b, err := os.ReadFile(testmodel.Write(f, p))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint8(0))
	}
	targets := []quant.Type{quant.TQ2_0, quant.I2_S, quant.Q8_0, quant.Q4_0}
	f.Fuzz(func(t *testing.T, data []byte, target uint8) {
		dir := t.TempDir()
		in := filepath.Join(dir, "in.gguf")
		if err := os.WriteFile(in, data, 0o644); err != nil {
			t.Fatal(err)
		}
		opt := Options{Type: targets[int(target)%len(targets)]}
		if target >= 128 {
			opt.I2SLayout = "arm"
		}
		_, _ = File(context.Background(), in, filepath.Join(dir, "out.gguf"), opt)
	})
}
