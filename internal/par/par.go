// Package par splits row-wise work, such as repacking a model's weights at
// load time, over the CPUs. It knows nothing of models or formats.
package par

import (
	"runtime"
	"sync"
)

// minRows is the fewest rows worth a goroutine of their own.
const minRows = 64

// Rows runs fn on contiguous ranges [r0, r1) that cover [0, n), one per
// CPU (each of at least minRows rows, so small jobs stay on one goroutine),
// waits for all, and returns the first error by range order.
func Rows(n int, fn func(r0, r1 int) error) error {
	k := min(runtime.GOMAXPROCS(0), max(n/minRows, 1))
	errs := make([]error, k)
	var wg sync.WaitGroup
	for i := range k {
		wg.Go(func() { errs[i] = fn(n*i/k, n*(i+1)/k) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
