package cuda

import (
	"fmt"
	"math"
	"strings"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/sample"
)

// The many-row step's self-test (issue 17 item 6): prefill at
// selfPrefillLens tokens and batched decode of selfBatchSizes sessions at
// mixed positions, each against the reference forward pass.
var (
	selfPrefillLens = []int{1, 17, 64, 512}
	selfBatchSizes  = []int{1, 3, 16, 64}
)

// selfBatchSteps is the decode steps each batch takes.
const selfBatchSteps = 4

// selfRefBudget bounds the multiply-adds of the reference forward pass the
// many-row checks run (about a minute on 16 cores): positions past it are
// compared with the GPU's own lone decode step instead, itself checked
// against the reference at the positions before (a 2B model gets ~80
// reference positions, SmolLM-135M all 512).
const selfRefBudget = 2e11

// PrefillCheck is one prefill of the self-test.
type PrefillCheck struct {
	Tokens  int
	RelErr  float64 // the last position's logits against Against's
	Against string  // "reference", or "decode" past the reference's budget
}

// BatchCheck is one batch size of the self-test: Sessions sessions at
// mixed positions, selfBatchSteps steps, each fed the same tokens as a
// twin decoded alone (the lone decode step).
type BatchCheck struct {
	Sessions int
	Steps    int
	// MaxRelErr is the worst relative error of a session's logits
	// (DecodeBatch) against the reference.
	MaxRelErr float64
	// AloneRelDiff is the worst relative difference between a session's
	// batched logits and its twin's lone decode logits (other kernels:
	// the same integer products, floats summed in another order).
	AloneRelDiff float64
	// Greedy counts the batch's device picks (DecodeBatchSample, no
	// sampler: the argmax) equal to the twin's lone device argmax, of
	// GreedyWanted; NearTies those that differed within a near-tie the
	// measured difference explains.
	Greedy, GreedyWanted, NearTies int
	// PickMismatches counts picks that differ from the argmax of the same
	// step's DecodeBatch logits (the same rows kernels: must be none).
	PickMismatches int
	// Invariance counts steps where session 0's logits differed in any bit
	// from its logits in a batch of one (batch invariance).
	Invariance int
}

func (p PrefillCheck) String() string {
	return fmt.Sprintf("%d: %.3g vs %s", p.Tokens, p.RelErr, p.Against)
}

func (b BatchCheck) String() string {
	s := fmt.Sprintf("%d sessions: rel err %.3g, alone diff %.3g, greedy %d/%d", b.Sessions, b.MaxRelErr, b.AloneRelDiff, b.Greedy, b.GreedyWanted)
	if b.NearTies > 0 {
		s += fmt.Sprintf(" (%d near-ties)", b.NearTies)
	}
	if b.PickMismatches > 0 {
		s += fmt.Sprintf(", %d picks not the logits' argmax!", b.PickMismatches)
	}
	if b.Invariance > 0 {
		s += fmt.Sprintf(", %d steps not batch-invariant!", b.Invariance)
	}
	return s
}

// rowsString is the many-row checks' part of SelfTestResult.String.
func (r SelfTestResult) rowsString() string {
	var parts []string
	if len(r.Prefills) > 0 {
		var p []string
		for _, c := range r.Prefills {
			p = append(p, c.String())
		}
		parts = append(parts, "prefills "+strings.Join(p, ", "))
	}
	if r.PrefillAllTokens > 0 {
		parts = append(parts, fmt.Sprintf("every position of %d against decode %.3g", r.PrefillAllTokens, r.PrefillAllRelErr))
	}
	for _, b := range r.Batches {
		parts = append(parts, "batch of "+b.String())
	}
	if len(parts) == 0 {
		return ""
	}
	return fmt.Sprintf("; many-row checks (tol %.3g): ", RowsTolerance(r.Tol)) + strings.Join(parts, "; ")
}

