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
//
// How to wait depends on the machine. With cores to spare, spin on loads
// alone: runtime.Gosched takes the scheduler's global queue lock, which
// serialises many spinners. On a small machine, where other processes
// often hold the core a worker needs, spinning starves it, and
// runtime.Gosched every few polls is what lets the OS run it: so pools on
// machines of at most smallMachine CPUs, and pools of more workers than
// Ps, yield as they wait; the others yield only once a wait has lasted
// longer than its side's yieldAfter. BenchmarkPoolBarrier measures it;
// docs/cpu-notes.md has the figures.
type pool struct {
	n     int
	yield bool // yield while waiting from the start (small machine, or more workers than Ps)

	mu       sync.Mutex // guards parking; held only around sleep and wake-up
	cond     *sync.Cond
	sleepers atomic.Int32

	gen     atomic.Uint64 // bumped once per operation
	pending atomic.Int32  // workers (other than the caller) still running it
	cur     task
	fault   atomic.Pointer[faultError] // a worker's memory fault in the current operation (fault.go)
	stop    atomic.Bool
	done    sync.WaitGroup
}

const (
	// smallMachine is the most CPUs on which waits yield from the start.
	smallMachine = 4
	// callerYieldAfter and workerYieldAfter bound a spin elsewhere: the
	// caller waits only for workers' shares, a worker also for the
	// caller's serial work between operations.
	callerYieldAfter = 50 * time.Microsecond
	workerYieldAfter = time.Millisecond
)

func newPool(n int) *pool {
	p := &pool{n: max(n, 1)}
	p.yield = p.n > runtime.GOMAXPROCS(0) || runtime.NumCPU() <= smallMachine
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
	// A fault in the caller's share waits for the workers before it
	// unwinds, so that no worker still reads the operation's buffers.
	var callerPanic any
	func() {
		defer func() { callerPanic = recover() }()
		t.run(0, p.n)
	}()
	var start time.Time
	for i := 0; p.pending.Load() != 0; i++ {
		if i&63 == 63 {
			if start.IsZero() {
				start = time.Now()
			}
			if p.yield || time.Since(start) > callerYieldAfter {
				// Lets a worker that shares our core finish its share.
				runtime.Gosched()
			}
		}
	}
	p.cur = nil
	if callerPanic != nil {
		panic(callerPanic)
	}
	if f := p.fault.Swap(nil); f != nil {
		panic(*f)
	}
}

// runShare runs a worker's share of an operation; a memory fault in it is
// kept for the caller (see fault.go), any other panic crashes as before.
func (p *pool) runShare(w int) {
	defer func() {
		if r := recover(); r != nil {
			if !isFault(r) {
				panic(r)
			}
			p.fault.Store(&faultError{r})
		}
	}()
	p.cur.run(w, p.n)
}

func (p *pool) worker(w int) {
	defer p.done.Done()
	faultsPanic()
	// Generation 0 is the pool's start: a worker scheduled late must still
	// see the first operation, so it must not read the counter here.
	var seen uint64
	for {
		g := p.wait(seen)
		if p.stop.Load() {
			return
		}
		seen = g
		p.runShare(w)
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
			waited := time.Since(start)
			if waited > spinFor {
				break
			}
			if p.yield || waited > workerYieldAfter {
				runtime.Gosched()
			}
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
