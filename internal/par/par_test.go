package par

import (
	"errors"
	"sync"
	"testing"
)

func TestRowsCoversOnce(t *testing.T) {
	for _, n := range []int{0, 1, 63, 64, 65, 1000, 4097} {
		seen := make([]int, n)
		var mu sync.Mutex
		if err := Rows(n, func(r0, r1 int) error {
			mu.Lock()
			defer mu.Unlock()
			for r := r0; r < r1; r++ {
				seen[r]++
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		for r, c := range seen {
			if c != 1 {
				t.Fatalf("n=%d: row %d run %d times", n, r, c)
			}
		}
	}
}

func TestRowsFirstError(t *testing.T) {
	errA, errB := errors.New("a"), errors.New("b")
	err := Rows(1<<16, func(r0, r1 int) error {
		switch {
		case r0 == 0:
			return errA
		case r1 == 1<<16:
			return errB
		}
		return nil
	})
	if err != errA {
		t.Fatalf("got %v, want the first range's error", err)
	}
}
