package server

import (
	"container/list"
	"context"
	"errors"
	"sync"
)

// errQueueFull is returned when too many requests already wait.
var errQueueFull = errors.New("too many requests waiting for this model")

// fifo is a counting semaphore that grants slots in arrival order, so a
// stream of new requests cannot starve one that has waited longer.
type fifo struct {
	mu      sync.Mutex
	slots   int
	free    int        // may be negative for a while after resize shrinks it
	max     int        // bound on waiters
	waiters *list.List // of chan struct{}, closed when granted
}

func newFIFO(slots, maxWaiters int) *fifo {
	return &fifo{slots: slots, free: slots, max: maxWaiters, waiters: list.New()}
}

// resize sets the number of slots (at least 1), handing new ones to the
// longest waiters; slots taken beyond a smaller size come back as they
// are released.
func (q *fifo) resize(slots int) {
	slots = max(slots, 1)
	q.mu.Lock()
	defer q.mu.Unlock()
	q.free += slots - q.slots
	q.slots = slots
	q.grant()
}

// acquire waits for a slot or for ctx; onWait is called once if it must wait.
func (q *fifo) acquire(ctx context.Context) error {
	q.mu.Lock()
	if q.free > 0 && q.waiters.Len() == 0 {
		q.free--
		q.mu.Unlock()
		return nil
	}
	if q.waiters.Len() >= q.max {
		q.mu.Unlock()
		return errQueueFull
	}
	ch := make(chan struct{})
	el := q.waiters.PushBack(ch)
	q.mu.Unlock()

	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		q.mu.Lock()
		select {
		case <-ch:
			// Granted while giving up: pass the slot on.
			q.mu.Unlock()
			q.release()
		default:
			q.waiters.Remove(el)
			q.mu.Unlock()
		}
		return ctx.Err()
	}
}

// release frees a slot, handing it straight to the longest waiter.
func (q *fifo) release() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.free++
	q.grant()
}

// grant gives free slots to waiters in arrival order; q.mu is held.
func (q *fifo) grant() {
	for q.free > 0 {
		front := q.waiters.Front()
		if front == nil {
			return
		}
		q.waiters.Remove(front)
		close(front.Value.(chan struct{}))
		q.free--
	}
}

// waiting is the number of requests queued.
func (q *fifo) waiting() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.waiters.Len()
}
