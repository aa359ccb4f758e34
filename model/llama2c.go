package model

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/edgellm/edgellm/quant"
)

// llama2cHeader is the legacy llama2.c checkpoint header: 7 int32.
type llama2cHeader struct {
	Dim, HiddenDim, Layers, Heads, KVHeads, Vocab, SeqLen int32
}

// LoadLlama2C reads a legacy llama2.c checkpoint (run.c's format) as F32
// tensors. A negative vocabulary size in the header means a separate
// classifier follows the weights; otherwise the LM head is the embedding.
// llama2.c rotates adjacent pairs with base 10000 and uses RMS eps 1e-5,
// exactly llama.cpp's "normal" llama RoPE on the same (unpermuted) weights.
func LoadLlama2C(path string) (*Weights, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("model: llama2.c checkpoint: %w", err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, fmt.Errorf("model: llama2.c checkpoint %s: %w", path, err)
	}
	var h llama2cHeader
	if err := binary.Read(fh, binary.LittleEndian, &h); err != nil {
		return nil, fmt.Errorf("model: llama2.c checkpoint %s: header: %w", path, err)
	}
	shared := h.Vocab > 0
	c := Config{
		Arch: ArchLlama, Dim: int(h.Dim), FFNDim: int(h.HiddenDim), Layers: int(h.Layers),
		Heads: int(h.Heads), KVHeads: int(h.KVHeads), Vocab: int(abs32(h.Vocab)), ContextLen: int(h.SeqLen),
		NormEps: 1e-5, RopeBase: 10000, RopeScale: 1, RopeStyle: RopeNorm, Act: SiLU,
	}
	if c.Heads > 0 {
		c.HeadDim = c.Dim / c.Heads
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("model: llama2.c checkpoint %s: %w", path, err)
	}
	if c.Dim%c.Heads != 0 || c.ContextLen <= 0 || c.ContextLen > 1<<24 {
		return nil, fmt.Errorf("model: llama2.c checkpoint %s: bad header %+v", path, h)
	}

	// Sizes in float32s, in file order; the size must match the file exactly
	// before we read it, so a bad header cannot make us allocate.
	dim, kv, ffn, nl, qd := int64(c.Dim), int64(c.KVDim()), int64(c.FFNDim), int64(c.Layers), int64(c.Heads*c.HeadDim)
	sizes := []int64{
		int64(c.Vocab) * dim, // token_embedding [vocab, dim]
		nl * dim,             // rms_att [layers, dim]
		nl * qd * dim,        // wq [layers, heads*head, dim]
		nl * kv * dim,        // wk [layers, kv_dim, dim]
		nl * kv * dim,        // wv [layers, kv_dim, dim]
		nl * dim * qd,        // wo [layers, dim, heads*head]
		nl * dim,             // rms_ffn [layers, dim]
		nl * ffn * dim,       // w1 (gate) [layers, hidden, dim]
		nl * dim * ffn,       // w2 (down) [layers, dim, hidden]
		nl * ffn * dim,       // w3 (up) [layers, hidden, dim]
		dim,                  // rms_final [dim]
		int64(c.ContextLen) * qd / int64(c.Heads), // freq_cis_real + freq_cis_imag (legacy, unused)
	}
	if !shared {
		sizes = append(sizes, int64(c.Vocab)*dim) // wcls [vocab, dim]
	}
	var total int64
	for _, s := range sizes {
		total += s
	}
	const headerBytes = 7 * 4
	if want := headerBytes + 4*total; st.Size() != want {
		return nil, fmt.Errorf("model: llama2.c checkpoint %s: %d bytes, header %+v implies %d", path, st.Size(), h, want)
	}
	data := make([]byte, 4*total)
	if _, err := io.ReadFull(fh, data); err != nil {
		return nil, fmt.Errorf("model: llama2.c checkpoint %s: %w", path, err)
	}

	// Carve the weights out in file order.
	off := 0
	next := func(n int64) []byte { b := data[off : off+int(4*n)]; off += int(4 * n); return b }
	mat := func(name string, b []byte, rows, cols int) Tensor {
		return Tensor{Name: name, Type: quant.F32, Rows: rows, Cols: cols, Data: b, Scale: 1}
	}
	floats := func(b []byte) []float32 {
		v := make([]float32, len(b)/4)
		for i := range v {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
		return v
	}
	w := &Weights{Config: c, Layers: make([]Layer, c.Layers)}
	w.Embed = mat("token_embedding", next(sizes[0]), c.Vocab, c.Dim)
	perLayer := func(all []byte, i int) []byte {
		n := len(all) / c.Layers
		return all[i*n : (i+1)*n]
	}
	rmsAtt, wq, wk, wv, wo := next(sizes[1]), next(sizes[2]), next(sizes[3]), next(sizes[4]), next(sizes[5])
	rmsFFN, w1, w2, w3 := next(sizes[6]), next(sizes[7]), next(sizes[8]), next(sizes[9])
	for i := range w.Layers {
		L := &w.Layers[i]
		name := func(s string) string { return fmt.Sprintf("layers.%d.%s", i, s) }
		L.AttnNorm = floats(perLayer(rmsAtt, i))
		L.Wq = mat(name("wq"), perLayer(wq, i), int(qd), c.Dim)
		L.Wk = mat(name("wk"), perLayer(wk, i), c.KVDim(), c.Dim)
		L.Wv = mat(name("wv"), perLayer(wv, i), c.KVDim(), c.Dim)
		L.Wo = mat(name("wo"), perLayer(wo, i), c.Dim, int(qd))
		L.FFNNorm = floats(perLayer(rmsFFN, i))
		L.Wgate = mat(name("w1"), perLayer(w1, i), c.FFNDim, c.Dim)
		L.Wdown = mat(name("w2"), perLayer(w2, i), c.Dim, c.FFNDim)
		L.Wup = mat(name("w3"), perLayer(w3, i), c.FFNDim, c.Dim)
	}
	w.OutNorm = floats(next(sizes[10]))
	next(sizes[11]) // skip freq_cis: we compute RoPE from the base
	if shared {
		w.Output, w.Tied = w.Embed, true
	} else {
		w.Output = mat("wcls", next(sizes[12]), c.Vocab, c.Dim)
	}
	return w, nil
}

func abs32(v int32) int32 {
	if v < 0 {
		return -v
	}
	return v
}