// rowsPass tells whether the many-row checks passed at tolerance tol.
func (r SelfTestResult) rowsPass(tol float64) bool {
	bad := func(e float64) bool { return math.IsNaN(e) || e > tol }
	for _, p := range r.Prefills {
		if bad(p.RelErr) {
			return false
		}
	}
	if r.PrefillAllTokens > 0 && bad(r.PrefillAllRelErr) {
		return false
	}
	for _, b := range r.Batches {
		if bad(b.MaxRelErr) || bad(b.AloneRelDiff) || b.Greedy != b.GreedyWanted || b.PickMismatches > 0 || b.Invariance > 0 {
			return false
		}
	}
	return len(r.Prefills) == len(selfPrefillLens) && len(r.Batches) == len(selfBatchSizes)
}

// macsPerToken is the multiply-adds of one position's matrix products.
func macsPerToken(c *model.Config) float64 {
	qd, kvd := c.QDim(), c.KVDim()
	layer := c.Dim*(2*qd+2*kvd) + 3*c.FFNDim*c.Dim
	return float64(c.Layers*layer + c.Vocab*c.Dim)
}

// selfSequence is the many-row checks' tokens: seq, then the counting
// sequence (37i+5 mod vocab) up to n.
func selfSequence(seq []int32, n, vocab int) []int32 {
	long := append([]int32(nil), seq[:min(len(seq), n)]...)
	for i := len(long); i < n; i++ {
		long = append(long, int32((37*i+5)%vocab))
	}
	return long
}

// rowsSelfTest runs the many-row checks of case c on m into res: the
// reference forward over the check's sequence (as far as selfRefBudget
// allows), a lone decode over all of it, prefills of selfPrefillLens, and
// batches of selfBatchSizes.
func rowsSelfTest(c SelfTestCase, m *Model, seq []int32, res *SelfTestResult) error {
	w, v := c.Weights, m.cfg.Vocab
	maxLen := selfPrefillLens[len(selfPrefillLens)-1]
	long := selfSequence(seq, maxLen, v)
	refLen := min(maxLen, max(selfBatchSteps+2, int(selfRefBudget/macsPerToken(&m.cfg))))

	// The positions whose reference logits are kept: each prefill's last
	// and every batch step's.
	need := map[int]bool{}
	for _, n := range selfPrefillLens {
		need[n-1] = true
	}
	maxPrefix := refLen - selfBatchSteps
	for i := range selfBatchSizes[len(selfBatchSizes)-1] {
		for k := range selfBatchSteps {
			need[batchPrefix(i, maxPrefix)+k] = true
		}
	}
	ref := model.NewReference(w, refLen)
	ref.SetMatVec(stagedMatVec(w, m.dims.WK, m.dims.HK))
	want := map[int][]float32{}
	for pos := range refLen {
		l := ref.Forward(long[pos], pos)
		if l == nil {
			return fmt.Errorf("reference rejected token %d at %d", long[pos], pos)
		}
		if need[pos] {
			want[pos] = append([]float32(nil), l...)
		}
	}

	// Every position of the longest prefill (PrefillLogits: the LM head in
	// groups), against a lone decode of the same tokens; the decode's
	// logits past the reference stand in for it.
	ps, err := m.newSession(maxLen)
	if err != nil {
		return err
	}
	defer ps.Close()
	all := make([]float32, maxLen*v)
	if err := ps.PrefillLogits(long, all); err != nil {
		return fmt.Errorf("prefill of %d tokens with every position's logits: %w", maxLen, err)
	}
	ds, err := m.newSession(maxLen)
	if err != nil {
		return err
	}
	defer ds.Close()
	got := make([]float32, v)
	for pos, t := range long {
		if err := ds.Decode(t, got); err != nil {
			return fmt.Errorf("decode at %d: %w", pos, err)
		}
		if e := relErr(all[pos*v:(pos+1)*v], got); math.IsNaN(e) || e > res.PrefillAllRelErr || math.IsNaN(res.PrefillAllRelErr) {
			res.PrefillAllRelErr = e
		}
		if need[pos] && want[pos] == nil {
			want[pos] = append([]float32(nil), got...)
		}
	}
	res.PrefillAllTokens = maxLen

	for _, n := range selfPrefillLens {
		s, err := m.newSession(n)
		if err != nil {
			return err
		}
		err = s.Prefill(long[:n], got)
		s.Close()
		if err != nil {
			return fmt.Errorf("prefill of %d tokens: %w", n, err)
		}
		against := "reference"
		if n > refLen {
			against = "decode"
		}
		res.Prefills = append(res.Prefills, PrefillCheck{Tokens: n, RelErr: relErr(got, want[n-1]), Against: against})
	}

	var inv [][]float32 // session 0's logits at each step in a batch of one
	for _, size := range selfBatchSizes {
		b, err := batchCheck(m, long, want, size, maxPrefix, res.Tol > DefaultTolerance("f32", "f32"), &inv)
		if err != nil {
			return fmt.Errorf("batch of %d: %w", size, err)
		}
		res.Batches = append(res.Batches, b)
	}
	return nil
}

