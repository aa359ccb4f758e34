// Package backend defines the small interface every compute path implements:
// load a model's weights once, then run sessions that prefill a batch of
// tokens and decode one token at a time. It knows nothing of the CLI or HTTP.
package backend

import (
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/sample"
)

// Model is a network loaded onto a compute device (weights repacked once).
type Model interface {
	// Name says which backend this is ("cpu", "cuda").
	Name() string
	// Config is the network's description.
	Config() *model.Config
	// NewSession allocates a KV cache and activations for up to ctx positions.
	NewSession(ctx int) (Session, error)
	// Close frees the device memory; sessions must be closed first.
	Close() error
}

// Session is one sequence's state: its KV cache and position.
type Session interface {
	// Prefill runs tokens at positions Pos()..Pos()+len(tokens)-1 as one
	// batch and, when logits is non-nil (len Vocab), writes the logits of
	// the last token. It fails when the context would overflow.
	Prefill(tokens []int32, logits []float32) error
	// Decode runs one token at Pos() and writes its logits (len Vocab).
	Decode(token int32, logits []float32) error
	// Pos is the number of positions filled.
	Pos() int
	// Rewind drops positions from pos on (0 <= pos <= Pos()), so a new
	// request can reuse a common prefix.
	Rewind(pos int) error
	Close() error
}

// ArgmaxDecoder is implemented by sessions that can pick the greedy next
// token on the device, so only the token id crosses back.
type ArgmaxDecoder interface {
	DecodeArgmax(token int32) (int32, error)
}

// SamplingDecoder is implemented by sessions that can also draw the next
// token on the device (temperature, top-k, top-p, min-p, repetition
// penalty, as package sample does), so only its id crosses back.
type SamplingDecoder interface {
	// SetSampling prepares DecodeSample to draw under p, the repetition
	// window starting from history (the tokens accepted so far). ok is false
	// when p needs the host's sampler.
	SetSampling(p sample.Params, history []int32) (ok bool, err error)
	// DecodeSample runs token and returns the drawn next token.
	DecodeSample(token int32) (int32, error)
}

// OpTimes is a per-operation time breakdown of one or more decode steps,
// in the order the bench prints them.
type OpTimes struct {
	Embedding, QKV, Attention, Output, FFNUpGate, FFNDown, LMHead, Other float64 // seconds
	// QKVInAttention: the QKV projection ran inside the attention kernel
	// (cuda's fused decode step), its time counted in Attention.
	QKVInAttention bool
}

// Profiler is implemented by sessions that can time their operations.
type Profiler interface {
	// Profile enables or disables per-operation timing (it may slow decode).
	Profile(on bool)
	// OpTimes returns the accumulated times since the last reset and resets them.
	OpTimes() OpTimes
}

// Counters are cumulative device-traffic counts, for backends that move data
// between host and device.
type Counters struct {
	H2DBytes int64 // bytes copied host to device
	D2HBytes int64 // bytes copied device to host
	Launches int64 // kernel launches (a graph's kernels count one each)
	Tokens   int64 // decode steps run
}

// DeviceInfo is implemented by backends that run on a separate device.
type DeviceInfo interface {
	// Device names the card.
	Device() string
	// Counters returns the traffic so far.
	Counters() Counters
	// CopyBandwidth measures the device's device-to-device copy bandwidth in
	// bytes per second (bytes read plus bytes written).
	CopyBandwidth() (float64, error)
}

// WeightBytes is implemented by models that know how many bytes of weights
// one decode step reads (the resident layout, which may differ from the file).
type WeightBytes interface {
	WeightBytesPerToken() int64
}

// WeightMemory is implemented by models whose weights sit in host memory
// (the CPU backend's repacked matrices), so that a benchmark can stream the
// very pages a decode step reads to measure the machine's bandwidth,
// without allocating a buffer of its own.
type WeightMemory interface {
	// VisitWeightMemory calls fn with each slice of the weights a decode
	// step reads (the layers' matrices and the LM head, as resident),
	// read-only; fn must not keep a slice past the model's Close.
	VisitWeightMemory(fn func([]byte))
}

// ThreadRunner is implemented by models that compute on a pool of host
// threads (the CPU backend), so that a benchmark can run its own loop on
// the very threads, and with the very hand-off, a decode step's operations
// use: a control loop judging the decode then competes for nothing the
// decode does not.
type ThreadRunner interface {
	// Threads is the number of threads.
	Threads() int
	// RunThreads calls fn(w, n) once on each of the n threads, w in
	// [0, n), and returns when all have returned. It waits for a forward
	// pass in progress, and does nothing after the model's Close.
	RunThreads(fn func(w, n int))
}

// BatchDecoder is implemented by models that can run one decode step for
// several sessions at once, each at its own position with its own KV
// cache, reading every weight matrix once for the whole batch (a
// matrix-matrix product instead of one matrix-vector product per session).
// It is batch-invariant: each session's logits are bit for bit those its
// own Decode would write, whatever else is in the batch.
type BatchDecoder interface {
	// DecodeBatch runs tokens[i] at sessions[i].Pos() and writes its logits
	// (len Vocab) to logits[i]. The sessions must be distinct and belong to
	// this model; a session closed, full, given a token outside the
	// vocabulary or a short logits buffer is an error, and then no
	// session has advanced.
	DecodeBatch(sessions []Session, tokens []int32, logits [][]float32) error
}

// BatchSampler is implemented by models whose batched step can also pick
// each session's next token on the device, so only token ids cross the
// bus: a draw under the parameters of the session's last SetSampling call
// (SamplingDecoder) when that call returned ok, else (ok false, or no call
// yet) the argmax. The engine disarms a session for a greedy request by
// calling SetSampling with its greedy parameters.
type BatchSampler interface {
	// DecodeBatchSample runs tokens[i] at sessions[i].Pos(), as
	// DecodeBatch does, and writes each session's next token to next[i]
	// instead of its logits. Errors as DecodeBatch's: then no session has
	// advanced.
	DecodeBatchSample(sessions []Session, tokens []int32, next []int32) error
}

// Batching is implemented by a BatchDecoder whose batched step can be
// off (the CUDA backend's, until its many-row step is checked on a card):
// callers batch only where Batching returns true.
type Batching interface {
	Batching() bool
}

// Batches tells whether m runs batched decode: it is a BatchDecoder and,
// where it implements Batching, says so.
func Batches(m Model) (BatchDecoder, bool) {
	bd, ok := m.(BatchDecoder)
	if b, has := m.(Batching); ok && has && !b.Batching() {
		return nil, false
	}
	return bd, ok
}

// LogitsPrefiller is implemented by sessions that can prefill a batch and
// keep the logits after every position, not only the last (for checks
// against llama.cpp's teacher-forced logits).
type LogitsPrefiller interface {
	// PrefillLogits runs tokens as Prefill does and writes the logits
	// after each of them to logits, position by position: len(tokens)
	// rows of Vocab values.
	PrefillLogits(tokens []int32, logits []float32) error
}

// KVSizer is implemented by models that know one session's KV cache size
// in their own layout (a GPU's f16 cache on the device), for the memory
// budgets of the server and the bench.
type KVSizer interface {
	// KVBytes is the KV cache of one session of ctx positions, in bytes.
	KVBytes(ctx int) int64
}

// KVBytes is one session's KV cache at ctx positions: m's own figure where
// it is a KVSizer, else float32 K and V for every layer (the widest cache
// any backend keeps).
func KVBytes(m Model, ctx int) int64 {
	if k, ok := m.(KVSizer); ok {
		return k.KVBytes(ctx)
	}
	return m.Config().KVBytes(ctx, 4)
}
