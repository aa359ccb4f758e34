package cpu

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/edgellm/edgellm/backend/cpu/kernels"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/quant"
)

// matmul is a weight matrix in whatever layout its implementation chose at
// load time. mulRows computes, for rows [r0, r1) and each of nb activation
// vectors x[b*cols:(b+1)*cols], out[b*ldo + r] = scale * W[r]·x_b. Each row
// of W is read once per call however large nb is, which is what makes
// prefill a batch. scratch is the calling worker's own buffer of at least
// cols floats. Implementations must not allocate.
//
// This is the seam where the fast kernels (package backend/cpu/kernels:
// repacked ternary rows with int8 activations) slot in per weight type.
//
// acts reports whether the product reads int8-quantized activations: the
// caller then fills a (kernels.Acts of width cols) from x before the
// operation, once for all the products that share x, and the product reads
// a instead of x and scratch. Every caller passes ldo = rows.
type matmul interface {
	rows() int
	cols() int
	acts() bool
	mulRows(out []float32, ldo int, x []float32, nb, r0, r1 int, scratch []float32, a *kernels.Acts)
	// memory calls fn with the resident bytes the products read.
	memory(fn func([]byte))
}

// newMatmul picks the implementation for a tensor's type, checking its
// shape and byte size first so that a bad tensor is an error, not a panic.
// With useKernels, types the kernels package covers are repacked for it.
func newMatmul(t *model.Tensor, rows, cols int, useKernels bool, arena *kernels.Arena) (matmul, error) {
	if t.Rows != rows || t.Cols != cols {
		return nil, fmt.Errorf("cpu: tensor %q is %dx%d, want %dx%d", t.Name, t.Rows, t.Cols, rows, cols)
	}
	if !t.Type.Supported() {
		return nil, fmt.Errorf("cpu: tensor %q: type %s not supported", t.Name, t.Type)
	}
	rb, err := t.Type.RowBytes(cols)
	if err != nil {
		return nil, fmt.Errorf("cpu: tensor %q: %w", t.Name, err)
	}
	if len(t.Data) < rb*rows {
		return nil, fmt.Errorf("cpu: tensor %q: %d bytes of data, want %d", t.Name, len(t.Data), rb*rows)
	}
	if useKernels {
		if km := newKernelMat(t, arena); km != nil {
			return km, nil
		}
	}
	scale := t.Scale // as the reference: the loader sets 1 when there is none
	if t.Type == quant.F32 {
		return &f32Mat{w: bytesAsF32(t.Data[:rb*rows]), r: rows, c: cols, scale: scale}, nil
	}
	return &dequantMat{typ: t.Type, data: t.Data, rowBytes: rb, r: rows, c: cols, scale: scale}, nil
}

// bytesAsF32 views little-endian float32 data without copying (every
// platform Go supports with CGO_ENABLED=0 that we target is little-endian).
func bytesAsF32(b []byte) []float32 {
	if len(b) == 0 {
		return nil
	}
	if uintptr(unsafe.Pointer(&b[0]))%4 != 0 {
		// Misaligned view (a GGUF with odd alignment): copy once at load.
		f := make([]float32, len(b)/4)
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), len(b)), b)
		return f
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4)
}

// f32Mat multiplies float32 weights in place, straight from the file.
type f32Mat struct {
	w     []float32
	r, c  int
	scale float32
}

func (m *f32Mat) rows() int { return m.r }
func (m *f32Mat) cols() int { return m.c }

func (m *f32Mat) acts() bool { return false }

func (m *f32Mat) memory(fn func([]byte)) {
	if len(m.w) > 0 {
		fn(unsafe.Slice((*byte)(unsafe.Pointer(&m.w[0])), 4*len(m.w)))
	}
}

func (m *f32Mat) mulRows(out []float32, ldo int, x []float32, nb, r0, r1 int, _ []float32, _ *kernels.Acts) {
	c := m.c
	for r := r0; r < r1; r++ {
		row := m.w[r*c : r*c+c]
		for b := range nb {
			out[b*ldo+r] = m.scale * dot(row, x[b*c:b*c+c])
		}
	}
}

// dequantMat holds a block-quantized matrix as it is in the file: the plain
// path for types and shapes the kernels package does not cover. A single
// vector uses quant's reference dot per row; a batch dequantizes each row
// once into the worker's scratch and dots it with every vector.
type dequantMat struct {
	typ      quant.Type
	data     []byte
	rowBytes int
	r, c     int
	scale    float32
}

func (m *dequantMat) rows() int { return m.r }
func (m *dequantMat) cols() int { return m.c }

