package synth

import (
	"bytes"
	"math"
	"testing"

	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/quant"
)

// tiny is a preset small enough for tests, with 64-wide rows (Q2_0 only)
// and 256-wide rows (every ternary type).
var tiny = Preset{Name: "tiny", Arch: "bitnet", Dim: 256, FFN: 320, Layers: 2, Heads: 4, KVHeads: 2,
	Vocab: 96, Context: 64, RopeBase: 10000, SubNorms: true, Type: quant.TQ2_0, EmbedType: quant.Q8_0}

func write(t *testing.T, p Preset, o Options) (*model.Weights, Report) {
	t.Helper()
	var buf bytes.Buffer
	rep, err := Write(&buf, p, o)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Bytes != int64(buf.Len()) {
		t.Fatalf("report says %d bytes, wrote %d", rep.Bytes, buf.Len())
	}
	f, err := gguf.Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	w, err := model.FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	return w, rep
}

func TestTernaryExactAndDeterministic(t *testing.T) {
	for _, typ := range []quant.Type{quant.TQ2_0, quant.TQ1_0, quant.Q2_0, quant.I2_S} {
		t.Run(typ.String(), func(t *testing.T) {
			w, rep := write(t, tiny, Options{Type: typ, Seed: 7})
			// ffn_down rows are 320 wide: only Q2_0 holds them.
			down := w.Layers[0].Wdown
			if typ != quant.Q2_0 {
				if len(rep.Fallbacks) == 0 || down.Type != quant.Q2_0 {
					t.Fatalf("want Q2_0 fallback for 320-wide rows, got %v, %+v", down.Type, rep.Fallbacks)
				}
			} else if len(rep.Fallbacks) != 0 {
				t.Fatalf("unexpected fallbacks %+v", rep.Fallbacks)
			}
			q := w.Layers[1].Wq
			if q.Type != typ {
				t.Fatalf("attn_q type %v, want %v", q.Type, typ)
			}
			// Every weight is exactly -s, 0 or +s with one s per tensor.
			vals := make([]float32, q.Cols)
			rb, _ := q.Type.RowBytes(q.Cols)
			var s float32
			counts := map[int]int{}
			for r := 0; r < q.Rows; r++ {
				if err := quant.Dequantize(q.Type, vals, q.Data[r*rb:(r+1)*rb]); err != nil {
					t.Fatal(err)
				}
				for _, v := range vals {
					v *= q.Scale
					if v == 0 {
						counts[0]++
						continue
					}
					if s == 0 {
						s = float32(math.Abs(float64(v)))
					}
					if float32(math.Abs(float64(v))) != s {
						t.Fatalf("weight %v is not ±%v", v, s)
					}
					if v > 0 {
						counts[1]++
					} else {
						counts[-1]++
					}
				}
			}
			n := q.Rows * q.Cols
			for c, k := range counts {
				if k < n/4 || k > n/2 {
					t.Errorf("code %d appears %d of %d times; want about a third", c, k, n)
				}
			}
			// Same seed, same bytes; another seed, other bytes.
			w2, _ := write(t, tiny, Options{Type: typ, Seed: 7})
			if !bytes.Equal(w2.Layers[1].Wq.Data, q.Data) {
				t.Fatal("same seed gave different weights")
			}
			w3, _ := write(t, tiny, Options{Type: typ, Seed: 8})
			if bytes.Equal(w3.Layers[1].Wq.Data, q.Data) {
				t.Fatal("another seed gave the same weights")
			}
		})
	}
}

func TestPresetsValid(t *testing.T) {
	for _, name := range PresetNames() {
		p := Presets[name]
		if _, err := p.Type.RowBytes(p.Dim); err != nil {
			t.Errorf("%s: default type %v cannot hold rows of %d", name, p.Type, p.Dim)
		}
		if _, err := p.Type.RowBytes(p.FFN); err != nil {
			t.Errorf("%s: default type %v cannot hold rows of %d", name, p.Type, p.FFN)
		}
	}
}

func TestSmolLMPresetLoads(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 60 MB model")
	}
	w, rep := write(t, Presets["smollm-135m"], Options{Seed: 1})
	if len(rep.Fallbacks) != 0 {
		t.Fatalf("fallbacks %+v", rep.Fallbacks)
	}
	c := w.Config
	if c.Arch != model.ArchLlama || c.Dim != 576 || c.FFNDim != 1536 || c.Layers != 30 || c.Heads != 9 || c.KVHeads != 3 || c.Vocab != 49152 || c.ContextLen != 2048 {
		t.Fatalf("config %+v", c)
	}
	if w.Layers[0].Wq.Type != quant.Q2_0 || w.Embed.Type != quant.Q8_0 || !w.Tied {
		t.Fatalf("types %v %v tied %v", w.Layers[0].Wq.Type, w.Embed.Type, w.Tied)
	}
	// The forward pass stays finite and non-degenerate.
	ref := model.NewReference(w, 8)
	logits := ref.Forward(3, 0)
	var max, min float32 = -1e30, 1e30
	for _, v := range logits {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatal("non-finite logit")
		}
		max, min = float32(math.Max(float64(max), float64(v))), float32(math.Min(float64(min), float64(v)))
	}
	if max-min < 1e-3 {
		t.Fatalf("flat logits [%v, %v]", min, max)
	}
}

func TestParseType(t *testing.T) {
	for _, s := range []string{"tq2_0", "TQ2_0", "q2_0", "Q8_0", "i2_s", "f16"} {
		if _, err := ParseType(s); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	if _, err := ParseType("q5_k"); err == nil {
		t.Error("want error for an unwritable type")
	}
}

// TestWeights: the in-memory model has the preset's shape and the same
// tensors as the file Write writes.
func TestWeights(t *testing.T) {
	o := Options{Type: quant.Q2_0, Seed: 3}
	w, err := Weights(tiny, o)
	if err != nil {
		t.Fatal(err)
	}
	c := w.Config
	if c.Dim != tiny.Dim || c.FFNDim != tiny.FFN || c.Layers != tiny.Layers || c.Heads != tiny.Heads ||
		c.KVHeads != tiny.KVHeads || c.Vocab != tiny.Vocab || c.RopeBase != tiny.RopeBase || c.SubNorms != tiny.SubNorms ||
		string(c.Arch) != tiny.Arch || !w.Tied {
		t.Fatalf("config %+v (tied %v) does not match the preset %+v", c, w.Tied, tiny)
	}
	file, _ := write(t, tiny, o)
	if !bytes.Equal(w.Layers[1].Wdown.Data, file.Layers[1].Wdown.Data) || !bytes.Equal(w.Embed.Data, file.Embed.Data) {
		t.Fatal("Weights and Write's file hold different tensors")
	}
}
