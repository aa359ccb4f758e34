package convert

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/quant"
)

// Llama2C converts a llama2.c checkpoint (run.c's legacy format, read by
// model.LoadLlama2C) to GGUF with the keys and tensor names of llama.cpp's
// convert-llama2c-to-ggml: architecture llama, every tensor F32 by
// default, output.weight written even when the classifier is shared. The
// context length is the checkpoint's seq_len (llama.cpp's tool writes its
// own default instead). The tokenizer comes from o.Vocab.
func Llama2C(modelPath, out string, o Options) (*Summary, error) {
	start := time.Now()
	typ, auto, err := parseType(o.Type)
	if err != nil {
		return nil, err
	}
	if auto {
		typ = quant.F32
	}
	if err := checkTernary(typ, "llama2.c", false); err != nil {
		return nil, err
	}
	w, err := model.LoadLlama2C(modelPath)
	if err != nil {
		return nil, fmt.Errorf("convert: %w", err)
	}
	c := &w.Config
	if err := checkVocab(o.Vocab, c.Vocab); err != nil {
		return nil, err
	}
	e := newEmitter("llama", typ, o)
	name := o.Name
	if name == "" {
		name = strings.TrimSuffix(filepath.Base(modelPath), filepath.Ext(modelPath))
	}
	e.w.AddString("general.name", name)
	k := keyWriter{w: e.w, p: "llama."}
	k.u32("context_length", c.ContextLen)
	k.u32("embedding_length", c.Dim)
	k.u32("feed_forward_length", c.FFNDim)
	k.u32("attention.head_count", c.Heads)
	k.u32("attention.head_count_kv", c.KVHeads)
	k.u32("block_count", c.Layers)
	k.u32("rope.dimension_count", c.HeadDim)
	k.f32("attention.layer_norm_rms_epsilon", float64(c.NormEps))

	matrix := func(name string, t *model.Tensor) error {
		e.sum.BytesIn += int64(len(t.Data))
		return e.add(name, []int64{int64(t.Rows), int64(t.Cols)}, func() ([]float32, error) { return floats(t) })
	}
	vector := func(name string, v []float32) error {
		e.sum.BytesIn += 4 * int64(len(v))
		return e.add(name, []int64{int64(len(v))}, func() ([]float32, error) { return v, nil })
	}
	if err := matrix("token_embd.weight", &w.Embed); err != nil {
		return nil, err
	}
	if err := vector("output_norm.weight", w.OutNorm); err != nil {
		return nil, err
	}
	if err := matrix("output.weight", &w.Output); err != nil {
		return nil, err
	}
	for i := range w.Layers {
		L := &w.Layers[i]
		b := func(s string) string { return fmt.Sprintf("blk.%d.%s", i, s) }
		for _, step := range []struct {
			name string
			t    *model.Tensor
			v    []float32
		}{
			{"attn_norm.weight", nil, L.AttnNorm},
			{"attn_q.weight", &L.Wq, nil}, {"attn_k.weight", &L.Wk, nil}, {"attn_v.weight", &L.Wv, nil},
			{"attn_output.weight", &L.Wo, nil},
			{"ffn_norm.weight", nil, L.FFNNorm},
			{"ffn_gate.weight", &L.Wgate, nil}, {"ffn_down.weight", &L.Wdown, nil}, {"ffn_up.weight", &L.Wup, nil},
		} {
			if step.t != nil {
				err = matrix(b(step.name), step.t)
			} else {
				err = vector(b(step.name), step.v)
			}
			if err != nil {
				return nil, err
			}
		}
	}
	return e.write(out, o, start)
}

// floats decodes a matrix to float32.
func floats(t *model.Tensor) ([]float32, error) {
	out := make([]float32, t.Rows*t.Cols)
	if err := quant.Dequantize(t.Type, out, t.Data); err != nil {
		return nil, fmt.Errorf("convert: tensor %q: %w", t.Name, err)
	}
	return out, nil
}
