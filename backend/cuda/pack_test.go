package cuda

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/quant"
)

// xwIndex mirrors stage.cu's xw_index: the shared-memory word of int8
// word w when chunks hold wpc words and a row has nc chunks (words 4g..4g+3
// of chunk c together, so a lane loads them in one 16-byte load).
func xwIndex(w, wpc, nc int) int { return ((w%wpc)/4*nc+w/wpc)*4 + w%4 }

// ternaryDotLikeKernel computes what k_* do for one ternary row: codes
// from the packed layout, activations from the shared layout, an
// unsigned-code dp4a per 4 weights and the chunk's activation sum taken
// off once. It checks the layout contract between pack.go and the kernels.
func ternaryDotLikeKernel(packed []byte, x []int8) int32 {
	kp := len(packed) * 4
	nc := kp / 64
	sm := make([]byte, kp)
	for i := 0; i < kp; i++ {
		var q int8
		if i < len(x) {
			q = x[i]
		}
		sm[xwIndex(i>>2, 16, nc)*4+(i&3)] = byte(q)
	}
	var acc int32
	for c := 0; c < nc; c++ {
		// the chunk's 16 words, as the kernel's four 16-byte loads give them
		var xw [16][4]int8
		for g := 0; g < 4; g++ {
			for k := 0; k < 4; k++ {
				for b := 0; b < 4; b++ {
					xw[4*g+k][b] = int8(sm[((g*nc+c)*4+k)*4+b])
				}
			}
		}
		for m := range xw {
			for b := 0; b < 4; b++ {
				acc -= int32(xw[m][b])
			}
		}
		for j := 0; j < 4; j++ {
			w := binary.LittleEndian.Uint32(packed[c*16+4*j:])
			for s := 0; s < 4; s++ {
				codes := (w >> (2 * s)) & 0x03030303
				m := 4*j + s // x word of this chunk
				for b := 0; b < 4; b++ {
					acc += int32(uint8(codes>>(8*b))) * int32(xw[m][b])
				}
			}
		}
	}
	return acc
}

func TestTernaryLayout(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1, 5, 63, 64, 65, 200, 576, 1536, 2560} {
		row := make([]int8, n)
		x := make([]int8, n)
		var want int32
		for i := range row {
			row[i] = int8(rng.IntN(3) - 1)
			x[i] = int8(rng.IntN(256) - 128)
			want += int32(row[i]) * int32(x[i])
		}
		packed := make([]byte, padK(n)/4)
		putTernary(packed, row)
		if got := ternaryDotLikeKernel(packed, x); got != want {
			t.Fatalf("n=%d: kernel-order dot %d, want %d", n, got, want)
		}
	}
}

// ternaryTensor quantizes a uniform ternary matrix (values in {-a,0,a})
// as type typ.
func ternaryTensor(t *testing.T, typ quant.Type, rows, cols int, a float32, rng *rand.Rand) (*model.Tensor, []float32) {
	t.Helper()
	vals := make([]float32, rows*cols)
	for i := range vals {
		vals[i] = float32(rng.IntN(3)-1) * a
	}
	rb, err := typ.RowBytes(cols)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, rows*rb)
	scale := float32(1)
	for r := 0; r < rows; r++ {
		src := vals[r*cols : (r+1)*cols]
		if quant.IsI2S(typ) { // I2_S holds the codes; its scale is the tensor's
			src = make([]float32, cols)
			for i, v := range vals[r*cols : (r+1)*cols] {
				src[i] = v / a
			}
			scale = a
		}
		if err := quant.Quantize(typ, data[r*rb:(r+1)*rb], src); err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
	}
	return &model.Tensor{Name: "w." + typ.String(), Type: typ, Rows: rows, Cols: cols, Data: data, Scale: scale}, vals
}

func TestPackTernaryTypes(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const a = 0.0625 // exact in f16
	for _, tc := range []struct {
		typ  quant.Type
		cols int
	}{{quant.Q2_0, 576}, {quant.Q2_0, 64}, {quant.TQ2_0, 512}, {quant.TQ1_0, 256}, {quant.I2_S, 640}, {quant.I2_S_ARM, 576}} {
		rows := 7
		tn, vals := ternaryTensor(t, tc.typ, rows, tc.cols, a, rng)
		m, ok, err := packTernary(tn)
		if err != nil || !ok {
			t.Fatalf("%s: packTernary ok=%v err=%v", tc.typ, ok, err)
		}
		x := make([]int8, tc.cols)
		for i := range x {
			x[i] = int8(rng.IntN(255) - 127)
		}
		rb := m.rowBytes()
		for r := 0; r < rows; r++ {
			var want float64
			for i, q := range x {
				want += float64(vals[r*tc.cols+i]) * float64(q)
			}
			got := float64(ternaryDotLikeKernel(m.w[r*rb:(r+1)*rb], x)) * float64(m.rs[r])
			if math.Abs(got-want) > 1e-9 {
				t.Fatalf("%s row %d: %g, want %g", tc.typ, r, got, want)
			}
		}
	}
}

