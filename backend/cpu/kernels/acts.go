package kernels

import (
	"fmt"
	"math"
)

// QuantizeActs quantizes one token's activations to int8 by absmax, as
// BitNet b1.58 does: s = 127/max(|x|, 1e-5), q = round(x*s) (half to even,
// like PyTorch). q lies in [-127, 127]: the int8 kernels rely on never
// seeing -128. It returns s (a product of int8 dots is divided by s) and
// the sum of q (the code-offset term: sum(w*q) = sum(c*q) - sum(q) for
// ternary codes c = w+1). q must be at least as long as x.
func QuantizeActs(x []float32, q []int8) (scale float32, sum int32) {
	q = q[:len(x)]
	var m float32
	for _, v := range x {
		if v < 0 {
			v = -v
		}
		if v > m {
			m = v
		}
	}
	// NaN or Inf inputs would poison the scale; treat them as zero rather
	// than produce undefined int8s.
	if !(m <= math.MaxFloat32) {
		m = 0
	}
	if m < 1e-5 {
		m = 1e-5
	}
	scale = 127 / m
	// Adding then subtracting 1.5*2^23 rounds a float32 of magnitude below
	// 2^22 to an integer, half to even, with no call or conversion.
	const magic = 12582912
	for i, v := range x {
		f := v * scale
		if !(f >= -127 && f <= 127) { // NaN, or Inf times a tiny scale
			switch {
			case f > 127:
				f = 127
			case f < -127:
				f = -127
			default:
				f = 0
			}
		}
		r := int32((f + magic) - magic)
		q[i] = int8(r)
		sum += r
	}
	return scale, sum
}

// Acts holds a batch of tokens' activations, quantized once and read by
// every matrix whose input width is Cols. Build it with NewActs, fill it with
// Set; then any number of MatVec/MatMat calls, from any number of goroutines,
// may read it until the next Set.
type Acts struct {
	Cols   int // elements per token
	Tokens int // tokens held now

	X        []float32 // [Tokens*Cols] the float input (F16 matrices use it)
	Q        []int8    // [Tokens*Cols] int8 activations
	Scale    []float32 // [Tokens] s = 127/max|x|
	InvScale []float32 // [Tokens] 1/s
	Sum      []int32   // [Tokens] sum of Q per token
	// BlockSum [Tokens*Cols/64] sums of Q per 64 elements, for ternary rows
	// whose scale changes from block to block.
	BlockSum []int32
	// bias [Tokens*Cols/4]: -8 times the sum of each 4 consecutive Q, the
	// int32 lanes that take the +8 of 4-bit weights back out (Int8Mat's
	// nibble layout), when enabled (EnableLaneBias). Laid out as Q, a
	// token's Cols bytes apart.
	bias []int32

	lut []int16 // lookup tables for LayoutLUT, when enabled
	tl  []byte  // lookup tables for LayoutTL, when enabled
}

// NewActs returns room for up to maxTokens tokens of cols elements. cols
// must be a positive multiple of 64 (every packed layout here works in
// 64-element units); F16 matrices of other widths use their own MatVecF32.
// Without the assembly kernels it also enables the LUT tables, which
// LayoutAuto then uses.
func NewActs(cols, maxTokens int) (*Acts, error) {
	if cols <= 0 || cols%64 != 0 {
		return nil, fmt.Errorf("kernels: activation width %d is not a positive multiple of 64", cols)
	}
	if maxTokens <= 0 || maxTokens > 1<<16 || cols > 1<<24 {
		return nil, fmt.Errorf("kernels: activation batch %d x %d out of range", maxTokens, cols)
	}
	n := cols * maxTokens
	a := &Acts{
		Cols:     cols,
		X:        make([]float32, n),
		Q:        make([]int8, n),
		Scale:    make([]float32, maxTokens),
		InvScale: make([]float32, maxTokens),
		Sum:      make([]int32, maxTokens),
		BlockSum: make([]int32, n/64),
	}
	if !useAVX2 {
		a.EnableLUT() // LayoutAuto picks LayoutLUT then
	}
	return a, nil
}

