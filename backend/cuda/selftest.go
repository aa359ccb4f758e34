package cuda

import (
	"fmt"
	"math"
	"runtime"
	"sync"

	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/sample"
)

// SelfTestCase is one model the GPU is checked on against the CPU reference
// (model.NewReference).
type SelfTestCase struct {
	Name    string
	Weights *model.Weights
	// Prompt is fed one position at a time; the GPU's logits are compared
	// with the reference's at every position.
	Prompt []int32
	// Tol is the largest relative L2 error ||gpu - ref|| / ||ref|| of the
	// logits allowed at any position (0: DefaultTolerance of the kinds used).
	Tol float64
	// Greedy, when positive, takes this many greedy tokens from the prompt's
	// last position on with the device argmax; each must equal the
	// reference's, or for lossy kinds be a near-tie within the measured error.
	Greedy int
	Opts   Options
}

// SelfTestResult reports one case.
type SelfTestResult struct {
	Name             string
	LayerKind        string // device format of the layer matrices
	HeadKind         string // device format of the LM head
	Device           string
	Positions        int     // positions whose logits were compared
	MaxRelErr        float64 // worst relative L2 error of the logits
	Tol              float64
	GreedyMatched    int // greedy tokens that agreed before the first disagreement
	GreedyWanted     int
	NearTies         int     // of those, picks that differed only within a near-tie (lossy kinds)
	PrefillTokens    int     // tokens of the prefill check (the whole sequence run)
	PrefillRelErr    float64 // its last logits' relative L2 error against the reference
	SampleDraws      int     // device sampling draws (sampleParams)
	SampleCandidates int     // tokens package sample could draw
	SampleTV         float64 // total variation between the draws and package sample's distribution
	SampleOutside    int     // draws of tokens package sample could not draw
	ArgmaxMismatches int     // steps where the device argmax differed from the argmax of the device logits
	// The many-row step (selftest_rows.go): prefills of selfPrefillLens
	// tokens, every position of the longest against the lone decode, and
	// batches of selfBatchSizes sessions.
	Prefills         []PrefillCheck
	PrefillAllTokens int
	PrefillAllRelErr float64
	Batches          []BatchCheck
	Pass             bool
	Err              error
}

func (r SelfTestResult) String() string {
	status := "PASS"
	if !r.Pass {
		status = "FAIL"
	}
	s := fmt.Sprintf("%s %s [layers %s, head %s]: %d positions, max rel err %.3g (tol %.3g)",
		status, r.Name, r.LayerKind, r.HeadKind, r.Positions, r.MaxRelErr, r.Tol)
	if r.GreedyWanted > 0 {
		s += fmt.Sprintf(", greedy %d/%d agree", r.GreedyMatched, r.GreedyWanted)
		if r.NearTies > 0 {
			s += fmt.Sprintf(" (%d near-ties)", r.NearTies)
		}
	}
	if r.PrefillTokens > 0 {
		s += fmt.Sprintf(", prefill of %d: rel err %.3g", r.PrefillTokens, r.PrefillRelErr)
	}
	if r.SampleDraws > 0 {
		s += fmt.Sprintf(", sampling: %d draws over %d candidates, TV %.3f", r.SampleDraws, r.SampleCandidates, r.SampleTV)
		if r.SampleOutside > 0 {
			s += fmt.Sprintf(" (%d outside!)", r.SampleOutside)
		}
	}
	if r.ArgmaxMismatches > 0 {
		s += fmt.Sprintf(", %d device argmax mismatches", r.ArgmaxMismatches)
	}
	s += r.rowsString()
	if r.Err != nil {
		s += ": " + r.Err.Error()
	}
	return s
}

// DefaultTolerance is the relative L2 logit error allowed for a model whose
// layer matrices run as kind layers and LM head as kind head. f32/f16
// weights run with float activations and differ from the float reference
// only by the order of sums. q8_0 products round activations per block of
// 32 as llama.cpp does, ternary layers per token to int8, BitNet's rule;
// SelfTest's reference rounds them the same way (stagedMatVec), but a value
// on the other side of a rounding boundary (sums in another order) moves
// the logits of random-weight models by up to a few percent, and over 30
// layers more, hence the bounds. docs/gpu-notes.md's correctness record
// has the errors measured.
func DefaultTolerance(layers, head string) float64 {
	switch {
	case layers == "ternary":
		return 0.15
	case layers == "q8_0" || head == "q8_0":
		return 0.03
	}
	return 1e-4
}

// RowsTolerance is the bound of the many-row checks (prefill chunks,
// batches) for a model whose one-token bound is tol. Prompt attention
// (mattn.cu k_pattn) multiplies f16 q, k, scores and v on tensor cores, so
// a float model, exact to the order of sums one token at a time, also
// carries f16 rounding (unit roundoff 2^-11, about 4.9e-4) through every
// layer's attention: rowsFloatTol is 8 of those units. Lossy kinds'
// bounds are already wider.
func RowsTolerance(tol float64) float64 { return max(tol, rowsFloatTol) }

const rowsFloatTol = 8.0 / 2048

