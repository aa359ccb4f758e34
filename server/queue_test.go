package server

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// Waiters are served in arrival order; one that gives up leaves the queue
// without taking or losing a slot.
func TestFIFOOrder(t *testing.T) {
	q := newFIFO(1, 100)
	if err := q.acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	cancelled, cancel := context.WithCancel(context.Background())
	for i := range 6 {
		ctx := context.Background()
		if i == 2 {
			ctx = cancelled
		}
		wg.Go(func() {
			if err := q.acquire(ctx); err != nil {
				if i != 2 || !errors.Is(err, context.Canceled) {
					t.Errorf("waiter %d: %v", i, err)
				}
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			q.release()
		})
		// Wait until this waiter is queued, so arrival order is known.
		for q.waiting() != i+1 {
			time.Sleep(time.Millisecond)
		}
	}
	cancel()
	for q.waiting() != 5 {
		time.Sleep(time.Millisecond)
	}
	q.release()
	wg.Wait()
	want := []int{0, 1, 3, 4, 5}
	if len(order) != len(want) {
		t.Fatalf("order %v, want %v", order, want)
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("order %v, want %v", order, want)
		}
	}
	// All slots back: one acquire succeeds at once, a second would wait.
	if err := q.acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, c2 := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer c2()
	if err := q.acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("second acquire on one slot: %v", err)
	}
}

func TestFIFOBound(t *testing.T) {
	q := newFIFO(1, 1)
	q.acquire(context.Background())
	go q.acquire(context.Background())
	for q.waiting() != 1 {
		time.Sleep(time.Millisecond)
	}
	if err := q.acquire(context.Background()); !errors.Is(err, errQueueFull) {
		t.Errorf("past the bound: %v", err)
	}
	q.release() // to the waiter
}
