package cpu

import (
	"sync/atomic"
	"testing"

	"github.com/edgellm/edgellm/backend/cpu/kernels"
)

// countMat is a matmul that counts the calls each of its rows gets and
// records the shares' first rows.
type countMat struct {
	r, c   int
	hits   []atomic.Int32
	badR0  atomic.Int32 // shares not starting on a 4
	shares atomic.Int32
}

func (m *countMat) rows() int           { return m.r }
func (m *countMat) cols() int           { return m.c }
func (m *countMat) acts() bool          { return false }
func (m *countMat) memory(func([]byte)) {}
func (m *countMat) reset()              { m.hits = make([]atomic.Int32, m.r) }

func (m *countMat) mulRows(_ []float32, _ int, _ []float32, _, r0, r1 int, _ []float32, _ *kernels.Acts) {
	m.shares.Add(1)
	if r0%4 != 0 {
		m.badR0.Add(1)
	}
	for r := r0; r < r1; r++ {
		m.hits[r].Add(1)
	}
}

// TestMatTaskClaims: with 1 to 4 workers, the workers' claimed shares
// cover every row of up to three products exactly once, each share
// starting on a multiple of 4 in its product (rows counts that are not
// multiples of 4 included), and the task runs again the same after its
// claims are spent.
func TestMatTaskClaims(t *testing.T) {
	for threads := 1; threads <= 4; threads++ {
		p := newPool(threads)
		for _, shape := range [][]int{{1}, {7, 5, 9}, {4096, 1024, 1024}, {130, 2}} {
			var ms []*countMat
			task := &matTask{scratch: make([][]float32, threads)}
			for i, rows := range shape {
				m := &countMat{r: rows, c: 256}
				ms = append(ms, m)
				task.m[i], task.out[i] = m, nil
			}
			task.n = len(shape)
			for round := 0; round < 2; round++ {
				for _, m := range ms {
					m.reset()
				}
				p.run(task)
				for i, m := range ms {
					for r := range m.hits {
						if h := m.hits[r].Load(); h != 1 {
							t.Fatalf("threads %d shape %v round %d: product %d row %d computed %d times", threads, shape, round, i, r, h)
						}
					}
					if b := m.badR0.Load(); b != 0 {
						t.Fatalf("threads %d shape %v: product %d: %d shares not on a 4", threads, shape, i, b)
					}
				}
			}
			if threads > 1 && shape[0] == 4096 && ms[0].shares.Load() < 2 {
				t.Errorf("threads %d: 4096 rows in %d shares", threads, ms[0].shares.Load())
			}
		}
		p.close()
	}
}
