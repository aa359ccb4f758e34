package testmodel

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/sample"
)

// DeviceName is the name Device gives itself (backend.Model.Name), the one
// tests register it under.
const DeviceName = "test-device"

// Device wraps a model that batches (the CPU backend) as a device that
// picks tokens itself, as the GPU backend does, so that the engine's,
// server's and bench's device paths run without a GPU: it is a
// backend.BatchSampler, and its sessions are SamplingDecoder and
// ArgmaxDecoder. Its picks are made on the host from the wrapped model's
// logits with the device's rules: a draw by package sample under the
// parameters of the session's last SetSampling when that returned ok, else
// the argmax. SetSampling refuses top-k 0 (ok false), so that some
// parameters need the host as on the GPU, and fails when its history is
// not exactly what the session's cache holds.
type Device struct {
	backend.Model
	bd     backend.BatchDecoder
	mu     sync.Mutex // the buffers below
	inner  []backend.Session
	logits [][]float32

	Batches  atomic.Int64 // DecodeBatch calls (logits brought back)
	Samples  atomic.Int64 // DecodeBatchSample calls (only ids)
	Armed    atomic.Int64 // SetSampling calls that returned ok
	Disarmed atomic.Int64 // SetSampling calls that returned not ok
	Fed      atomic.Int64 // DecodeBatchSample tokens that were the session's last pick
	Fail     atomic.Bool  // DecodeBatchSample fails
}

// NewDevice wraps m, which must implement backend.BatchDecoder.
func NewDevice(m backend.Model) (*Device, error) {
	bd, ok := m.(backend.BatchDecoder)
	if !ok {
		return nil, fmt.Errorf("testmodel: the %s backend cannot batch", m.Name())
	}
	return &Device{Model: m, bd: bd}, nil
}

// Name implements backend.Model.
func (d *Device) Name() string { return DeviceName }

// DeviceSession is one of Device's sessions.
type DeviceSession struct {
	backend.Session
	d      *Device
	toks   []int32 // what its cache holds
	logits []float32
	smp    *sample.Sampler // nil: the argmax
	pick   int32           // its last pick, when picked
	picked bool
}

// NewSession implements backend.Model.
func (d *Device) NewSession(ctx int) (backend.Session, error) {
	s, err := d.Model.NewSession(ctx)
	if err != nil {
		return nil, err
	}
	return &DeviceSession{Session: s, d: d, logits: make([]float32, d.Config().Vocab)}, nil
}

func (d *Device) unwrap(sessions []backend.Session) ([]backend.Session, error) {
	d.inner = d.inner[:0]
	for _, s := range sessions {
		ds, ok := s.(*DeviceSession)
		if !ok || ds.d != d {
			return nil, errors.New("testmodel: a session of another model")
		}
		d.inner = append(d.inner, ds.Session)
	}
	return d.inner, nil
}

// DecodeBatch implements backend.BatchDecoder.
func (d *Device) DecodeBatch(sessions []backend.Session, tokens []int32, logits [][]float32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.Batches.Add(1)
	inner, err := d.unwrap(sessions)
	if err != nil {
		return err
	}
	if err := d.bd.DecodeBatch(inner, tokens, logits); err != nil {
		return err
	}
	for i, s := range sessions {
		ds := s.(*DeviceSession)
		ds.toks, ds.picked = append(ds.toks, tokens[i]), false
	}
	return nil
}

// DecodeBatchSample implements backend.BatchSampler.
func (d *Device) DecodeBatchSample(sessions []backend.Session, tokens []int32, next []int32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.Samples.Add(1)
	if d.Fail.Load() {
		return errors.New("testmodel: device step failed")
	}
	if len(next) != len(sessions) {
		return fmt.Errorf("testmodel: %d ids for %d sessions", len(next), len(sessions))
	}
	inner, err := d.unwrap(sessions)
	if err != nil {
		return err
	}
	d.logits = d.logits[:0]
	for _, s := range sessions {
		d.logits = append(d.logits, s.(*DeviceSession).logits)
	}
	if err := d.bd.DecodeBatch(inner, tokens, d.logits); err != nil {
		return err
	}
	for i, s := range sessions {
		ds := s.(*DeviceSession)
		if ds.picked && ds.pick == tokens[i] {
			d.Fed.Add(1)
		}
		ds.toks = append(ds.toks, tokens[i])
		if next[i], err = ds.choose(tokens[i]); err != nil {
			return err
		}
	}
	return nil
}

// choose is the device's pick from the session's logits after tok.
func (s *DeviceSession) choose(tok int32) (int32, error) {
	id := sample.Argmax(s.logits)
	if s.smp != nil {
		s.smp.Accept(tok)
		var err error
		if id, err = s.smp.Sample(s.logits); err != nil {
			return 0, err
		}
	}
	s.pick, s.picked = id, true
	return id, nil
}

// Prefill implements backend.Session.
func (s *DeviceSession) Prefill(tokens []int32, logits []float32) error {
	if err := s.Session.Prefill(tokens, logits); err != nil {
		return err
	}
	s.toks, s.picked = append(s.toks, tokens...), false
	return nil
}

// Rewind implements backend.Session.
func (s *DeviceSession) Rewind(pos int) error {
	if err := s.Session.Rewind(pos); err != nil {
		return err
	}
	s.toks, s.picked = s.toks[:pos], false
	return nil
}

// Decode implements backend.Session.
func (s *DeviceSession) Decode(tok int32, logits []float32) error {
	if err := s.Session.Decode(tok, logits); err != nil {
		return err
	}
	s.toks, s.picked = append(s.toks, tok), false
	return nil
}

// DecodeArgmax implements backend.ArgmaxDecoder.
func (s *DeviceSession) DecodeArgmax(tok int32) (int32, error) {
	if err := s.Decode(tok, s.logits); err != nil {
		return 0, err
	}
	return sample.Argmax(s.logits), nil
}

// SetSampling implements backend.SamplingDecoder.
func (s *DeviceSession) SetSampling(p sample.Params, history []int32) (bool, error) {
	if !slices.Equal(history, s.toks) {
		return false, fmt.Errorf("testmodel: SetSampling's history of %d tokens is not the %d the cache holds", len(history), len(s.toks))
	}
	s.smp = nil
	if p.IsGreedy() || p.TopK <= 0 {
		s.d.Disarmed.Add(1)
		return false, nil
	}
	smp, err := sample.New(len(s.logits), p)
	if err != nil {
		return false, err
	}
	for _, t := range history {
		smp.Accept(t)
	}
	s.smp = smp
	s.d.Armed.Add(1)
	return true, nil
}

// DecodeSample implements backend.SamplingDecoder.
func (s *DeviceSession) DecodeSample(tok int32) (int32, error) {
	if s.smp == nil {
		return 0, errors.New("testmodel: DecodeSample before SetSampling")
	}
	if err := s.Decode(tok, s.logits); err != nil {
		return 0, err
	}
	return s.choose(tok)
}