func (m *dequantMat) acts() bool { return false }

func (m *dequantMat) memory(fn func([]byte)) {
	if n := m.rowBytes * m.r; n > 0 {
		fn(m.data[:n])
	}
}

func (m *dequantMat) mulRows(out []float32, ldo int, x []float32, nb, r0, r1 int, scratch []float32, _ *kernels.Acts) {
	c := m.c
	if nb == 1 {
		for r := r0; r < r1; r++ {
			out[r] = m.scale * quant.Dot(m.typ, m.data[r*m.rowBytes:(r+1)*m.rowBytes], x[:c])
		}
		return
	}
	row := scratch[:c]
	for r := r0; r < r1; r++ {
		m.row(r, row)
		for b := range nb {
			out[b*ldo+r] = m.scale * dot(row, x[b*c:b*c+c])
		}
	}
}

// row dequantizes row r (unscaled) into dst.
func (m *dequantMat) row(r int, dst []float32) {
	src := m.data[r*m.rowBytes : (r+1)*m.rowBytes]
	// The shape was checked at load, so Dequantize cannot fail here.
	_ = quant.Dequantize(m.typ, dst, src)
}

// getRow writes row r of t (dequantized, scaled) into dst: the embedding
// lookup.
func getRow(m matmul, r int, dst []float32) {
	switch m := m.(type) {
	case *f32Mat:
		for i, v := range m.w[r*m.c : (r+1)*m.c] {
			dst[i] = v * m.scale
		}
	case *dequantMat:
		m.row(r, dst[:m.c])
		if m.scale != 1 {
			for i := range dst[:m.c] {
				dst[i] *= m.scale
			}
		}
	case *kernelMat:
		// A tied table repacked as the LM head (see Load); its scale is
		// folded into the matrix.
		m.k.(rowReader).Row(r, dst[:m.k.Cols()])
	}
}

// rowReader is a repacked matrix that can give back a row: the embedding
// lookup of a tied table reads it instead of the file.
type rowReader interface {
	Row(r int, dst []float32)
}

