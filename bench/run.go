package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/sample"
)

// Options set the shape of a run.
type Options struct {
	Prompt int  // prompt tokens prefilled per repeat
	Gen    int  // tokens decoded per repeat
	Repeat int  // repeats; figures are medians over them
	Ops    bool // also time each operation (an extra, profiled pass)
	// Timeline records each token of the profiled pass: its operations'
	// times and the process's and runtime's counts (timeline.go).
	Timeline bool
	Seed     uint64
	// Batches lists batch sizes to measure through the backend's batched
	// decode step (batch.go), in this order; nil or [1] measures none.
	Batches []int

	llc        int64         // tests: the last-level cache size (0: ask the system)
	onControl  func()        // tests: called as each control step starts
	streamTime time.Duration // tests: the stream's least time (0: 0.5 s)
}

// OpRow is one line of the per-operation table.
type OpRow struct {
	Op      string  `json:"op"`
	MSPerTk float64 `json:"ms_per_token"`
	Share   float64 `json:"share"`
}

// Result is the report; its JSON names are the ones documented in README.md.
type Result struct {
	Model   string `json:"model"`
	Backend string `json:"backend"`
	Threads int    `json:"threads"`
	// Kernels names the host kernel set the products ran on (the CPU
	// backend: "avx512-vnni", "avx-vnni", "avx2", "go" or "reference").
	Kernels        string  `json:"kernels,omitempty"`
	PromptTokens   int     `json:"prompt_tokens"`
	GenTokens      int     `json:"gen_tokens"`
	Repeat         int     `json:"repeat"`
	LoadMS         float64 `json:"load_ms"`
	PrefillTokPerS float64 `json:"prefill_tok_per_s"`
	DecodeTokPerS  float64 `json:"decode_tok_per_s"`
	MSPerToken     float64 `json:"ms_per_token"`
	P50MS          float64 `json:"p50_ms"`
	P90MS          float64 `json:"p90_ms"`
	P99MS          float64 `json:"p99_ms"`
	MaxMS          float64 `json:"max_ms"`
	StdMS          float64 `json:"std_ms"`
	Jitter         float64 `json:"jitter_p99_p50"`
	// P99P50Detrended is p99/p50 of the per-token times divided by their
	// least-squares line over position (see Detrended).
	P99P50Detrended     float64 `json:"p99_p50_detrended"`
	PeakRSSBytes        int64   `json:"peak_rss_bytes"`
	FileBytes           int64   `json:"file_bytes,omitempty"`
	WeightBytesPerToken int64   `json:"weight_bytes_per_token"`
	WeightGBPerS        float64 `json:"weight_gb_per_s"`
	Ops                 []OpRow `json:"ops,omitempty"` // decode's, ms per generated token
	// PrefillOps is prefill's per-operation times, ms per prompt token;
	// empty when the backend does not time its prefill's operations.
	PrefillOps []OpRow `json:"prefill_ops,omitempty"`
	// Timeline: Options.Timeline's per-token record of the profiled pass.
	Timeline *Timeline `json:"timeline,omitempty"`

	// The machine in the same run (CPU backend): see machine.go.
	StreamGBPerS  *float64 `json:"stream_gb_per_s,omitempty"`
	StreamBytes   int64    `json:"stream_bytes,omitempty"`
	StreamBuffer  bool     `json:"stream_buffer,omitempty"` // weights under 4x the LLC: a 4x LLC buffer was streamed (not in peak_rss_bytes)
	LLCBytes      int64    `json:"llc_bytes,omitempty"`
	LLCAssumed    bool     `json:"llc_assumed,omitempty"`
	ControlP50MS  *float64 `json:"control_p50_ms,omitempty"`
	ControlP99P50 *float64 `json:"control_p99_p50,omitempty"`

	// BandwidthFraction is, on the CPU, weight_bytes_per_token x
	// decode_tok_per_s over stream_gb_per_s; on a device, the weights'
	// rate over the device's copy bandwidth.
	BandwidthFraction *float64 `json:"bandwidth_fraction,omitempty"`

	// Device backends only.
	Device           string   `json:"device,omitempty"`
	H2DBytesPerToken *float64 `json:"h2d_bytes_per_token,omitempty"`
	D2HBytesPerToken *float64 `json:"d2h_bytes_per_token,omitempty"`
	LaunchesPerToken *float64 `json:"launches_per_token,omitempty"`
	CopyGBPerS       *float64 `json:"copy_gb_per_s,omitempty"`

	LlamaBench *LlamaBench `json:"llama_bench,omitempty"`

	// Batched decode (Options.Batches), measured after the rest, so the
	// fields above (peak RSS included) are those of batch 1 alone.
	Batches           []BatchRow `json:"batches,omitempty"`
	KVBytesPerSession int64      `json:"kv_bytes_per_session,omitempty"` // at prompt+gen positions
	// BatchDevicePick: the batches' tokens were picked on the device
	// (backend.BatchSampler), only ids crossing; else on the host.
	BatchDevicePick bool `json:"batch_device_pick,omitempty"`
}

