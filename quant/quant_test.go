package quant

import (
	"bytes"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

var allSupported = []Type{F32, F16, BF16, Q8_0, Q5_0, Q4_0, Q6_K, Q4_K, TQ2_0, TQ1_0, Q2_0, I2_S, I2_S_ARM}

func gaussian(rng *rand.Rand, n int, sigma float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * sigma)
	}
	return x
}

// randomRow returns valid packed bytes of n elements of t: quantized from
// random floats where we have a quantizer, random codes with sane fp16
// scales otherwise.
func randomRow(t *testing.T, rng *rand.Rand, typ Type, n int) []byte {
	t.Helper()
	rb, err := typ.RowBytes(n)
	if err != nil {
		t.Fatal(err)
	}
	row := make([]byte, rb)
	if typ != Q4_K {
		if err := Quantize(typ, row, gaussian(rng, n, 1)); err != nil {
			t.Fatal(err)
		}
		return row
	}
	for i := range row {
		row[i] = byte(rng.Uint32())
	}
	for i := 0; i < len(row); i += q4kBlock {
		putF16(row, i, float32(rng.Float64()*0.1))
		putF16(row, i+2, float32(rng.Float64()*0.1))
	}
	return row
}

func TestRegistryMatchesTypeTable(t *testing.T) {
	for typ, ti := range types {
		_, hasKernel := kernels[typ]
		if ti.supported != hasKernel {
			t.Errorf("%s: supported=%v but kernel present=%v", typ, ti.supported, hasKernel)
		}
	}
	for typ, tc := range ternaryCodecs {
		if tc.block != typ.BlockSize() || tc.bytes != typ.BlockBytes() {
			t.Errorf("%s: codec %d/%d, type table %d/%d", typ, tc.block, tc.bytes, typ.BlockSize(), typ.BlockBytes())
		}
	}
	if len(allSupported) != len(kernels) {
		t.Errorf("test lists %d types, registry has %d", len(allSupported), len(kernels))
	}
}

// Dot must equal the float64 dot product of the dequantized row.
func TestDotMatchesDequantize(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, typ := range allSupported {
		bs := typ.BlockSize()
		for _, blocks := range []int{1, 2, 3, 7} {
			n := blocks * max(bs, 64)
			if bs == 1 {
				n = blocks*37 + 1 // odd lengths for the plain types
			}
			row := randomRow(t, rng, typ, n)
			x := gaussian(rng, n, 1)
			w := make([]float32, n)
			if err := Dequantize(typ, w, row); err != nil {
				t.Fatalf("%s: %v", typ, err)
			}
			var want, mag float64
			for i := range w {
				want += float64(w[i]) * float64(x[i])
				mag += math.Abs(float64(w[i]) * float64(x[i]))
			}
			got := Dot(typ, row, x)
			if math.Abs(float64(got)-want) > 1e-5*mag+1e-30 {
				t.Errorf("%s n=%d: Dot = %g, want %g", typ, n, got, want)
			}
		}
	}
}

