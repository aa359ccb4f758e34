package cpu

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/edgellm/edgellm/internal/testfiles"
	"github.com/edgellm/edgellm/model"
)

// The kernels path (int8 activations) against the float reference: close,
// not equal; prefill and decode agree with each other as tightly as the
// plain path, since both quantize each token's activations the same way.
func TestKernelsMatchReference(t *testing.T) {
	for i, tm := range testModels {
		t.Run(tm.name, func(t *testing.T) {
			w := tm.build(t, uint64(i))
			r := rand.New(rand.NewPCG(uint64(i), 1))
			prompt := promptFor(r, 40, tm.vocab)
			ref := model.NewReference(w, 64)
			var want []float32
			for p, tok := range prompt {
				want = slices.Clone(ref.Forward(tok, p))
			}
			m := loadOpts(t, w, Options{Threads: 2})
			dec := make([]float32, tm.vocab)
			s := newSess(t, m, 64)
			for _, tok := range prompt {
				if err := s.Decode(tok, dec); err != nil {
					t.Fatal(err)
				}
			}
			pre := make([]float32, tm.vocab)
			s2 := newSess(t, m, 64)
			if err := s2.Prefill(prompt, pre); err != nil {
				t.Fatal(err)
			}
			e := maxErr(dec, want)
			t.Logf("kernels vs reference: %.3g; prefill vs decode: %.3g", e, maxErr(pre, dec))
			if e > kernelTol {
				t.Fatalf("kernels vs reference: error %.3g", e)
			}
			if e := maxErr(pre, dec); e > tol {
				t.Fatalf("prefill vs decode on kernels: error %.3g", e)
			}
		})
	}
}

const kernelTol = 0.06 // measured worst 0.041 (I2_S: one scale per tensor)

// The kernels path on the tiny-random files against llama.cpp, which also
// rounds activations to 8 bits (per block, where the kernels round per
// token), and its decode allocates nothing.
func TestKernelsTinyRandomFiles(t *testing.T) {
	prompt := make([]int32, 24)
	for i := range prompt {
		prompt[i] = int32((37*i + 5) % 1024)
	}
	for _, arch := range []string{"llama", "bitnet"} {
		for _, typ := range []string{"f16", "q8_0", "q4_0", "q2_0", "tq2_0", "tq1_0"} {
			name := fmt.Sprintf("tiny-%s-%s", arch, typ)
			t.Run(name, func(t *testing.T) {
				w := loadGGUF(t, testfiles.Path(t, "models/tiny-random/"+name+".gguf"))
				s := newSess(t, loadOpts(t, w, Options{Threads: 2}), 64)
				logits := make([]float32, w.Vocab)
				if err := s.Prefill(prompt, logits); err != nil {
					t.Fatal(err)
				}
				lc := readLogitsLine(t, testfiles.Path(t, "models/tiny-random/"+name+".logits.txt"), len(prompt)-1)
				e := maxErr(logits, lc)
				t.Logf("kernels vs llama.cpp: relative error %.3g", e)
				if e > kernelTol {
					t.Fatalf("kernels vs llama.cpp: error %.3g", e)
				}
				if a := testing.AllocsPerRun(3, func() { s.Rewind(len(prompt)); s.Decode(7, logits) }); a != 0 {
					t.Errorf("%v allocations per decoded token", a)
				}
			})
		}
	}
}
