package cpu

import (
	"fmt"
	"runtime/debug"
)

// A model's weights may be views of its file's memory mapping. If the file
// is truncated while the model is loaded, reading a page past the new end
// raises SIGBUS, which would kill the process. Every goroutine that runs
// the forward pass (the pool's workers, and the caller for the duration of
// a Session or DecodeBatch call) turns such a fault into a panic
// (debug.SetPanicOnFault), which the pool carries to the caller after its
// barrier and the call turns into an error: the request fails, the process
// lives, and the server reloads the changed file.

// faultError is a memory fault while running the model.
type faultError struct{ v any }

func (e faultError) Error() string {
	return fmt.Sprintf("cpu: memory fault reading the model's weights (was its file truncated while loaded?): %v", e.v)
}

// isFault reports whether a recovered panic value is a memory fault: the
// runtime gives those an Addr method.
func isFault(p any) bool {
	_, ok := p.(interface{ Addr() uintptr })
	return ok
}

// recoverFault, deferred, turns a fault panic (directly, or carried by the
// pool as a faultError) into *err; other panics go on.
func recoverFault(err *error) {
	p := recover()
	switch {
	case p == nil:
	case isFault(p):
		*err = faultError{p}
	default:
		if fe, ok := p.(faultError); ok {
			*err = fe
			return
		}
		panic(p)
	}
}

// faultsPanic makes memory faults in the calling goroutine panics until
// the returned old setting is restored.
func faultsPanic() bool { return debug.SetPanicOnFault(true) }