// dot is the hot loop of every matrix product: four independent
// accumulators let the CPU overlap the floating-point adds.
func dot(a, b []float32) float32 {
	n := len(a)
	b = b[:n]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+8 <= n; i += 8 {
		s0 += a[i]*b[i] + a[i+4]*b[i+4]
		s1 += a[i+1]*b[i+1] + a[i+5]*b[i+5]
		s2 += a[i+2]*b[i+2] + a[i+6]*b[i+6]
		s3 += a[i+3]*b[i+3] + a[i+7]*b[i+7]
	}
	for ; i < n; i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// matTask runs up to three matmuls that share their input (Q, K and V;
// gate and up) as one pool operation, so they cost one synchronisation.
// Each worker owns a contiguous range of rows of each matrix (split) and
// reads it front to back in chunks; a worker done with its own chunks
// takes the others' from their ends. The threads of a small shared
// machine do not run at the same speed (one is often held off its core
// for a while), and a fixed split made the faster one wait for the slower
// one's share (docs/cpu-notes.md); stealing from the end keeps each
// thread's reads one sequential run but the last few chunks. A row's
// result does not depend on the worker that computes it.
type matTask struct {
	n       int
	m       [3]matmul
	out     [3][]float32 // row r of token b at out[i][b*m[i].rows()+r]
	x       []float32
	nb      int
	scratch [][]float32   // per worker
	a       *kernels.Acts // x quantized, when the products read it
	// tokenwise makes plain-path quantized rows dot each token by
	// quant.Dot, as a lone decode does, instead of dequantizing the row
	// once for the batch (which rounds differently): a batch of sessions
	// (DecodeBatch) then rounds as each session alone. The row is read
	// from memory once and from cache for the other tokens.
	tokenwise bool

	shares []share // per worker: its chunks not yet taken
	chunk  [3]int  // rows a chunk of each matrix
}

// share is a worker's untaken chunks, [front, end) of its own list, in one
// word: the owner takes from the front, other workers from the end. Each
// on its own cache line: the owner's claims touch no other worker's line.
type share struct {
	v atomic.Uint64 // front<<32 | end
	_ [56]byte
}

// take claims chunk front (fromEnd false) or end-1 of the share.
func (s *share) take(fromEnd bool) (int, bool) {
	for {
		old := s.v.Load()
		f, e := old>>32, old&0xffffffff
		if f >= e {
			return 0, false
		}
		next, j := (f+1)<<32|e, f
		if fromEnd {
			next, j = f<<32|(e-1), e-1
		}
		if s.v.CompareAndSwap(old, next) {
			return int(j), true
		}
	}
}

// chunkWeights is about the weights of a chunk: 64 KB of ternary codes,
// about 3 µs of one core's stream, so the last chunk a worker waits for
// is short, while claims (one atomic each) stay rare.
const chunkWeights = 256 << 10

func newMatTask(threads, maxCol int) *matTask {
	t := &matTask{scratch: make([][]float32, threads), shares: make([]share, threads)}
	for w := range t.scratch {
		t.scratch[w] = make([]float32, maxCol)
	}
	return t
}

// mul3 runs up to three products of x (nb tokens; nil matmuls are
// skipped) as one pool operation, quantizing x once with acts when the
// products read int8 activations.
func (t *matTask) mul3(pool *pool, acts actsSet, x []float32, nb int, w0 matmul, o0 []float32, w1 matmul, o1 []float32, w2 matmul, o2 []float32) {
	t.x, t.nb, t.n = x, nb, 0
	for _, p := range [3]struct {
		w matmul
		o []float32
	}{{w0, o0}, {w1, o1}, {w2, o2}} {
		if p.w != nil {
			t.m[t.n], t.out[t.n] = p.w, p.o
			t.n++
		}
	}
	for _, w := range t.m[:t.n] {
		if w.acts() {
			// The products share x: quantize it once for all of them.
			t.a = acts.get(w.cols())
			t.a.Set(x[:nb*w.cols()])
			break
		}
	}
	t.deal(pool.n)
	pool.run(t)
	t.m, t.out, t.x, t.a = [3]matmul{}, [3][]float32{}, nil, nil
}

// deal sets each of n workers' shares to all of its chunks (one worker
// takes its rows whole: run).
func (t *matTask) deal(n int) {
	if n == 1 {
		return
	}
	for i, m := range t.m[:t.n] {
		t.chunk[i] = max(chunkWeights/m.cols()&^3, 4)
	}
	for w := range n {
		t.shares[w].v.Store(uint64(t.chunks(w, n)))
	}
}

// chunks counts worker w's chunks.
func (t *matTask) chunks(w, n int) int {
	c := 0
	for i := range t.n {
		_, _, ci := t.own(i, w, n)
		c += ci
	}
	return c
}

// own is worker w's rows [r0, r1) of product i and how many chunks they make.
func (t *matTask) own(i, w, n int) (r0, r1, chunks int) {
	r0, r1 = split(t.m[i].rows(), w, n)
	return r0, r1, (r1 - r0 + t.chunk[i] - 1) / t.chunk[i]
}

func (t *matTask) run(w, n int) {
	if n == 1 {
		for i := range t.n {
			t.rows(i, 0, 0, t.m[i].rows())
		}
		return
	}
	for {
		j, ok := t.shares[w].take(false)
		if !ok {
			break
		}
		t.chunkRun(w, w, n, j)
	}
	for d := 1; d < n; d++ {
		v := (w + d) % n
		for {
			j, ok := t.shares[v].take(true)
			if !ok {
				break
			}
			t.chunkRun(w, v, n, j)
		}
	}
}

// chunkRun computes, on worker w, chunk j of worker v's share.
func (t *matTask) chunkRun(w, v, n, j int) {
	for i := range t.n {
		r0, r1, c := t.own(i, v, n)
		if j < c {
			s := r0 + j*t.chunk[i]
			t.rows(i, w, s, min(s+t.chunk[i], r1))
			return
		}
		j -= c
	}
}

// rows computes rows [r0, r1) of product i on worker w.
func (t *matTask) rows(i, w, r0, r1 int) {
	m := t.m[i]
	if r0 >= r1 {
		return
	}
	if dm, ok := m.(*dequantMat); ok && t.tokenwise && t.nb > 1 {
		c, out := dm.c, t.out[i]
		for r := r0; r < r1; r++ {
			row := dm.data[r*dm.rowBytes : (r+1)*dm.rowBytes]
			for b := range t.nb {
				out[b*dm.r+r] = dm.scale * quant.Dot(dm.typ, row, t.x[b*c:(b+1)*c])
			}
		}
		return
	}
	m.mulRows(t.out[i], m.rows(), t.x, t.nb, r0, r1, t.scratch[w], t.a)
}

// split gives worker w of n its contiguous share of [0, total), in chunks
// of 4 rows so neighbouring workers do not write the same cache line often.
func split(total, w, n int) (int, int) {
	chunks := (total + 3) / 4
	c0 := chunks * w / n
	c1 := chunks * (w + 1) / n
	return min(c0*4, total), min(c1*4, total)
}