func TestPackTernaryRejectsNonUniform(t *testing.T) {
	// Q2_0 code 3 (+2) is not ternary.
	blk := make([]byte, 18)
	binary.LittleEndian.PutUint16(blk, quant.F32ToF16(1))
	blk[2] = 3
	tn := &model.Tensor{Name: "q2", Type: quant.Q2_0, Rows: 1, Cols: 64, Data: blk, Scale: 1}
	if _, ok, err := packTernary(tn); ok || err != nil {
		t.Fatalf("Q2_0 with +2: ok=%v err=%v, want not ok", ok, err)
	}
	// Two blocks of one row with different scales.
	two := make([]byte, 36)
	binary.LittleEndian.PutUint16(two, quant.F32ToF16(1))
	binary.LittleEndian.PutUint16(two[18:], quant.F32ToF16(2))
	two[2], two[20] = 0x02, 0x02 // one +1 weight in each block
	tn = &model.Tensor{Name: "q2b", Type: quant.Q2_0, Rows: 1, Cols: 128, Data: two, Scale: 1}
	if _, ok, err := packTernary(tn); ok || err != nil {
		t.Fatalf("mixed scales: ok=%v err=%v, want not ok", ok, err)
	}
	// Not a ternary type at all.
	if _, ok, _ := packTernary(&model.Tensor{Type: quant.F32, Rows: 1, Cols: 4, Data: make([]byte, 16)}); ok {
		t.Fatal("F32 packed as ternary")
	}
}

// denseRowLikeKernel decodes row r of a packed dense matrix as the kernels
// read it (without activation rounding).
func denseRowLikeKernel(m *hostMat, r int) []float32 {
	kp := padK(m.cols)
	out := make([]float32, kp)
	rb := m.rowBytes()
	row := m.w[r*rb : (r+1)*rb]
	for i := range out {
		switch m.kind {
		case kindF32:
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(row[4*i:]))
		case kindF16:
			out[i] = quant.F16ToF32(binary.LittleEndian.Uint16(row[2*i:]))
		case kindQ8:
			d := quant.F16ToF32(binary.LittleEndian.Uint16(m.d[(r*(kp/32)+i/32)*2:]))
			out[i] = float32(int8(row[i])) * d
		}
	}
	return out
}

func TestPackDense(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, tc := range []struct {
		src   quant.Type
		cols  int
		kind  kind
		exact bool
	}{
		{quant.F32, 172, kindF32, true}, {quant.F16, 100, kindF16, true}, {quant.Q8_0, 96, kindQ8, true},
		{quant.F32, 64, kindF16, false}, {quant.Q4_0, 256, kindQ8, false}, {quant.Q6_K, 256, kindQ8, false},
	} {
		rows := 5
		vals := make([]float32, rows*tc.cols)
		for i := range vals {
			vals[i] = float32(rng.NormFloat64())
		}
		rb, _ := tc.src.RowBytes(tc.cols)
		data := make([]byte, rows*rb)
		if err := quant.Quantize(tc.src, data, vals); err != nil {
			t.Fatal(err)
		}
		tn := &model.Tensor{Name: "d", Type: tc.src, Rows: rows, Cols: tc.cols, Data: data, Scale: 0.5}
		if err := checkTensor(tn, rows, tc.cols); err != nil {
			t.Fatal(err)
		}
		m, err := packDense(tn, tc.kind)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]float32, tc.cols)
		for r := 0; r < rows; r++ {
			if err := quant.Dequantize(tc.src, want, data[r*rb:(r+1)*rb]); err != nil {
				t.Fatal(err)
			}
			got := denseRowLikeKernel(m, r)
			for i := range got {
				var w float32
				if i < tc.cols {
					w = want[i]
				}
				tol := float32(0)
				if !tc.exact {
					tol = 0.02 * (1 + float32(math.Abs(float64(w))))
				}
				if d := got[i] - w; d > tol || d < -tol {
					t.Fatalf("%s->%s row %d col %d: %g, want %g", tc.src, tc.kind, r, i, got[i], w)
				}
			}
			if m.rs[r] != 0.5 {
				t.Fatalf("row scale %g, want the tensor's 0.5", m.rs[r])
			}
		}
	}
}

