package quant

import (
	"bytes"
	"math"
	"sort"
	"testing"

	"github.com/edgellm/edgellm/internal/testfiles"
)

// The tiny-random models hold the same N(0, 0.02) weights as F16 and as
// converted by llama.cpp's llama-quantize to each type. Re-quantizing the
// F16 values with llama.cpp's reference math must give the file's bytes,
// which proves our layouts equal llama.cpp's; dequantizing must give the
// F16 values within the type's error.

func loadTiny(t *testing.T, name string) map[string]testTensor {
	t.Helper()
	m, err := readTestGGUF(testfiles.Path(t, "models/tiny-random/"+name+".gguf"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func dequantTensor(t *testing.T, tt testTensor) []float32 {
	t.Helper()
	out := make([]float32, tt.elems())
	if err := Dequantize(tt.typ, out, tt.data); err != nil {
		t.Fatal(err)
	}
	return out
}

// llamaTernary is llama.cpp's rule in quantize_row_tq{1,2}_0_ref (and, as
// the files show, in its Q2_0 quantizer): scale = max|x|, codes
// lroundf(x/scale), half away from zero.
func llamaTernary(x []float32, codes []int8) float32 {
	var amax float32
	for _, v := range x {
		amax = max(amax, float32(math.Abs(float64(v))))
	}
	var id float32
	if amax != 0 {
		id = 1 / amax
	}
	for i, v := range x {
		codes[i] = int8(math.Round(float64(v * id)))
	}
	return amax
}

// maxRelRMS is the dequantization error allowed per type against the F16
// values (the ternary types are checked exactly against llamaTernary).
var maxRelRMS = map[Type]float64{Q8_0: 0.01, Q5_0: 0.08, Q4_0: 0.15, Q6_K: 0.05, TQ2_0: 0.9, TQ1_0: 0.9, Q2_0: 0.9}

func TestRealFilesMatchLlamaCpp(t *testing.T) {
	for _, arch := range []string{"llama", "bitnet"} {
		ref := loadTiny(t, "tiny-"+arch+"-f16")
		for _, suffix := range []string{"q8_0", "q4_0", "q2_0", "tq2_0", "tq1_0"} {
			file := "tiny-" + arch + "-" + suffix
			ts := loadTiny(t, file)
			names := make([]string, 0, len(ts))
			for n := range ts {
				names = append(names, n)
			}
			sort.Strings(names)
			seen := map[Type]int{}
			for _, name := range names {
				tt := ts[name]
				if tt.typ == F32 {
					continue // norms stay F32
				}
				f16, ok := ref[name]
				if !ok || f16.typ != F16 || f16.elems() != tt.elems() {
					t.Fatalf("%s: %s has no F16 twin", file, name)
				}
				seen[tt.typ]++
				checkAgainstF16(t, file+": "+name, tt, dequantTensor(t, f16))
			}
			t.Logf("%s: checked %v", file, seen)
			if len(seen) == 0 {
				t.Errorf("%s: no quantized tensors", file)
			}
		}
	}
}

func checkAgainstF16(t *testing.T, what string, tt testTensor, want []float32) {
	t.Helper()
	got := dequantTensor(t, tt)
	if e := relRMS(got, want); e > maxRelRMS[tt.typ] {
		t.Errorf("%s (%s): relative RMS error %.4f > %.4f", what, tt.typ, e, maxRelRMS[tt.typ])
	}
	mine := make([]byte, len(tt.data))
	switch tt.typ {
	case Q8_0, Q5_0, Q4_0, Q6_K:
		if err := Quantize(tt.typ, mine, want); err != nil {
			t.Fatal(err)
		}
	case TQ1_0, TQ2_0, Q2_0:
		cd := ternaryCodecs[tt.typ]
		var codes [256]int8
		for i := 0; i < len(want)/cd.block; i++ {
			c := codes[:cd.block]
			d := llamaTernary(want[i*cd.block:(i+1)*cd.block], c)
			cd.encode(mine[i*cd.bytes:], c, d)
			// The file dequantizes to exactly that approximation.
			d = F16ToF32(F32ToF16(d))
			for j, v := range c {
				if g := got[i*cd.block+j]; g != float32(v)*d {
					t.Fatalf("%s: element %d = %g, want %g", what, i*cd.block+j, g, float32(v)*d)
				}
			}
		}
		if _, err := TernaryCodes(tt.typ, tt.data, make([]int8, len(want))); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	default:
		t.Fatalf("%s: unexpected type %s", what, tt.typ)
	}
	if !bytes.Equal(mine, tt.data) {
		diff := 0
		for i := range mine {
			if mine[i] != tt.data[i] {
				diff++
			}
		}
		t.Errorf("%s (%s): our bytes differ from llama-quantize's in %d of %d", what, tt.typ, diff, len(mine))
	}
}

// ../shared has no Q5_0 file, so testdata holds 16 rows of tiny-llama-f16's
// blk.0.attn_k.weight beside llama-quantize's Q5_0 of the same file (the
// fixture's description says how it was made).
func TestQ5_0MatchesLlamaCpp(t *testing.T) {
	ts, err := readTestGGUF("testdata/q5_0-llama.gguf")
	if err != nil {
		t.Fatal(err)
	}
	f16, q5 := ts["attn_k.f16"], ts["attn_k.q5_0"]
	if f16.typ != F16 || q5.typ != Q5_0 || f16.elems() != q5.elems() || q5.elems() != 16*256 {
		t.Fatalf("fixture: %v %v, %d and %d elements", f16.typ, q5.typ, f16.elems(), q5.elems())
	}
	checkAgainstF16(t, "q5_0-llama.gguf", q5, dequantTensor(t, f16))
}