// Exactly ternary inputs (codes times a per-block fp16 scale, or one scale
// per tensor for I2_S) must survive quantization bit for bit.
func TestTernaryRoundTripExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, typ := range []Type{TQ2_0, TQ1_0, Q2_0, I2_S, I2_S_ARM} {
		bs := typ.BlockSize()
		for _, blocks := range []int{1, 3, 8} {
			n := blocks * bs
			x := make([]float32, n)
			codes := make([]int8, n)
			scales := make([]float32, blocks)
			tensorScale := F16ToF32(F32ToF16(float32(0.001 + rng.Float64())))
			for b := 0; b < blocks; b++ {
				s := F16ToF32(F32ToF16(float32(0.001 + rng.Float64()*0.1)))
				if IsI2S(typ) {
					s = tensorScale
				}
				if b%4 == 1 {
					s = 0 // an all-zero block
				}
				scales[b] = s
				for j := 0; j < bs; j++ {
					c := int8(rng.IntN(3)) - 1
					if b%4 == 2 { // a lone non-zero weight
						c = 0
						if j == 5 {
							c = -1
						}
					}
					if s == 0 {
						c = 0
					}
					codes[b*bs+j] = c
					x[b*bs+j] = float32(c) * s
				}
			}
			rb, _ := typ.RowBytes(n)
			row := make([]byte, rb)
			if err := Quantize(typ, row, x); err != nil {
				t.Fatal(err)
			}
			got := make([]float32, n)
			if err := Dequantize(typ, got, row); err != nil {
				t.Fatal(err)
			}
			gc := make([]int8, n)
			gs, err := TernaryCodes(typ, row, gc)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(int8Bytes(gc), int8Bytes(codes)) {
				t.Errorf("%s n=%d: TernaryCodes differ from the input codes", typ, n)
			}
			for i := range x {
				want := x[i]
				if IsI2S(typ) {
					want = float32(codes[i]) // unscaled
				}
				if got[i] != want {
					t.Fatalf("%s n=%d: element %d = %g, want %g", typ, n, i, got[i], want)
				}
			}
			if IsI2S(typ) {
				if gs != nil {
					t.Errorf("%s: TernaryCodes returned block scales", typ)
				}
				full := make([]byte, rb+I2SScaleBytes)
				s, err := tensorScale, Quantize(typ, full, x)
				if typ == I2_S {
					s, err = QuantizeI2S(full, x)
				}
				if err != nil {
					t.Fatal(err)
				}
				rs, err := I2SScale(full, n)
				if err != nil {
					t.Fatal(err)
				}
				if s != tensorScale || rs != tensorScale || !bytes.Equal(full[:rb], row) {
					t.Errorf("I2_S: scale %g / stored %g, want %g (codes equal: %v)", s, rs, tensorScale, bytes.Equal(full[:rb], row))
				}
				continue
			}
			for b := range scales {
				if gs[b] != scales[b] {
					t.Errorf("%s: block %d scale %g, want %g", typ, b, gs[b], scales[b])
				}
			}
		}
	}
}

func int8Bytes(c []int8) []byte {
	b := make([]byte, len(c))
	for i, v := range c {
		b[i] = byte(v)
	}
	return b
}

// General inputs are ternarized by absmean; compare with a direct
// transcription of BitNet's rule.
func TestTernaryAbsmean(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, typ := range []Type{TQ2_0, TQ1_0, Q2_0, I2_S, I2_S_ARM} {
		bs := typ.BlockSize()
		n := 4 * bs
		x := gaussian(rng, n, 0.02)
		rb, _ := typ.RowBytes(n)
		row := make([]byte, rb+I2SScaleBytes)
		if !IsI2S(typ) {
			row = row[:rb]
		}
		if err := Quantize(typ, row, x); err != nil {
			t.Fatal(err)
		}
		got := make([]float32, n)
		if err := Dequantize(typ, got, row); err != nil {
			t.Fatal(err)
		}
		group := bs
		if IsI2S(typ) {
			group = n
			s, err := I2SScale(row, n)
			if err != nil {
				t.Fatal(err)
			}
			for i := range got {
				got[i] *= s
			}
		}
		for g := 0; g < n/group; g++ {
			xs := x[g*group : (g+1)*group]
			var sum float64
			for _, v := range xs {
				sum += math.Abs(float64(v))
			}
			scale := float32(sum / float64(group))
			if !IsI2S(typ) {
				scale = F16ToF32(F32ToF16(scale))
			}
			for i, v := range xs {
				c := math.Max(-1, math.Min(1, math.Round(float64(v/scale))))
				want := float32(c) * scale
				if got[g*group+i] != want {
					t.Fatalf("%s: element %d = %g, want %g (x = %g)", typ, g*group+i, got[g*group+i], want, v)
				}
			}
		}
	}
}

