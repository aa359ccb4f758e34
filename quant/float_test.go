package quant

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

func TestF16Table(t *testing.T) {
	p := func(e int) float32 { return float32(math.Ldexp(1, e)) }
	for _, c := range []struct {
		f float32
		h uint16
	}{
		{0, 0x0000},
		{float32(math.Copysign(0, -1)), 0x8000},
		{1, 0x3c00},
		{-2, 0xc000},
		{0.5, 0x3800},
		{65504, 0x7bff},               // largest finite
		{65519.996, 0x7bff},           // just below the rounding midpoint
		{65520, 0x7c00},               // midpoint rounds to even: Inf
		{1e10, 0x7c00},                // overflow
		{-1e10, 0xfc00},               // negative overflow
		{p(-14), 0x0400},              // smallest normal
		{p(-24), 0x0001},              // smallest subnormal
		{p(-25), 0x0000},              // half the smallest subnormal: tie to even 0
		{p(-25) * 1.5, 0x0001},        // above the tie
		{p(-24) * 1.5, 0x0002},        // tie between 1 and 2 units: even 2
		{p(-24) * 2.5, 0x0002},        // tie between 2 and 3 units: even 2
		{p(-14) - p(-25), 0x0400},     // rounds up into the smallest normal
		{p(-14) - p(-24), 0x03ff},     // largest subnormal
		{1 + p(-11), 0x3c00},          // tie: even mantissa 0
		{1 + 3*p(-11), 0x3c02},        // tie: even mantissa 2
		{1 + p(-11) + p(-20), 0x3c01}, // above the tie
		{2047.5, 0x6800},              // ties between 2047 and 2048: 2048 (even)
		{p(-140), 0x0000},             // float32 subnormal
		{-p(-140), 0x8000},
		{float32(math.Inf(1)), 0x7c00},
		{float32(math.Inf(-1)), 0xfc00},
	} {
		if got := F32ToF16(c.f); got != c.h {
			t.Errorf("F32ToF16(%g) = %#04x, want %#04x", c.f, got, c.h)
		}
	}
	if h := F32ToF16(float32(math.NaN())); h&0x7c00 != 0x7c00 || h&0x3ff == 0 {
		t.Errorf("F32ToF16(NaN) = %#04x, not a NaN", h)
	}
	if f := F16ToF32(0x7e00); !math.IsNaN(float64(f)) {
		t.Errorf("F16ToF32(0x7e00) = %g, want NaN", f)
	}
	for _, c := range []struct {
		h uint16
		f float32
	}{
		{0x0001, p(-24)}, {0x03ff, p(-14) - p(-24)}, {0x0400, p(-14)}, {0x3c00, 1},
		{0xc000, -2}, {0x7bff, 65504}, {0x7c00, float32(math.Inf(1))}, {0x8000, float32(math.Copysign(0, -1))},
	} {
		if got := F16ToF32(c.h); got != c.f || math.Signbit(float64(got)) != math.Signbit(float64(c.f)) {
			t.Errorf("F16ToF32(%#04x) = %g, want %g", c.h, got, c.f)
		}
	}
}

// Every binary16 value survives the round trip through float32.
func TestF16Exhaustive(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := F16ToF32(h)
		if h&0x7c00 == 0x7c00 && h&0x3ff != 0 {
			if !math.IsNaN(float64(f)) || F32ToF16(f)&0x7fff <= 0x7c00 {
				t.Fatalf("NaN %#04x -> %g -> %#04x", h, f, F32ToF16(f))
			}
			continue
		}
		if back := F32ToF16(f); back != h {
			t.Fatalf("%#04x -> %g -> %#04x", h, f, back)
		}
	}
}

// refF32ToF16 rounds by searching the sorted finite binary16 values in
// float64: nearest, ties to the even encoding, Inf from 65520 up.
func refF32ToF16(f float32, finite []float64) uint16 {
	x := math.Abs(float64(f))
	sign := uint16(0)
	if math.Signbit(float64(f)) {
		sign = 0x8000
	}
	if x >= 65520 {
		return sign | 0x7c00
	}
	i := sort.SearchFloat64s(finite, x) // finite[i] >= x
	if finite[i] == x {
		return sign | uint16(i)
	}
	lo, hi := finite[i-1], finite[i]
	switch {
	case x-lo < hi-x:
		return sign | uint16(i-1)
	case x-lo > hi-x:
		return sign | uint16(i)
	case (i-1)%2 == 0:
		return sign | uint16(i-1)
	}
	return sign | uint16(i)
}

func TestF32ToF16Random(t *testing.T) {
	finite := make([]float64, 0x7c00) // index = encoding of the positive value
	for i := range finite {
		finite[i] = float64(F16ToF32(uint16(i)))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	n := 300000
	if testing.Short() {
		n = 30000
	}
	for k := 0; k < n; k++ {
		var f float32
		switch k % 3 {
		case 0: // any bit pattern in the binary16 range and around it
			exp := uint32(100 + rng.IntN(45))
			f = math.Float32frombits(rng.Uint32()&0x807fffff | exp<<23)
		case 1: // exact midpoints between neighbours
			i := rng.IntN(0x7bff)
			f = float32((finite[i] + finite[i+1]) / 2)
		default: // one float32 ulp around midpoints
			i := rng.IntN(0x7bff)
			m := float32((finite[i] + finite[i+1]) / 2)
			f = math.Nextafter32(m, float32(math.Inf(2*(k%2)-1)))
		}
		if got, want := F32ToF16(f), refF32ToF16(f, finite); got != want {
			t.Fatalf("F32ToF16(%g [%#08x]) = %#04x, want %#04x", f, math.Float32bits(f), got, want)
		}
	}
}

func TestBF16(t *testing.T) {
	for _, c := range []struct {
		f float32
		h uint16
	}{
		{1, 0x3f80},
		{-2, 0xc000},
		{1 + 1.0/256, 0x3f80},             // tie: even
		{1 + 3.0/256, 0x3f82},             // tie: even (up)
		{1 + 1.0/256 + 1.0/65536, 0x3f81}, // above the tie
		{math.MaxFloat32, 0x7f80},         // rounds to Inf
		{float32(math.Inf(-1)), 0xff80},
		{1e-40, 0x0001}, // subnormal 1e-40 ≈ 0x000116c2 -> 0x0001
	} {
		if got := F32ToBF16(c.f); got != c.h {
			t.Errorf("F32ToBF16(%g) = %#04x, want %#04x", c.f, got, c.h)
		}
	}
	if h := F32ToBF16(math.Float32frombits(0x7f800001)); h&0x7f80 != 0x7f80 || h&0x7f == 0 {
		t.Errorf("F32ToBF16(signalling NaN) = %#04x, not a NaN", h)
	}
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		if h&0x7f80 == 0x7f80 && h&0x7f != 0 {
			continue
		}
		if back := F32ToBF16(BF16ToF32(h)); back != h {
			t.Fatalf("%#04x round trip gives %#04x", h, back)
		}
	}
}
