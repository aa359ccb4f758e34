package cuda

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/sample"
)

// Device sampling limits (sample.cu SMP_*): parameters beyond them are
// sampled on the host from logits brought back.
const (
	sampleThreads    = 1024 // SMP_NT
	sampleMaxK       = 256  // SMP_MAXK: top-k the device can keep
	sampleMaxHistory = 256  // SMP_MAXHIST: repetition window the device can hold
	sampleParamBytes = 4*4 + 4*4 + 8*2 + 4*sampleMaxHistory
)

var _ backend.SamplingDecoder = (*Session)(nil)

// deviceTopK is the k the device keeps for p, or false when p needs the
// host: top-k off or above sampleMaxK on a vocabulary bigger than that.
func deviceTopK(p sample.Params, vocab int) (int, bool) {
	k := p.TopK
	if k <= 0 || k >= vocab {
		k = vocab // the host keeps every token
	}
	return k, k <= sampleMaxK
}

// SetSampling implements backend.SamplingDecoder. history is the sequence
// the repetition penalty looks back over (the host sampler's accepted
// tokens); the next DecodeSample call adds its token to it. ok is false,
// with no error, when p needs the host sampler.
func (s *Session) SetSampling(p sample.Params, history []int32) (ok bool, err error) {
	// Until one is taken, the session has no device sampler: a batch step
	// (DecodeBatchSample) then takes its argmax.
	s.sampleHost = nil
	if p.Temperature <= 0 || p.Validate() != nil {
		return false, nil // greedy (DecodeArgmax) or invalid: the host decides
	}
	k, fits := deviceTopK(p, s.m.cfg.Vocab)
	penal := p.Penalizes()
	if !fits || (penal && p.RepeatLastN > sampleMaxHistory) {
		return false, nil
	}
	lastn, pen := 0, float32(1)
	if penal {
		lastn, pen = p.RepeatLastN, p.RepeatPenalty
	}
	b := make([]byte, sampleParamBytes)
	le := binary.LittleEndian
	le.PutUint32(b[0:], math.Float32bits(p.Temperature))
	le.PutUint32(b[4:], math.Float32bits(p.TopP))
	le.PutUint32(b[8:], math.Float32bits(p.MinP))
	le.PutUint32(b[12:], math.Float32bits(pen))
	le.PutUint32(b[16:], uint32(k))
	le.PutUint32(b[20:], uint32(lastn))
	le.PutUint64(b[32:], p.Seed)
	// hlen, hpos and the window are filled in by DecodeSample, which knows
	// the last token.
	s.sampleHost = b
	s.sampleHist = append(s.sampleHist[:0], history...)
	s.samplePending = true
	return true, nil
}

// DecodeSample implements backend.SamplingDecoder: it runs token and draws
// the next one on the device under the parameters of SetSampling; only
// the id crosses back.
func (s *Session) DecodeSample(token int32) (int32, error) {
	if s.sampleHost == nil {
		return 0, fmt.Errorf("cuda: DecodeSample before SetSampling")
	}
	done, err := s.enter()
	if err != nil {
		return 0, err
	}
	defer done()
	if s.sampleExec == 0 {
		if err := s.captureInto(&s.sampleGraph, &s.sampleExec, true); err != nil {
			return 0, err
		}
	}
	if err := s.uploadSampling(token, s.stream); err != nil {
		return 0, err
	}
	if err := s.step(token, true); err != nil {
		return 0, err
	}
	return pinnedInt32(s.pinned, 2), nil
}

// uploadSampling sends SetSampling's parameter block on stream, once per
// SetSampling: the repetition window is the history and token, the newest
// lastn of them, oldest first (the kernel's ring at hpos 0 once full).
func (s *Session) uploadSampling(token int32, stream uintptr) error {
	if !s.samplePending {
		return nil
	}
	d := s.m.dev.d
	b := s.sampleHost
	le := binary.LittleEndian
	lastn := int(le.Uint32(b[20:]))
	win := append(s.sampleHist, token)
	win = win[max(0, len(win)-lastn):]
	if lastn == 0 {
		win = nil
	}
	clear(b[40:]) // counter (offset 40) and window (48 on)
	for i, t := range win {
		le.PutUint32(b[48+4*i:], uint32(t))
	}
	le.PutUint32(b[24:], uint32(len(win)))
	hpos := 0
	if lastn > 0 {
		hpos = len(win) % lastn
	}
	le.PutUint32(b[28:], uint32(hpos))
	// In stream order (the previous step's k_sample may still be writing
	// the block); pageable, so staged before the call returns.
	if err := d.check(d.cuMemcpyHtoDAsync(s.buf.sampleP, unsafePtr(b), uint64(len(b)), stream), "cuMemcpyHtoDAsync(sampling parameters)"); err != nil {
		return err
	}
	s.stats.H2DBytes += len(b)
	s.samplePending = false
	return nil
}
