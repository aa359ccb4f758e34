package cpu

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// task is one parallel operation: run is called once per worker with the
// worker's index w in [0, n); each worker does its share of the work.
type task interface {
	run(w, n int)
}

// spinFor is how long an idle worker keeps polling for the next operation
// before it parks. A token is ~200 operations separated by microseconds of
// serial work, so workers never park inside a token; between tokens they
// stay hot while the caller samples, and park only when generation stops.
const spinFor = 2 * time.Millisecond

// pool is a fixed set of worker goroutines started once. The caller of run
// is worker 0, so n threads means n-1 goroutines. Dispatch is an atomic
// generation counter: no channel send, goroutine start or allocation per
// operation.
type pool struct {
	n int

	mu       sync.Mutex // guards parking; held only around sleep and wake-up
	cond     *sync.Cond
	sleepers atomic.Int32

	gen     atomic.Uint64 // bumped once per operation
	pending atomic.Int32  // workers (other than the caller) still running it
	cur     task
	stop    atomic.Bool
	done    sync.WaitGroup
}

func newPool(n int) *pool {
	p := &pool{n: max(n, 1)}
	p.cond = sync.NewCond(&p.mu)
	for w := 1; w < p.n; w++ {
		p.done.Add(1)
		go p.worker(w)
	}
	return p
}

// run executes t on every worker and returns when all are done. Only one
// goroutine may call run at a time (the model's lock ensures it).
func (p *pool) run(t task) {
	if p.n == 1 {
		t.run(0, 1)
		return
	}
	p.cur = t
	p.pending.Store(int32(p.n - 1))
	p.gen.Add(1) // publishes cur and pending to the workers
	if p.sleepers.Load() > 0 {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	}
	t.run(0, p.n)
	for i := 0; p.pending.Load() != 0; i++ {
		if i&63 == 63 {
			// Lets a worker that shares our core finish its share.
			runtime.Gosched()
		}
	}
	p.cur = nil
}

func (p *pool) worker(w int) {
	defer p.done.Done()
	// Generation 0 is the pool's start: a worker scheduled late must still
	// see the first operation, so it must not read the counter here.
	var seen uint64
	for {
		g := p.wait(seen)
		if p.stop.Load() {
			return
		}
		seen = g
		p.cur.run(w, p.n)
		p.pending.Add(-1)
	}
}

// wait spins until the generation moves past seen, then parks.
func (p *pool) wait(seen uint64) uint64 {
	start := time.Now()
	for i := 0; ; i++ {
		if g := p.gen.Load(); g != seen {
			return g
		}
		if i&255 == 255 {
			if time.Since(start) > spinFor {
				break
			}
			runtime.Gosched()
		}
	}
	p.mu.Lock()
	// Announce the sleep before the last check: run bumps gen and then
	// reads sleepers, so either it sees us and broadcasts under mu, or we
	// see its new generation here.
	p.sleepers.Add(1)
	for p.gen.Load() == seen {
		p.cond.Wait()
	}
	p.sleepers.Add(-1)
	p.mu.Unlock()
	return p.gen.Load()
}

// close stops the workers and waits for them to exit.
func (p *pool) close() {
	if p.n == 1 {
		return
	}
	p.stop.Store(true)
	p.gen.Add(1)
	p.mu.Lock()
	p.cond.Broadcast()
	p.mu.Unlock()
	p.done.Wait()
}
