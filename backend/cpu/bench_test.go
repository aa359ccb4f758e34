package cpu

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/edgellm/edgellm/backend/cpu/kernels"
	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/quant"
)

// BenchmarkDecodeStories times one decode step of stories260K.
func BenchmarkDecodeStories(b *testing.B) {
	for _, threads := range []int{1, 2} {
		b.Run(map[int]string{1: "t1", 2: "t2"}[threads], func(b *testing.B) {
			w := loadGGUFB(b, filepath.Join("..", "..", "..", "shared", "models", "stories260K", "stories260K-f32.gguf"))
			m, err := Load(w, Options{Threads: threads})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			s, _ := m.NewSession(512)
			logits := make([]float32, w.Vocab)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if s.Pos() == 512 {
					s.Rewind(0)
				}
				if err := s.Decode(1, logits); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func loadGGUFB(b *testing.B, path string) *model.Weights {
	f, err := gguf.Open(path)
	if err != nil {
		b.Skip(err)
	}
	b.Cleanup(func() { f.Close() })
	w, err := model.FromGGUF(f)
	if err != nil {
		b.Fatal(err)
	}
	return w
}

// BenchmarkMatVec times one SmolLM-135M FFN-up-shaped product (1536x576)
// per weight type on the pool, reporting weight bytes per second.
func BenchmarkMatVec(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, typ := range []quant.Type{quant.F32, quant.F16, quant.Q8_0, quant.Q4_0, quant.Q2_0} {
		for _, threads := range []int{1, 2} {
			for _, kern := range []bool{false, true} {
				b.Run(fmt.Sprintf("%s/t%d/kernels=%v", typ, threads, kern), func(b *testing.B) {
					w := randTensor(b, r, "w", typ, 1536, 576, 1)
					mm, err := newMatmul(&w, 1536, 576, kern)
					if err != nil {
						b.Fatal(err)
					}
					p := newPool(threads)
					defer p.close()
					x := make([]float32, 576)
					out := make([]float32, 1536)
					task := &matTask{n: 1, m: [3]matmul{mm}, out: [3][]float32{out}, x: x, nb: 1, scratch: make([][]float32, threads)}
					for i := range task.scratch {
						task.scratch[i] = make([]float32, 576)
					}
					b.SetBytes(int64(len(w.Data)))
					b.ResetTimer()
					if mm.acts() {
						a, err := kernels.NewActs(576, 1)
						if err != nil {
							b.Fatal(err)
						}
						a.Set(x)
						task.a = a
					}
					for range b.N {
						p.run(task)
					}
				})
			}
		}
	}
}