// batchPrefix is the positions session i of a batch check has before its
// steps: mixed, in [0, maxPrefix).
func batchPrefix(i, maxPrefix int) int { return (37*i + 5) % max(maxPrefix, 1) }

// batchCheck runs one batch size: three sets of size sessions with the
// same prefixes, fed the same tokens: a (DecodeBatch: logits), b
// (DecodeBatchSample, the argmax) and alone (each its lone decode step).
// Session 0's logits are compared bit for bit with *inv, its logits in a
// batch of one (the first size run).
func batchCheck(m *Model, long []int32, want map[int][]float32, size, maxPrefix int, lossy bool, inv *[][]float32) (BatchCheck, error) {
	bc := BatchCheck{Sessions: size, Steps: selfBatchSteps}
	v := m.cfg.Vocab
	sets := make([][]*Session, 3)
	defer func() {
		for _, set := range sets {
			for _, s := range set {
				s.Close()
			}
		}
	}()
	for i := range size {
		p := batchPrefix(i, maxPrefix)
		ctx := p + selfBatchSteps + (i%4)*37 // sessions of different contexts (RoPE tables)
		for k := range sets {
			s, err := m.newSession(ctx)
			if err != nil {
				return bc, err
			}
			sets[k] = append(sets[k], s)
			if err := s.Prefill(long[:p], nil); err != nil {
				return bc, err
			}
		}
	}
	sa, sb := make([]backend.Session, size), make([]backend.Session, size)
	toks, next := make([]int32, size), make([]int32, size)
	logits := make([][]float32, size)
	order := make([]int, size) // session i runs at row order[i]
	for i := range logits {
		logits[i] = make([]float32, v)
	}
	alone := make([]float32, v)
	for k := range selfBatchSteps {
		for i := range size {
			order[i] = (i + k*7) % size // session 0 at other rows
		}
		for i := range size {
			r := order[i]
			sa[r], sb[r] = sets[0][i], sets[1][i]
			toks[r] = long[batchPrefix(i, maxPrefix)+k]
		}
		if err := m.DecodeBatch(sa, toks, logits); err != nil {
			return bc, err
		}
		if err := m.DecodeBatchSample(sb, toks, next); err != nil {
			return bc, err
		}
		for i := range size {
			r, pos := order[i], batchPrefix(i, maxPrefix)+k
			got := logits[r]
			if e := relErr(got, want[pos]); math.IsNaN(e) || e > bc.MaxRelErr || math.IsNaN(bc.MaxRelErr) {
				bc.MaxRelErr = e
			}
			if err := sets[2][i].Decode(toks[r], alone); err != nil {
				return bc, err
			}
			diff := relErr(got, alone)
			bc.AloneRelDiff = max(bc.AloneRelDiff, diff)
			if math.IsNaN(diff) {
				bc.AloneRelDiff = diff
			}
			if next[r] != sample.Argmax(got) {
				bc.PickMismatches++
			}
			bc.GreedyWanted++
			if lone := sets[2][i].lastArgmax(); next[r] == lone {
				bc.Greedy++
			} else if lossy && float64(alone[lone]-alone[next[r]]) <= 2*maxAbsDiff(got, alone) {
				bc.Greedy++
				bc.NearTies++
			}
			if i == 0 {
				if size == selfBatchSizes[0] {
					*inv = append(*inv, append([]float32(nil), got...))
				} else if k < len(*inv) && !sameBits(got, (*inv)[k]) {
					bc.Invariance++
				}
			}
		}
	}
	return bc, nil
}

func sameBits(a, b []float32) bool {
	for i := range b {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return len(a) >= len(b)
}