// WeightBytesPerToken is what one decode step reads of w as stored in the
// file: every layer matrix, the LM head, and one embedding row.
func WeightBytesPerToken(w *model.Weights) int64 {
	var n int64
	for i := range w.Layers {
		l := &w.Layers[i]
		for _, t := range []*model.Tensor{&l.Wq, &l.Wk, &l.Wv, &l.Wo, &l.Wgate, &l.Wup, &l.Wdown} {
			n += int64(len(t.Data))
		}
	}
	n += int64(len(w.Output.Data))
	if w.Embed.Rows > 0 {
		n += int64(len(w.Embed.Data) / w.Embed.Rows)
	}
	return n
}

// decoder runs one decode step and returns the greedy next token, on the
// device when the session can.
type decoder struct {
	s      backend.Session
	argmax backend.ArgmaxDecoder
	logits []float32
}

func newDecoder(s backend.Session, vocab int) *decoder {
	d := &decoder{s: s}
	if a, ok := s.(backend.ArgmaxDecoder); ok {
		d.argmax = a
	} else {
		d.logits = make([]float32, vocab)
	}
	return d
}

func (d *decoder) step(tok int32) (int32, error) {
	if d.argmax != nil {
		return d.argmax.DecodeArgmax(tok)
	}
	if err := d.s.Decode(tok, d.logits); err != nil {
		return 0, err
	}
	return sample.Argmax(d.logits), nil
}

