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

// Growing the queue hands the new slots to the longest waiters; shrinking
// it takes effect as held slots come back.
func TestFIFOResize(t *testing.T) {
	q := newFIFO(1, 100)
	ctx := context.Background()
	if err := q.acquire(ctx); err != nil {
		t.Fatal(err)
	}
	got := make(chan int, 3)
	for i := range 3 {
		go func() {
			if err := q.acquire(ctx); err != nil {
				t.Error(err)
			}
			got <- i
		}()
		for q.waiting() != i+1 {
			time.Sleep(time.Millisecond)
		}
	}
	q.resize(3) // two more slots: waiters 0 and 1 (they report in any order)
	if a, b := <-got, <-got; min(a, b) != 0 || max(a, b) != 1 {
		t.Fatalf("granted %d, %d; want 0 and 1", a, b)
	}
	if q.waiting() != 1 {
		t.Fatalf("%d waiting, want 1", q.waiting())
	}
	// Back to one slot with three held: two releases only pay the debt.
	q.resize(1)
	q.release()
	q.release()
	select {
	case i := <-got:
		t.Fatalf("waiter %d granted while the queue is over its size", i)
	case <-time.After(10 * time.Millisecond):
	}
	q.release()
	if i := <-got; i != 2 {
		t.Fatalf("granted %d, want 2", i)
	}
	q.release()
	if err := q.acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if q.waiting() != 0 {
		t.Fatal("waiters left")
	}
}