// MaxTokens is the batch size the Acts was made for.
func (a *Acts) MaxTokens() int { return len(a.Scale) }

// EnableLUT makes Set also build the lookup tables LayoutLUT and LayoutTL
// matrices read (81 int16 per 4 elements, and 16 bytes per element, per
// token). Call it before Set. Without them those layouts still work, slower.
func (a *Acts) EnableLUT() {
	if a.lut == nil {
		a.lut = make([]int16, len(a.Q)/4*lutEntries)
		a.tl = make([]byte, len(a.Q)*16)
	}
}

// Set quantizes len(x)/Cols tokens (x holds them one after another). It
// panics when x is not a whole number of tokens or more than MaxTokens, like
// a slice index out of range: that is a bug in the caller.
func (a *Acts) Set(x []float32) {
	t := len(x) / a.Cols
	if t*a.Cols != len(x) || t > a.MaxTokens() {
		panic(fmt.Sprintf("kernels: Acts.Set: %d values is not a whole batch of up to %d tokens of %d", len(x), a.MaxTokens(), a.Cols))
	}
	a.Tokens = t
	copy(a.X, x)
	nb := a.Cols / 64
	for i := 0; i < t; i++ {
		q := a.Q[i*a.Cols : (i+1)*a.Cols]
		s, sum := quantizeToken(a.X[i*a.Cols:(i+1)*a.Cols], q, a.BlockSum[i*nb:(i+1)*nb])
		a.Scale[i], a.InvScale[i], a.Sum[i] = s, 1/s, sum
		if a.bias != nil {
			setBias(a.bias[i*a.Cols/4:(i+1)*a.Cols/4], q)
		}
		if a.lut != nil {
			buildLUT(a.lut[i*a.Cols/4*lutEntries:(i+1)*a.Cols/4*lutEntries], q)
			buildTL(a.tl[i*a.Cols*16:(i+1)*a.Cols*16], q)
		}
	}
}

// quantizeToken is QuantizeActs for a multiple of 64 values that also
// writes each 64's sum; the assembly gives the same bytes as the Go code.
func quantizeToken(x []float32, q []int8, bsum []int32) (scale float32, sum int32) {
	if useAVX2 {
		m, nan := absMax(&x[0], len(x))
		if nan == 0 && m <= math.MaxFloat32 { // else let the Go code sort it out
			m = max(m, 1e-5)
			scale = 127 / m
			quantI8(&x[0], len(x), scale, &q[0], &bsum[0])
			for _, b := range bsum {
				sum += b
			}
			return scale, sum
		}
	}
	scale, sum = QuantizeActs(x, q)
	for b := range bsum {
		var s int32
		for _, v := range q[b*64 : b*64+64] {
			s += int32(v)
		}
		bsum[b] = s
	}
	return scale, sum
}

// EnableLaneBias makes Set also write the lane biases the products of a
// 4-bit matrix read (NeedsLaneBias). Call it before Set.
func (a *Acts) EnableLaneBias() {
	if a.bias == nil {
		a.bias = make([]int32, len(a.Q)/4)
	}
}

// NeedsLaneBias reports whether m's products read the activations' lane
// biases (Acts.EnableLaneBias): a Q4_0 matrix kept in 4 bits.
func NeedsLaneBias(m Matrix) bool {
	im, ok := m.(*Int8Mat)
	return ok && im.nib != nil
}

// setBias writes the lane biases of one token's activations q (see
// Acts.bias).
func setBias(bias []int32, q []int8) {
	if useAVX2 {
		nibbleBias(&q[0], len(q), &bias[0])
		return
	}
	for l := range bias {
		v := q[4*l : 4*l+4]
		bias[l] = -8 * (int32(v[0]) + int32(v[1]) + int32(v[2]) + int32(v[3]))
	}
}

// token returns token i's int8 activations.
func (a *Acts) token(i int) []int8 { return a.Q[i*a.Cols : (i+1)*a.Cols] }