// Run measures m. weightBytes is what one decode step reads.
func Run(ctx context.Context, m backend.Model, weightBytes int64, o Options) (Result, error) {
	cfg := m.Config()
	r := Result{Backend: m.Name(), PromptTokens: o.Prompt, GenTokens: o.Gen, Repeat: o.Repeat, WeightBytesPerToken: weightBytes}
	if o.Prompt < 1 || o.Gen < 1 || o.Repeat < 1 {
		return r, fmt.Errorf("bench: prompt, gen and repeat must be at least 1")
	}
	if err := checkBatches(m, o.Batches, o.Prompt+o.Gen); err != nil {
		return r, err
	}
	if wb, ok := m.(backend.WeightBytes); ok {
		r.WeightBytesPerToken = wb.WeightBytesPerToken()
	}
	if k, ok := m.(interface{ Kernels() string }); ok {
		r.Kernels = k.Kernels()
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x62656e6368))
	prompt := make([]int32, o.Prompt)
	for i := range prompt {
		prompt[i] = int32(rng.IntN(cfg.Vocab))
	}
	sess, err := m.NewSession(o.Prompt + o.Gen)
	if err != nil {
		return r, err
	}
	defer sess.Close()
	dec := newDecoder(sess, cfg.Vocab)
	lastLogits := make([]float32, cfg.Vocab)

	// Warm-up: a short prefill and a few decodes, so one-time work (kernel
	// loading, page faults, graph capture) stays out of the figures.
	warm := min(o.Prompt, 8)
	if err := sess.Prefill(prompt[:warm], lastLogits); err != nil {
		return r, fmt.Errorf("bench: warm-up prefill: %w", err)
	}
	tok := prompt[0]
	for i := 0; i < min(o.Gen, 16); i++ {
		if tok, err = dec.step(tok); err != nil {
			return r, fmt.Errorf("bench: warm-up decode: %w", err)
		}
	}

	dev, _ := m.(backend.DeviceInfo)
	// On the CPU, the machine is measured after each repeat (machine.go).
	var mach *machine
	wm, ok := m.(backend.WeightMemory)
	if tr, ok2 := m.(backend.ThreadRunner); ok && ok2 && dev == nil {
		var parts [][]byte
		wm.VisitWeightMemory(func(b []byte) { parts = append(parts, b) })
		mach = newMachine(parts, tr, r.WeightBytesPerToken, o.llc)
		mach.lat = make([]time.Duration, 0, o.Gen*o.Repeat)
		mach.onStep = o.onControl
	}
	var c0, c1 backend.Counters
	lat := make([]time.Duration, 0, o.Gen*o.Repeat)
	pos := make([]float64, 0, o.Gen*o.Repeat) // each latency's position
	var prefillRates, decodeRates []float64
	var enginePeak int64 // peak RSS before each stream buffer (machine.measure)
	for rep := 0; rep < o.Repeat; rep++ {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		if err := sess.Rewind(0); err != nil {
			return r, err
		}
		t0 := time.Now()
		if err := sess.Prefill(prompt, lastLogits); err != nil {
			return r, fmt.Errorf("bench: prefill: %w", err)
		}
		prefillRates = append(prefillRates, float64(o.Prompt)/time.Since(t0).Seconds())
		if dev != nil {
			c0 = dev.Counters()
		}
		tok := prompt[len(prompt)-1]
		tStart := time.Now()
		prev := tStart
		for i := 0; i < o.Gen; i++ {
			if tok, err = dec.step(tok); err != nil {
				return r, fmt.Errorf("bench: decode: %w", err)
			}
			now := time.Now()
			lat = append(lat, now.Sub(prev))
			pos = append(pos, float64(o.Prompt+i))
			prev = now
		}
		decodeRates = append(decodeRates, float64(o.Gen)/prev.Sub(tStart).Seconds())
		if dev != nil {
			c1 = dev.Counters()
		}
		if mach != nil {
			st := o.streamTime
			if st <= 0 {
				st = 500 * time.Millisecond
			}
			enginePeak = max(enginePeak, mach.measure(st/time.Duration(o.Repeat), o.Gen))
		}
	}
	r.PrefillTokPerS = Median(prefillRates)
	r.DecodeTokPerS = Median(decodeRates)
	if r.DecodeTokPerS > 0 {
		r.MSPerToken = 1000 / r.DecodeTokPerS
		r.WeightGBPerS = float64(r.WeightBytesPerToken) * r.DecodeTokPerS / 1e9
	}
	l := Summarize(lat)
	r.P50MS, r.P90MS, r.P99MS, r.MaxMS, r.StdMS, r.Jitter = l.P50, l.P90, l.P99, l.Max, l.Std, l.Jitter
	ms := make([]float64, len(lat))
	for i, d := range lat {
		ms[i] = float64(d) / 1e6
	}
	r.P99P50Detrended = Detrended(pos, ms)

	if mach != nil {
		mc := mach.result()
		if mc.StreamGBPerS > 0 {
			frac := Fraction(r.WeightBytesPerToken, r.DecodeTokPerS, mc.StreamGBPerS)
			r.StreamGBPerS, r.BandwidthFraction = &mc.StreamGBPerS, &frac
			r.ControlP50MS, r.ControlP99P50 = &mc.ControlP50MS, &mc.ControlJitter
		}
		r.StreamBytes, r.StreamBuffer, r.LLCBytes, r.LLCAssumed = mc.StreamBytes, mc.Buffer, mc.LLCBytes, mc.LLCAssumed
	}

	if dev != nil {
		n := float64(o.Gen)
		h2d := float64(c1.H2DBytes-c0.H2DBytes) / n
		d2h := float64(c1.D2HBytes-c0.D2HBytes) / n
		launches := float64(c1.Launches-c0.Launches) / n
		r.Device, r.H2DBytesPerToken, r.D2HBytesPerToken, r.LaunchesPerToken = dev.Device(), &h2d, &d2h, &launches
		if bw, err := dev.CopyBandwidth(); err == nil && bw > 0 {
			gb := bw / 1e9
			frac := r.WeightGBPerS / gb
			r.CopyGBPerS, r.BandwidthFraction = &gb, &frac
		}
	}

	if o.Ops || o.Timeline {
		pre, rows, tl, err := profile(sess, dec, prompt, o.Gen, o.Timeline)
		if err != nil {
			return r, err
		}
		if o.Ops {
			r.PrefillOps, r.Ops = pre, rows
		}
		r.Timeline = tl
	}
	r.PeakRSSBytes = max(enginePeak, PeakRSS())

	if batched(o.Batches) {
		bd, _ := backend.Batches(m) // checkBatches made sure
		r.KVBytesPerSession = backend.KVBytes(m, o.Prompt+o.Gen)
		_, r.BatchDevicePick = m.(backend.BatchSampler)
		for _, n := range o.Batches {
			row, err := runBatch(ctx, m, bd, n, o)
			if err != nil {
				return r, err
			}
			r.Batches = append(r.Batches, row)
		}
	}
	return r, nil
}

// opRows is the per-operation table of t, measured over gen tokens.
func opRows(t backend.OpTimes, gen int) []OpRow {
	ops := []struct {
		name string
		s    float64
	}{
		{"embedding", t.Embedding}, {"qkv_projection", t.QKV}, {"attention", t.Attention},
		{"output_projection", t.Output}, {"ffn_up_gate", t.FFNUpGate}, {"ffn_down", t.FFNDown},
		{"lm_head", t.LMHead}, {"other", t.Other},
	}
	if t.QKVInAttention { // one kernel: one row
		ops = append(ops[:1], ops[2:]...)
		ops[1].name, ops[1].s = "qkv_attention", t.QKV+t.Attention
	}
	var total float64
	for _, o := range ops {
		total += o.s
	}
	rows := make([]OpRow, 0, len(ops))
	for _, o := range ops {
		row := OpRow{Op: o.name, MSPerTk: o.s * 1000 / float64(gen)}
		if total > 0 {
			row.Share = o.s / total
		}
		rows = append(rows, row)
	}
	return rows
}
