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
	free    int
	max     int        // bound on waiters
	waiters *list.List // of chan struct{}, closed when granted
}

func newFIFO(slots, maxWaiters int) *fifo {
	return &fifo{free: slots, max: maxWaiters, waiters: list.New()}
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
	if front := q.waiters.Front(); front != nil {
		q.waiters.Remove(front)
		close(front.Value.(chan struct{}))
		return
	}
	q.free++
}

// waiting is the number of requests queued.
func (q *fifo) waiting() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.waiters.Len()
}