// Non-ternary quantizers: bounded error on Gaussian data, exact for
// values the type holds exactly.
func TestRoundTripError(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, c := range []struct {
		typ    Type
		maxErr float64
	}{
		{F32, 0}, {F16, 1e-3}, {BF16, 5e-3}, {Q8_0, 0.01}, {Q4_0, 0.15}, {Q6_K, 0.03},
	} {
		n := 1024
		x := gaussian(rng, n, 0.02)
		x[7] = 0.5 // an outlier
		rb, _ := c.typ.RowBytes(n)
		row := make([]byte, rb)
		if err := Quantize(c.typ, row, x); err != nil {
			t.Fatal(err)
		}
		got := make([]float32, n)
		if err := Dequantize(c.typ, got, row); err != nil {
			t.Fatal(err)
		}
		if e := relRMS(got, x); e > c.maxErr {
			t.Errorf("%s: relative RMS error %g > %g", c.typ, e, c.maxErr)
		}
		// Quantizing the dequantized values again gives the same bytes.
		again := make([]byte, rb)
		if err := Quantize(c.typ, again, got); err != nil {
			t.Fatal(err)
		}
		if c.typ != Q6_K && !bytes.Equal(again, row) { // Q6_K's scale search may move
			t.Errorf("%s: re-quantizing the dequantized values changed the bytes", c.typ)
		}
	}
	// All-zero blocks stay zero.
	for _, typ := range []Type{Q8_0, Q4_0, Q6_K, TQ2_0, TQ1_0, Q2_0, I2_S} {
		n := 256
		rb, _ := typ.RowBytes(n)
		row := make([]byte, rb)
		if err := Quantize(typ, row, make([]float32, n)); err != nil {
			t.Fatal(err)
		}
		got := make([]float32, n)
		if err := Dequantize(typ, got, row); err != nil {
			t.Fatal(err)
		}
		for i, v := range got {
			if v != 0 {
				t.Fatalf("%s: zero input gives %g at %d", typ, v, i)
			}
		}
	}
}

func TestErrors(t *testing.T) {
	buf := make([]byte, 1000)
	f := make([]float32, 256)
	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"unknown type", Dequantize(Type(99), f, buf), "unsupported"},
		{"unsupported type", Dequantize(Q5_K, f, buf[:176]), "unsupported"},
		{"partial block", Dequantize(Q8_0, f[:33], buf[:34]), "multiple"},
		{"short src", Dequantize(Q8_0, f[:32], buf[:33]), "need 34 bytes"},
		{"long src", Dequantize(Q8_0, f[:32], buf[:35]), "need 34 bytes"},
		{"no quantizer", Quantize(Q4_K, buf[:144], f), "not implemented"},
		{"quantize short dst", Quantize(TQ2_0, buf[:65], f), "need 66 bytes"},
	} {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, c.err, c.want)
		}
	}
	if v := Dot(Q8_0, buf[:33], f[:32]); !math.IsNaN(float64(v)) {
		t.Errorf("Dot with a short row = %g, want NaN", v)
	}
	if v := Dot(Type(77), buf, f); !math.IsNaN(float64(v)) {
		t.Errorf("Dot of an unknown type = %g, want NaN", v)
	}
	if _, err := I2SScale(buf[:32], 128); err == nil {
		t.Error("I2SScale: short data accepted")
	}
	if _, err := I2SScale(buf, 100); err == nil {
		t.Error("I2SScale: 100 elements accepted")
	}
	nan := make([]byte, 36)
	copy(nan[32:], []byte{0, 0, 0xc0, 0x7f})
	if _, err := I2SScale(nan, 128); err == nil {
		t.Error("I2SScale: NaN scale accepted")
	}
	if _, err := TernaryCodes(Q8_0, buf[:34], make([]int8, 32)); err == nil {
		t.Error("TernaryCodes accepted Q8_0")
	}
	if _, err := TernaryCodes(TQ2_0, buf[:60], make([]int8, 256)); err == nil {
		t.Error("TernaryCodes accepted a short row")
	}
}

// Code 3 (+2) is not ternary: TernaryCodes must refuse it, naming the element.
func TestTernaryCodesRejectsPlusTwo(t *testing.T) {
	for _, c := range []struct {
		typ  Type
		blk  []byte
		elem int
	}{
		{Q2_0, append([]byte{0, 0x3c}, append(filled(3, 0x55), append([]byte{0x75}, filled(12, 0x55)...)...)...), 3*4 + 2},
		{TQ2_0, append(append(filled(10, 0x55), append([]byte{0xd5}, filled(53, 0x55)...)...), 0, 0x3c), 32*3 + 10},
		{I2_S, append(filled(7, 0x55), append([]byte{0xd5}, filled(24, 0x55)...)...), 7},
	} {
		codes := make([]int8, c.typ.BlockSize())
		_, err := TernaryCodes(c.typ, c.blk, codes)
		want := " element " + strconv.Itoa(c.elem) + " "
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one naming%q", c.typ, err, want)
		}
	}
}