// stagedMatVec is model.MatVec on the input rounded as the device's product
// of that matrix stages it (stage.cu): int8 per token for ternary layers,
// per block of 32 for q8_0, as it is for f32 and f16. The reference then
// rounds where the device does, so DefaultTolerance's bounds measure the
// device's arithmetic, not the roundings themselves.
func stagedMatVec(w *model.Weights, layers, head kind) func(out []float32, t *model.Tensor, x []float32) {
	var buf []float32
	return func(out []float32, t *model.Tensor, x []float32) {
		k := layers
		if t == &w.Output {
			k = head
		}
		if k == kindTernary || k == kindQ8 {
			buf = append(buf[:0], x...)
			block := len(buf)
			if k == kindQ8 {
				block = 32
			}
			for b := 0; b < len(buf); b += block {
				roundInt8(buf[b:min(b+block, len(buf))], k == kindTernary)
			}
			x = buf
		}
		matVecRows(out, t, x)
	}
}

// matVecRows is model.MatVec over row ranges of a big matrix on every CPU:
// each output row is the same sum, so the result is bit for bit
// model.MatVec's, in a fraction of the time (the many-row checks run the
// reference over hundreds of positions).
func matVecRows(out []float32, t *model.Tensor, x []float32) {
	workers := runtime.GOMAXPROCS(0)
	rb, err := t.Type.RowBytes(t.Cols)
	if workers == 1 || err != nil || t.Rows*t.Cols < 1<<18 {
		model.MatVec(out, t, x)
		return
	}
	per := (len(out) + workers - 1) / workers
	var wg sync.WaitGroup
	for a := 0; a < len(out); a += per {
		b := min(a+per, len(out))
		sub := *t
		sub.Rows, sub.Data = b-a, t.Data[a*rb:b*rb]
		wg.Add(1)
		go func() {
			defer wg.Done()
			model.MatVec(out[a:b], &sub, x)
		}()
	}
	wg.Wait()
}

// roundInt8 rounds x in place to the int8 grid of its largest magnitude,
// as stage.cu does: scale amax/127, round half to even; a ternary product's
// amax is at least 1e-5.
func roundInt8(x []float32, ternary bool) {
	var am float32
	for _, v := range x {
		am = max(am, float32(math.Abs(float64(v))))
	}
	if ternary {
		am = max(am, 1e-5)
	}
	if am == 0 {
		return
	}
	d := am * (1.0 / 127)
	for i, v := range x {
		x[i] = float32(math.RoundToEven(float64(v/d))) * d
	}
}

// SelfTest runs one case on the GPU and the reference forward pass on the
// CPU and compares them.
func SelfTest(c SelfTestCase) SelfTestResult {
	res := SelfTestResult{Name: c.Name, GreedyWanted: c.Greedy}
	if len(c.Prompt) == 0 {
		res.Err = fmt.Errorf("cuda: selftest %s: empty prompt", c.Name)
		return res
	}
	m, err := load(c.Weights, c.Opts)
	if err != nil {
		res.Err = err
		return res
	}
	defer m.Close()
	res.LayerKind, res.HeadKind = m.Kinds()
	res.Device = m.Info().Name
	res.Tol = c.Tol
	if res.Tol == 0 {
		res.Tol = DefaultTolerance(res.LayerKind, res.HeadKind)
	}
	ctx := len(c.Prompt) + max(c.Greedy-1, 0) // the last greedy token needs no step
	s, err := m.newSession(ctx)
	if err != nil {
		res.Err = err
		return res
	}
	defer s.Close()
	ref := model.NewReference(c.Weights, ctx)
	ref.SetMatVec(stagedMatVec(c.Weights, m.dims.WK, m.dims.HK))
	got := make([]float32, c.Weights.Vocab)
	// The prompt, then greedy continuation: at every position the logits
	// are compared, and from the prompt's last position on, the device's
	// argmax is the next token. Where it differs from the reference's, a
	// lossy kind passes only on a near-tie its measured error explains (two
	// logits swap only when the error reaches half their gap), and both go
	// on with the device's token; exact kinds must pick the same token.
	lossy := res.Tol > DefaultTolerance("f32", "f32")
	next := c.Prompt[0]
	seq := make([]int32, 0, ctx) // every token run, for the prefill check
	var wantEnd []float32        // the reference's logits at the last position
	for pos := 0; pos < ctx; pos++ {
		tok := next
		if pos < len(c.Prompt) {
			tok = c.Prompt[pos]
		}
		if err := s.Decode(tok, got); err != nil {
			res.Err = fmt.Errorf("position %d: %w", pos, err)
			return res
		}
		want := ref.Forward(tok, pos)
		if want == nil {
			res.Err = fmt.Errorf("position %d: reference rejected token %d", pos, tok)
			return res
		}
		seq = append(seq, tok)
		wantEnd = append(wantEnd[:0], want...)
		e := relErr(got, want)
		if math.IsNaN(e) || e > res.MaxRelErr || math.IsNaN(res.MaxRelErr) {
			res.MaxRelErr = e
		}
		res.Positions++
		dev := s.lastArgmax()
		if dev != sample.Argmax(got) {
			res.ArgmaxMismatches++
		}
		if pos < len(c.Prompt)-1 || c.Greedy == 0 {
			continue
		}
		if r := sample.Argmax(want); dev != r {
			if !lossy || float64(want[r]-want[dev]) > 2*maxAbsDiff(got, want) {
				break
			}
			res.NearTies++
		}
		res.GreedyMatched++
		next = dev
	}
	// The same sequence again as one prefill (batches of prefillBatch
	// tokens): the last position's logits against the reference's.
	ps, err := m.newSession(ctx)
	if err != nil {
		res.Err = err
		return res
	}
	defer ps.Close()
	if err := ps.Prefill(seq, got); err != nil {
		res.Err = fmt.Errorf("prefill of %d tokens: %w", len(seq), err)
		return res
	}
	res.PrefillTokens = len(seq)
	res.PrefillRelErr = relErr(got, wantEnd)
	if err := sampleCheck(ps, seq, got, &res); err != nil {
		res.Err = fmt.Errorf("device sampling: %w", err)
		return res
	}
	if !m.manyRows {
		// the many-row step is off (Options.Rows): nothing of it to check
	} else if err := rowsSelfTest(c, m, seq, &res); err != nil {
		res.Err = fmt.Errorf("many-row step: %w", err)
		return res
	}
	res.Pass = res.passes(m.manyRows)
	return res
}

