package engine

import (
	"context"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/backend/cpu"
	"github.com/edgellm/edgellm/internal/testmodel"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/quant"
)

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
		path := testmodel.Write(t, testmodel.Tiny(tc.arch, tc.typ))
		for _, be := range []string{"cpu", "test-plain", "test-prefiller"} {
			t.Run(tc.arch+"/"+be, func(t *testing.T) {
				m, err := Load(path, Options{Backend: be, Threads: 2})
				if err != nil {
					t.Fatal(err)
				}
				defer m.Close()
				ids := make([]int32, 24)
				for i := range ids {
					ids[i] = int32((37*i + 5) % m.Config().Vocab) // tiny-random's sequence
				}
				calls = 0
				logits, err := m.Logits(context.Background(), ids)
				if err != nil {
					t.Fatal(err)
				}
				if rms := testmodel.RefRMS(t, m.Weights(), ids, logits); rms > tc.tol {
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
	m, err := Load(testmodel.Write(t, testmodel.Tiny("llama", quant.F32)), Options{Backend: "cpu", Threads: 1, ContextLen: 16})
	if err != nil {
		t.Fatal(err)
	}
	bg := context.Background()
	for _, tc := range []struct {
		ids  []int32
		want string
	}{
		{nil, "empty"},
		{[]int32{1, testmodel.Vocab}, "vocabulary"},
		{[]int32{-1}, "vocabulary"},
		{make([]int32, 17), "context"},
	} {
		if _, err := m.Logits(bg, tc.ids); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ids %v: error %v, want one about %q", tc.ids, err, tc.want)
		}
	}
	// More values than one call returns: an error before any allocation.
	p := testmodel.Tiny("llama", quant.F32)
	p.Vocab, p.EmbedType = 32768, quant.Q8_0
	big, err := Load(testmodel.Write(t, p), Options{Backend: "cpu", Threads: 1, ContextLen: maxLogits/p.Vocab + 1})
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	if _, err := big.Logits(bg, make([]int32, maxLogits/p.Vocab+1)); err == nil || !strings.Contains(err.Error(), "fewer positions") {
		t.Errorf("%d positions of %d: error %v", maxLogits/p.Vocab+1, p.Vocab, err)
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