// The two I2_S layouts hold the same codes permuted within each 128
// weights, the same way in every row: x86 byte g, shift 6-2k holds element
// 32k+g; ARM byte 16b+g, shift 6-2k holds element 64b+16k+g. Reading one
// layout's bytes as the other permutes the columns and changes nothing
// else, which is why no check on one tensor's bytes can tell them apart.
func TestI2SLayoutsPermuteColumns(t *testing.T) {
	const rows, cols = 3, 256
	rng := rand.New(rand.NewPCG(11, 12))
	x := make([]float32, rows*cols)
	for i := range x {
		x[i] = float32(rng.IntN(3) - 1)
	}
	arm := make([]byte, rows*cols/4)
	if err := Quantize(I2_S_ARM, arm, x); err != nil {
		t.Fatal(err)
	}
	asX86 := make([]float32, len(x))
	if err := Dequantize(I2_S, asX86, arm); err != nil {
		t.Fatal(err)
	}
	for r := 0; r < rows; r++ {
		for e := 0; e < cols; e++ {
			c, i := e/128*128, e%128 // i = 64b+16k+g in the ARM layout
			b, k, g := i/64, i%64/16, i%16
			if got, want := asX86[r*cols+c+32*k+16*b+g], x[r*cols+e]; got != want {
				t.Fatalf("row %d: ARM element %d read as x86 element %d = %g, want %g", r, e, c+32*k+16*b+g, got, want)
			}
		}
	}
	// A known ARM block: element 0 in the high bits of byte 0, 16 next.
	b := filled(16, 0x55)
	b[0] = 0x1b // 00 01 10 11: el 0 -1, el 16 0, el 32 +1, el 48 +2
	b[15] = 0x85
	got := make([]float32, 64)
	if err := Dequantize(I2_S_ARM, got, b); err != nil {
		t.Fatal(err)
	}
	want := map[int]float32{0: -1, 16: 0, 32: 1, 48: 2, 15: 1, 31: -1, 47: 0, 63: 0, 1: 0}
	for i, w := range want {
		if got[i] != w {
			t.Errorf("ARM element %d = %g, want %g", i, got[i], w)
		}
	}
	// Id 36 is sized by either layout (64-weight rows too); the in-memory
	// type is no file's.
	if n, err := TensorBytes(I2_S, 64, 128); err != nil || n != 32+I2SScaleBytes {
		t.Errorf("TensorBytes(I2_S, 64, 128) = %d, %v; want %d", n, err, 32+I2SScaleBytes)
	}
	if I2_S_ARM.Known() || !I2_S.Known() {
		t.Errorf("Known: I2_S_ARM %v, I2_S %v; want false, true", I2_S_ARM.Known(), I2_S.Known())
	}
}

// TernaryScaler over pieces gives TernaryScale of the whole, exact ternary
// inputs included; Ternarize keeps exactly what the quantizers keep.
func TestTernaryScalerPieces(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	general := gaussian(rng, 1000, 0.02)
	exact := make([]float32, 1000)
	for i := range exact {
		exact[i] = float32(rng.IntN(3)-1) * 0.0123
	}
	for _, x := range [][]float32{general, exact, make([]float32, 10)} {
		var s TernaryScaler
		for i := 0; i < len(x); i += 300 {
			s.Add(x[i:min(i+300, len(x))])
		}
		if got, want := s.Scale(), TernaryScale(x); got != want {
			t.Errorf("pieces give %g, whole %g", got, want)
		}
	}
	if s := TernaryScale(exact); s != 0.0123 {
		t.Errorf("exact ternary scale %g, want 0.0123", s)
	}
	got := make([]float32, len(general))
	s := TernaryScale(general)
	Ternarize(got, general, s)
	for i, v := range general {
		want := float32(0)
		if r := v / s; r >= 0.5 {
			want = s
		} else if r <= -0.5 {
			want = -s
		}
		if got[i] != want {
			t.Fatalf("element %d: %g ternarized to %g, want %g", i, v, got[i], want)
		}
	}
}
