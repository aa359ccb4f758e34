package model

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/quant"
)

// llama2cBytes writes an F32 llama model in llama2.c's legacy format.
func llama2cBytes(w *Weights) []byte {
	c := &w.Config
	vocab := int32(c.Vocab)
	if !w.Tied {
		vocab = -vocab
	}
	var buf bytes.Buffer
	binary.Write(&buf, binary.LittleEndian, []int32{int32(c.Dim), int32(c.FFNDim), int32(c.Layers), int32(c.Heads), int32(c.KVHeads), vocab, int32(c.ContextLen)})
	buf.Write(w.Embed.Data)
	each := func(f func(L *Layer) []byte) {
		for i := range w.Layers {
			buf.Write(f(&w.Layers[i]))
		}
	}
	each(func(L *Layer) []byte { return f32Bytes(L.AttnNorm) })
	each(func(L *Layer) []byte { return L.Wq.Data })
	each(func(L *Layer) []byte { return L.Wk.Data })
	each(func(L *Layer) []byte { return L.Wv.Data })
	each(func(L *Layer) []byte { return L.Wo.Data })
	each(func(L *Layer) []byte { return f32Bytes(L.FFNNorm) })
	each(func(L *Layer) []byte { return L.Wgate.Data })
	each(func(L *Layer) []byte { return L.Wdown.Data })
	each(func(L *Layer) []byte { return L.Wup.Data })
	buf.Write(f32Bytes(w.OutNorm))
	buf.Write(make([]byte, 4*c.ContextLen*c.HeadDim)) // freq_cis_real + imag
	if !w.Tied {
		buf.Write(w.Output.Data)
	}
	return buf.Bytes()
}

func writeTemp(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "model.bin")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadLlama2CRoundTrip(t *testing.T) {
	for _, tied := range []bool{true, false} {
		spec := testSpecs()["llama-f32-odd-gqa-untied"]
		spec.tied = tied
		w := randomWeights(t, 8, spec)
		got, err := LoadLlama2C(writeTemp(t, llama2cBytes(w)))
		if err != nil {
			t.Fatal(err)
		}
		if got.Config.Dim != w.Dim || got.KVHeads != w.KVHeads || got.Vocab != w.Vocab || got.Tied != tied ||
			got.RopeStyle != RopeNorm || got.ContextLen != w.ContextLen {
			t.Fatalf("tied=%v: config %+v", tied, got.Config)
		}
		a, b := NewReference(got, 8), NewReference(w, 8)
		for pos := range 8 {
			la, lb := a.Forward(int32(pos%w.Vocab), pos), b.Forward(int32(pos%w.Vocab), pos)
			if d := maxAbsDiff(la, lb); d != 0 {
				t.Fatalf("tied=%v pos %d: logits differ by %g", tied, pos, d)
			}
		}
		if got.Layers[1].Wdown.Type != quant.F32 || !bytes.Equal(got.Layers[1].Wdown.Data, w.Layers[1].Wdown.Data) {
			t.Fatalf("tied=%v: w2 is not layer 1's W_down", tied)
		}
	}
}

func TestLoadLlama2CErrors(t *testing.T) {
	w := randomWeights(t, 9, testSpecs()["llama-f32-odd-gqa-untied"])
	good := llama2cBytes(w)
	header := func(vals ...int32) []byte {
		b := append([]byte(nil), good...)
		for i, v := range vals {
			binary.LittleEndian.PutUint32(b[4*i:], uint32(v))
		}
		return b
	}
	cases := map[string]struct {
		data []byte
		want string
	}{
		"empty":        {nil, "header"},
		"truncated":    {good[:len(good)-4], "bytes, header"},
		"extra":        {append(append([]byte(nil), good...), 0, 0, 0, 0), "bytes, header"},
		"huge dims":    {header(1<<30, 1<<30, 1<<20), "out of range"},
		"zero heads":   {header(18, 7, 2, 0), "head count"},
		"kv > heads":   {header(18, 7, 2, 3, 6), "KV head"},
		"min vocab":    {header(18, 7, 2, 3, 1, -1<<31), "vocabulary"},
		"zero seq len": {header(18, 7, 2, 3, 1, -11, 0), "bad header"},
	}
	for name, tc := range cases {
		_, err := LoadLlama2C(writeTemp(t, tc.data))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, tc.want)
		}
	}
	if _, err := LoadLlama2C(filepath.Join(t.TempDir(), "absent.bin")); err == nil {
		t.Error("absent file: no error")
	}
}