func TestCheckTensor(t *testing.T) {
	good := &model.Tensor{Name: "blk.0.attn_q.weight", Type: quant.F32, Rows: 2, Cols: 4, Data: make([]byte, 32), Scale: 1}
	if err := checkTensor(good, 2, 4); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		t          model.Tensor
		rows, cols int
	}{
		{*good, 3, 4},
		{model.Tensor{Name: "short", Type: quant.F32, Rows: 2, Cols: 4, Data: make([]byte, 31)}, 2, 4},
		{model.Tensor{Name: "odd", Type: quant.Q8_0, Rows: 1, Cols: 33, Data: make([]byte, 64)}, 1, 33},
		{model.Tensor{Name: "nan", Type: quant.F32, Rows: 1, Cols: 1, Data: make([]byte, 4), Scale: float32(math.NaN())}, 1, 1},
	} {
		err := checkTensor(&tc.t, tc.rows, tc.cols)
		if err == nil || !strings.Contains(err.Error(), tc.t.Name) {
			t.Fatalf("%s: error %v, want one naming the tensor", tc.t.Name, err)
		}
	}
}

func TestShapeMirrors(t *testing.T) {
	for _, tc := range []struct {
		k          kind
		cols, want int
	}{
		{kindTernary, 576, 16}, {kindTernary, 2560, 32}, {kindTernary, 6912, 32}, {kindTernary, 1536, 32},
		{kindTernary, 64, 1}, {kindTernary, 128, 2}, {kindTernary, 320, 8}, {kindQ8, 576, 32}, {kindQ8, 64, 4},
		{kindF32, 64, 16}, {kindF32, 8, 16}, {kindF16, 256, 32}, {kindF16, 64, 8},
	} {
		if got := threadsPerRow(tc.k, tc.cols); got != tc.want {
			t.Errorf("threadsPerRow(%s, %d) = %d, want %d", tc.k, tc.cols, got, tc.want)
		}
	}
	if stageBytes(kindTernary, 6912) != 6912 || stageBytes(kindQ8, 576) != 576+18*4 || stageBytes(kindF32, 172) != 192*4 {
		t.Error("stageBytes disagrees with common.cuh's Mat<>::SMEM")
	}
	for _, tc := range []struct{ items, tpr, maxBT, want int }{
		{6912, 32, 1024, 1024}, {6912, 32, 512, 512}, {2560, 32, 1024, 512}, {1920, 32, 1024, 256},
		{1536, 16, 1024, 256}, {12288, 32, 1024, 1024}, {12288, 32, 256, 256}, {100, 1, 1024, 256},
	} {
		if got := gemvBlock(tc.items, tc.tpr, 132, tc.maxBT); got != tc.want {
			t.Errorf("gemvBlock(%d, %d, 132, %d) = %d, want %d", tc.items, tc.tpr, tc.maxBT, got, tc.want)
		}
	}
}

func TestCacheKey(t *testing.T) {
	d := kernelDims{Dim: 64, FFN: 172, Heads: 8, KVHeads: 4, HeadDim: 8, Vocab: 512, Eps: 1e-5}
	base := cacheKey("src", d.options("sm_90"), 11080, 13000)
	d2 := d
	d2.Vocab = 513
	for _, k := range []string{
		cacheKey("src2", d.options("sm_90"), 11080, 13000),
		cacheKey("src", d.options("sm_80"), 11080, 13000),
		cacheKey("src", d2.options("sm_90"), 11080, 13000),
		cacheKey("src", d.options("sm_90"), 12000, 13000),
		cacheKey("src", d.options("sm_90"), 11080, 12080),
	} {
		if k == base {
			t.Fatal("cache key ignores a change")
		}
	}
	if cacheKey("src", d.options("sm_90"), 11080, 13000) != base {
		t.Fatal("cache key not deterministic")
	}
}

func TestNVRTCCandidates(t *testing.T) {
	t.Setenv(NVRTCEnv, "/opt/x/libnvrtc.so.99")
	c := nvrtcCandidates()
	if len(c) == 0 || c[0] != "/opt/x/libnvrtc.so.99" {
		t.Fatalf("%s not tried first: %v", NVRTCEnv, c[:min(3, len(c))])
	}
	joined := strings.Join(c, " ")
	for _, want := range []string{"libnvrtc.so.11.2", "/usr/local/cuda/lib64/libnvrtc.so"} {
		if !strings.Contains(joined, want) {
			t.Errorf("candidates lack %s", want)
		}
	}
}

// Without a driver (CI), Available must fail with an error naming what it
// looked for, never panic.
func TestAvailableWithoutDriver(t *testing.T) {
	err := Available()
	if err == nil {
		t.Skip("a CUDA driver and device are present")
	}
	msg := err.Error()
	if _, statErr := os.Stat("/dev/nvidiactl"); statErr != nil && !strings.Contains(msg, "libcuda.so.1") {
		t.Fatalf("error %q does not name libcuda.so.1", msg)
	}
	if _, err := Load(&model.Weights{}, Options{}); err == nil {
		t.Fatal("Load of empty weights succeeded")
	}
}
