package engine

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/backend/cpu"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/quant"
	"github.com/edgellm/edgellm/synth"
)

// tinyModel writes a small synthetic model (vocab 256, 2 layers) in
// milliseconds, so these tests need no file from outside the repository.
func tinyModel(t *testing.T, arch string, typ quant.Type) string {
	t.Helper()
	p := synth.Preset{Name: "tiny-" + arch, Arch: arch, Dim: 64, FFN: 128, Layers: 2, Heads: 4, KVHeads: 2,
		Vocab: 256, Context: 64, RopeBase: 10000, SubNorms: arch == "bitnet", Type: typ, EmbedType: quant.F32}
	path := filepath.Join(t.TempDir(), p.Name+".gguf")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := synth.Write(f, p, synth.Options{Seed: 3}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// countingIDs is (37*i + 5) mod vocab, llama.cpp's tiny-random sequence.
func countingIDs(n, vocab int) []int32 {
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32((37*i + 5) % vocab)
	}
	return ids
}

// refRMS is the largest, over positions, relative RMS difference between
// logits (rows of Vocab) and the reference forward pass of ids.
func refRMS(t *testing.T, w *model.Weights, ids []int32, logits []float32) float64 {
	t.Helper()
	v := w.Vocab
	if len(logits) != len(ids)*v {
		t.Fatalf("%d logits for %d positions of %d", len(logits), len(ids), v)
	}
	ref := model.NewReference(w, len(ids))
	worst := 0.0
	for p, id := range ids {
		want := ref.Forward(id, p)
		var d2, r2 float64
		for i, x := range want {
			d := float64(logits[p*v+i]) - float64(x)
			d2 += d * d
			r2 += float64(x) * float64(x)
		}
		worst = max(worst, math.Sqrt(d2/r2))
	}
	return worst
}

// plainModel hides every optional interface of the cpu backend's sessions,
// so Logits takes its one-position-at-a-time path.
type plainModel struct{ backend.Model }

type plainSession struct{ backend.Session }

func (p plainModel) NewSession(ctx int) (backend.Session, error) {
	s, err := p.Model.NewSession(ctx)
	if err != nil {
		return nil, err
	}
	return plainSession{s}, nil
}

// prefillerModel gives sessions a LogitsPrefiller that counts its calls; it
// runs each token as a one-token Prefill, a path of its own.
type prefillerModel struct {
	backend.Model
	calls *int
}

type prefillerSession struct {
	backend.Session
	vocab int
	calls *int
}

func (p prefillerModel) NewSession(ctx int) (backend.Session, error) {
	s, err := p.Model.NewSession(ctx)
	if err != nil {
		return nil, err
	}
	return &prefillerSession{Session: plainSession{s}, vocab: p.Config().Vocab, calls: p.calls}, nil
}

func (s *prefillerSession) PrefillLogits(tokens []int32, logits []float32) error {
	*s.calls++
	for i := range tokens {
		if err := s.Prefill(tokens[i:i+1], logits[i*s.vocab:(i+1)*s.vocab]); err != nil {
			return err
		}
	}
	return nil
}

// Logits matches the reference forward pass at every position, through the
// batched and the one-at-a-time paths, on both architectures.
func TestLogits(t *testing.T) {
	calls := 0
	RegisterBackend("test-plain", func(w *model.Weights, o Options) (backend.Model, error) {
		m, err := cpu.Load(w, cpu.Options{Threads: o.Threads})
		return plainModel{m}, err
	})
	RegisterBackend("test-prefiller", func(w *model.Weights, o Options) (backend.Model, error) {
		m, err := cpu.Load(w, cpu.Options{Threads: o.Threads})
		return prefillerModel{Model: m, calls: &calls}, err
	})
	// Relative RMS over all positions and the whole vocabulary. F32 models
	// differ from the reference only in the order of sums. F16 models run on
	// the CPU's kernel path, which keeps the KV cache in F16 as llama.cpp
	// does: 2e-3 is the bound F16 files are held to against llama.cpp. The
	// logits of a wrong position are about 1.5 away.
	for _, tc := range []struct {
		arch string
		typ  quant.Type
		tol  float64
	}{{"llama", quant.F32, 1e-5}, {"bitnet", quant.F16, 2e-3}} {
		path := tinyModel(t, tc.arch, tc.typ)
		for _, be := range []string{"cpu", "test-plain", "test-prefiller"} {
			t.Run(tc.arch+"/"+be, func(t *testing.T) {
				m, err := Load(path, Options{Backend: be, Threads: 2})
				if err != nil {
					t.Fatal(err)
				}
				defer m.Close()
				ids := countingIDs(24, m.Config().Vocab)
				calls = 0
				logits, err := m.Logits(context.Background(), ids)
				if err != nil {
					t.Fatal(err)
				}
				if rms := refRMS(t, m.Weights(), ids, logits); rms > tc.tol {
					t.Fatalf("relative RMS %.3g from the reference, want <= %g", rms, tc.tol)
				}
				if be == "test-prefiller" && calls != 1 {
					t.Fatalf("PrefillLogits called %d times, want once", calls)
				}
			})
		}
	}
}

// Bad ids are errors; Logits leaves Generate's cached prefix alone.
func TestLogitsErrors(t *testing.T) {
	m, err := Load(tinyModel(t, "llama", quant.F32), Options{Backend: "cpu", Threads: 1, ContextLen: 16})
	if err != nil {
		t.Fatal(err)
	}
	bg := context.Background()
	for _, tc := range []struct {
		ids  []int32
		want string
	}{
		{nil, "empty"},
		{[]int32{1, 256}, "vocabulary"},
		{[]int32{-1}, "vocabulary"},
		{countingIDs(17, 256), "context"},
	} {
		if _, err := m.Logits(bg, tc.ids); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ids %v: error %v, want one about %q", tc.ids, err, tc.want)
		}
	}
	cancelled, cancel := context.WithCancel(bg)
	cancel()
	if _, err := m.Logits(cancelled, []int32{1, 2}); err == nil {
		t.Error("a cancelled context ran")
	}

	prompt := []int32{5, 6, 7, 8}
	collect(t, m, Request{Tokens: prompt, MaxTokens: 2, IgnoreEOS: true})
	if _, err := m.Logits(bg, []int32{9, 10, 11}); err != nil {
		t.Fatal(err)
	}
	if _, _, st := collect(t, m, Request{Tokens: prompt, MaxTokens: 2, IgnoreEOS: true}); st.CachedTokens != len(prompt)-1 {
		t.Errorf("after Logits, %d prompt tokens cached, want %d", st.CachedTokens, len(prompt)-1)
	}

	m.Close()
	if _, err := m.Logits(bg, []int32{1}); err == nil {
		t.Error("a closed model ran")
	}
}