// passes tells whether every check of r passed; manyRows: the many-row
// step was on, so its checks ran (and the prompt's prefill went through
// it, to be judged at its bound).
func (r SelfTestResult) passes(manyRows bool) bool {
	rowsTol, prefillTol := RowsTolerance(r.Tol), r.Tol
	if manyRows {
		prefillTol = rowsTol
	}
	return r.Err == nil && !math.IsNaN(r.MaxRelErr) && r.MaxRelErr <= r.Tol && (!manyRows || r.rowsPass(rowsTol)) &&
		r.GreedyMatched == r.GreedyWanted && r.ArgmaxMismatches == 0 &&
		!math.IsNaN(r.PrefillRelErr) && r.PrefillRelErr <= prefillTol &&
		r.SampleOutside == 0 && r.SampleTV <= sampleMaxTV
}

// The device sampling check: sampleDraws draws under sampleParams, each
// with its own seed, from the logits of the sequence's last position.
// Their frequencies must match package sample's distribution for the same
// logits and history: no draw outside it, and a total variation distance
// at most sampleMaxTV (sampling noise alone is about 0.04 for 40 equally
// likely tokens at this count).
const (
	sampleDraws = 3000
	sampleMaxTV = 0.1
)

var sampleParams = sample.Params{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.02, RepeatPenalty: 1.3, RepeatLastN: 16}

func sampleCheck(s *Session, seq []int32, logits []float32, res *SelfTestResult) error {
	last := len(seq) - 1
	// The draws come from decode steps at the last position, so the
	// distribution is taken from a decode step's logits there (decode may
	// run other kernels than the prefill that filled logits, rounding
	// differently, which can move a token across the top-p edge).
	if err := s.Rewind(last); err != nil {
		return err
	}
	if err := s.Decode(seq[last], logits); err != nil {
		return err
	}
	host, err := sample.New(len(logits), sampleParams)
	if err != nil {
		return err
	}
	for _, t := range seq {
		host.Accept(t)
	}
	ids, probs, err := host.Distribution(logits)
	if err != nil {
		return err
	}
	draws := make([]int32, 0, sampleDraws)
	for i := range sampleDraws {
		if err := s.Rewind(last); err != nil {
			return err
		}
		p := sampleParams
		p.Seed = uint64(i)
		ok, err := s.SetSampling(p, seq[:last])
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("parameters %+v not taken by the device", p)
		}
		id, err := s.DecodeSample(seq[last])
		if err != nil {
			return err
		}
		draws = append(draws, id)
	}
	res.SampleTV, res.SampleOutside = drawStats(draws, ids, probs)
	res.SampleDraws, res.SampleCandidates = sampleDraws, len(ids)
	return nil
}

// drawStats compares draws with the distribution of ids (probabilities
// probs): the total variation distance between the draws' frequencies and
// it, and how many draws fell outside it.
func drawStats(draws, ids []int32, probs []float32) (tv float64, outside int) {
	want := make(map[int32]float64, len(ids))
	for i, id := range ids {
		want[id] = float64(probs[i])
	}
	got := make(map[int32]float64, len(ids))
	for _, id := range draws {
		if _, in := want[id]; !in {
			outside++
		}
		got[id] += 1 / float64(len(draws))
	}
	for id, w := range want {
		tv += math.Abs(got[id]-w) / 2
	}
	for id, g := range got {
		if _, in := want[id]; !in {
			tv += g / 2
		}
	}
	return tv, outside
}

func maxAbsDiff(a, b []float32) float64 {
	var m float64
	for i := range b {
		m = max(m, math.Abs(float64(a[i])-float64(b[i])))
	}
	return m
}

// lastArgmax is the device argmax of the last step.
func (s *Session) lastArgmax() int32 {
	return pinnedInt32(s.pinned, 2)
}

func relErr(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i]) - float64(want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}
