package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/edgellm/edgellm/backend/cpu/kernels"
	"github.com/edgellm/edgellm/quant"
)

// TestMatTaskSteals: a worker that finds its own chunks done takes the
// others' from their ends, and every row comes out as one worker alone
// computes it. The workers run one after another here, so the schedule is
// fixed: with 3 workers, worker 2 runs first (its own chunks, then all of
// worker 0's and worker 1's), then worker 1 and worker 0 find nothing
// left; and the other way round. Three products of different shapes
// (Q2_0 ternary, Q8_0, a short one) with one and three tokens.
func TestMatTaskSteals(t *testing.T) {
	r := rand.New(rand.NewPCG(81, 82))
	const cols = 576
	var ms [3]matmul
	for i, sh := range []struct {
		typ  quant.Type
		rows int
	}{{quant.Q2_0, 1541}, {quant.Q8_0, 777}, {quant.Q2_0, 37}} {
		w := randTensor(t, r, "w", sh.typ, sh.rows, cols, 1)
		m, err := newMatmul(&w, sh.rows, cols, true, nil)
		if err != nil {
			t.Fatal(err)
		}
		ms[i] = m
	}
	for _, nb := range []int{1, 3} {
		x := randTensorVec(r, nb*cols, 1)
		a, err := kernels.NewActs(cols, nb)
		if err != nil {
			t.Fatal(err)
		}
		a.Set(x)
		product := func(threads int, order []int) [3][]float32 {
			tk := newMatTask(threads, cols)
			tk.n, tk.m, tk.x, tk.nb, tk.a = 3, ms, x, nb, a
			for i, m := range ms {
				tk.out[i] = make([]float32, nb*m.rows())
				for j := range tk.out[i] {
					tk.out[i][j] = float32(math.NaN())
				}
			}
			tk.deal(threads)
			for _, w := range order {
				tk.run(w, threads)
			}
			for w := range threads {
				if j, ok := tk.shares[w].take(false); ok {
					t.Fatalf("tokens %d order %v: worker %d's chunk %d left", nb, order, w, j)
				}
			}
			return tk.out
		}
		want := product(1, []int{0})
		for _, order := range [][]int{{2, 1, 0}, {0, 1, 2}, {1, 0, 2}} {
			got := product(3, order)
			for i := range got {
				for j := range got[i] {
					if math.Float32bits(got[i][j]) != math.Float32bits(want[i][j]) {
						t.Fatalf("tokens %d order %v: product %d out[%d] = %v, one worker %v", nb, order, i, j, got[i][j], want[i][j])
					}
				}
			}
		}
	}
}
