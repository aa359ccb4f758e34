package convert

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/quant"
)

// HF converts the Hugging Face checkpoint in dir (config.json and
// safetensors, single or sharded) to a GGUF file at out.
func HF(dir, out string, o Options) (*Summary, error) {
	start := time.Now()
	typ, auto, err := parseType(o.Type)
	if err != nil {
		return nil, err
	}
	c, err := loadConfig(dir)
	if err != nil {
		return nil, err
	}
	spec, err := resolveArch(c)
	if err != nil {
		return nil, err
	}
	if err := checkConfig(c); err != nil {
		return nil, err
	}
	if err := checkTernary(typ, spec.arch, spec.ternarize || c.bitnetPacked()); err != nil {
		return nil, err
	}
	if err := checkVocab(o.Vocab, c.VocabSize); err != nil {
		return nil, err
	}
	ck, err := openCheckpoint(dir)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	if auto {
		typ = autoType(ck)
	}
	e := newEmitter(spec.arch, typ, o)
	if e.policy != nil {
		e.policy.Tied = !hasHead(ck)
	}
	name := o.Name
	if name == "" {
		name = filepath.Base(filepath.Clean(dir))
	}
	e.w.AddString("general.name", name)
	if err := spec.writeKeys(c, e.w); err != nil {
		return nil, err
	}
	cv := &hfConverter{c: c, spec: spec, ck: ck, e: e, shapes: newShapes(c)}
	if err := cv.tensors(); err != nil {
		return nil, err
	}
	return e.write(out, o, start)
}

// hasHead tells whether the checkpoint has an LM head of its own.
func hasHead(ck *checkpoint) bool {
	for _, n := range []string{"lm_head.weight", "language_model.lm_head.weight"} {
		if _, ok := ck.tensors[n]; ok {
			return true
		}
	}
	return false
}

// checkConfig checks the sizes the conversion relies on, with the
// engine's own limits (model.Config.Validate).
func checkConfig(c *hfConfig) error {
	if c.NumAttentionHeads == nil {
		return fmt.Errorf("convert: config has no num_attention_heads")
	}
	if c.RMSNormEps == nil {
		return fmt.Errorf("convert: config has no rms_norm_eps")
	}
	if c.HeadDim == nil && c.heads() > 0 && c.HiddenSize%c.heads() != 0 {
		return fmt.Errorf("convert: hidden_size %d is not a multiple of num_attention_heads %d", c.HiddenSize, c.heads())
	}
	mc := model.Config{
		Dim: c.HiddenSize, FFNDim: c.IntermediateSize, Layers: c.NumHiddenLayers,
		Heads: c.heads(), KVHeads: c.kvHeads(), HeadDim: c.headDim(), Vocab: c.VocabSize,
		NormEps: float32(*c.RMSNormEps), RopeBase: 10000, RopeScale: 1,
	}
	if t := c.ropeTheta(); t != nil {
		mc.RopeBase = float32(*t)
	}
	if err := mc.Validate(); err != nil {
		return fmt.Errorf("convert: config: %w", err)
	}
	if c.MaxPositions != nil && (*c.MaxPositions < 0 || *c.MaxPositions > math.MaxInt32) {
		return fmt.Errorf("convert: config: max_position_embeddings %d out of range", *c.MaxPositions)
	}
	return nil
}

// autoType is llama.cpp's --outtype auto: the first matrix (in name
// order) decides, BF16 for BF16, else F16.
func autoType(ck *checkpoint) quant.Type {
	for _, n := range ck.names() {
		t := ck.tensors[n]
		if len(t.Shape) < 2 {
			continue
		}
		switch t.DType {
		case "BF16":
			return quant.BF16
		case "F16":
			return quant.F16
		}
	}
	return quant.F16
}

// shapes gives each GGUF tensor's expected shape (PyTorch order), from
// the config.
type shapes struct {
	vocab, hidden, ffn, q, kv, head int64
}

func newShapes(c *hfConfig) shapes {
	hd := int64(c.headDim())
	return shapes{vocab: int64(c.VocabSize), hidden: int64(c.HiddenSize), ffn: int64(c.IntermediateSize),
		q: int64(c.heads()) * hd, kv: int64(c.kvHeads()) * hd, head: hd}
}

// of returns name's expected shape ("blk.N." already removed for layer
// tensors).
func (s shapes) of(name string) []int64 {
	switch name {
	case "token_embd.weight", "output.weight":
		return []int64{s.vocab, s.hidden}
	case "output_norm.weight", "attn_norm.weight", "ffn_norm.weight", "post_attention_norm.weight", "post_ffw_norm.weight":
		return []int64{s.hidden}
	case "attn_q.weight":
		return []int64{s.q, s.hidden}
	case "attn_k.weight", "attn_v.weight":
		return []int64{s.kv, s.hidden}
	case "attn_output.weight":
		return []int64{s.hidden, s.q}
	case "attn_q.bias", "attn_sub_norm.weight":
		return []int64{s.q}
	case "attn_k.bias", "attn_v.bias":
		return []int64{s.kv}
	case "attn_q_norm.weight", "attn_k_norm.weight":
		return []int64{s.head}
	case "ffn_gate.weight", "ffn_up.weight":
		return []int64{s.ffn, s.hidden}
	case "ffn_down.weight":
		return []int64{s.hidden, s.ffn}
	case "ffn_sub_norm.weight":
		return []int64{s.ffn}
	}
	return nil
}

// ternaryWeights are the BitNet layer matrices (BitLinear in Hugging
// Face): master weights are ternarized, packed ones unpacked.
var ternaryWeights = []string{"attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight",
	"ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"}

type hfConverter struct {
	c      *hfConfig
	spec   *archSpec
	ck     *checkpoint
	e      *emitter
	shapes shapes
}

// ggufName maps a checkpoint tensor name to its GGUF name and, for layer
// tensors, the block and the name within it; skip is set for tensors
// llama.cpp's converter drops (vision towers, rotary caches).
func (cv *hfConverter) ggufName(hf string) (name string, block int, local string, skip bool, err error) {
	n := hf
	for _, p := range [][2]string{
		{"language_model.model.", "model."}, {"model.language_model.", "model."},
		{"language_model.lm_head.", "lm_head."},
	} {
		if strings.HasPrefix(n, p[0]) {
			n = p[1] + strings.TrimPrefix(n, p[0])
			break
		}
	}
	if strings.HasSuffix(n, ".rotary_emb.inv_freq") ||
		strings.Contains(n, "vision_tower.") || strings.Contains(n, "multi_modal_projector.") || strings.Contains(n, "vision_model.") {
		return "", 0, "", true, nil
	}
	switch n {
	case "model.embed_tokens.weight":
		return "token_embd.weight", -1, "token_embd.weight", false, nil
	case "model.norm.weight":
		return "output_norm.weight", -1, "output_norm.weight", false, nil
	case "lm_head.weight":
		return "output.weight", -1, "output.weight", false, nil
	}
	if rest, ok := strings.CutPrefix(n, "model.layers."); ok {
		if idx, sub, ok := strings.Cut(rest, "."); ok {
			b, err := strconv.Atoi(idx)
			if err == nil && b >= 0 && b < cv.c.NumHiddenLayers && idx == strconv.Itoa(b) {
				if g, ok := cv.spec.layer[sub]; ok {
					return fmt.Sprintf("blk.%d.%s", b, g), b, g, false, nil
				}
			}
		}
	}
	return "", 0, "", false, fmt.Errorf("convert: tensor %q: not a tensor of %s as EdgeLLM converts it", hf, cv.spec.arch)
}

func (cv *hfConverter) tensors() error {
	names := cv.ck.names()
	scales := map[string]bool{} // weight_scale tensors used by a packed weight
	written := map[string]bool{}
	for _, hf := range names {
		if strings.HasSuffix(hf, ".weight_scale") {
			continue
		}
		name, block, local, skip, err := cv.ggufName(hf)
		if err != nil {
			return err
		}
		if skip {
			continue
		}
		t := cv.ck.tensors[hf]
		shape, scale, err := cv.plan(t, scales)
		if err != nil {
			return err
		}
		if want := cv.shapes.of(local); !slices.Equal(shape, want) {
			return fmt.Errorf("convert: tensor %q: shape %v, the config implies %v", hf, shape, want)
		}
		transform := cv.transform(local, block >= 0, t.DType == "U8", shape)
		err = cv.e.add(name, shape, func() ([]float32, error) {
			data, err := cv.read(t, scale)
			if err != nil {
				return nil, err
			}
			return transform(data), nil
		})
		if err != nil {
			return err
		}
		written[name] = true
	}
	for _, hf := range names {
		if strings.HasSuffix(hf, ".weight_scale") && !scales[hf] {
			return fmt.Errorf("convert: tensor %q: a scale with no packed ternary weight to apply to", hf)
		}
	}
	if r := cv.c.rope(); cv.spec == llamaSpec && r != nil && r.kind() == "llama3" {
		f := ropeFreqFactors(cv.c)
		err := cv.e.add("rope_freqs.weight", []int64{int64(len(f))}, func() ([]float32, error) { return f, nil })
		if err != nil {
			return err
		}
	}
	return cv.checkComplete(written)
}

// transform returns what the architecture does to a tensor's values
// (local: its GGUF name within the block, or the global name).
func (cv *hfConverter) transform(local string, inBlock, packed bool, shape []int64) func([]float32) []float32 {
	s := cv.spec
	switch {
	case s.ternarize && inBlock && !packed && slices.Contains(ternaryWeights, local):
		return func(d []float32) []float32 { bitnetWeightQuant(d); return d }
	case s.permuteQK && (local == "attn_q.weight" || local == "attn_q.bias"):
		return func(d []float32) []float32 { return permuteRows(d, int(shape[0]), rowLen(shape), cv.c.heads()) }
	case s.permuteQK && (local == "attn_k.weight" || local == "attn_k.bias"):
		return func(d []float32) []float32 { return permuteRows(d, int(shape[0]), rowLen(shape), cv.c.kvHeads()) }
	case s.normShift && strings.HasSuffix(local, "norm.weight"):
		return func(d []float32) []float32 {
			for i := range d {
				d[i]++
			}
			return d
		}
	}
	return func(d []float32) []float32 { return d }
}

// checkComplete fails on the first tensor the network needs that the
// checkpoint did not have.
func (cv *hfConverter) checkComplete(written map[string]bool) error {
	need := []string{"token_embd.weight", "output_norm.weight"}
	for b := range cv.c.NumHiddenLayers {
		for _, r := range cv.spec.required {
			need = append(need, fmt.Sprintf("blk.%d.%s", b, r))
		}
	}
	if cv.spec == qwen2Spec && written["blk.0.attn_q.bias"] {
		for b := range cv.c.NumHiddenLayers {
			for _, r := range []string{"attn_q.bias", "attn_k.bias", "attn_v.bias"} {
				need = append(need, fmt.Sprintf("blk.%d.%s", b, r))
			}
		}
	}
	for _, n := range need {
		if !written[n] {
			return fmt.Errorf("convert: the checkpoint has no tensor for %s (architecture %s)", n, cv.spec.arch)
		}
	}
	if !written["output.weight"] && cv.c.TieWordEmbeddings != nil && !*cv.c.TieWordEmbeddings {
		return fmt.Errorf("convert: config says tie_word_embeddings false but the checkpoint has no lm_head.weight")
	}
	return nil
}

// rowLen is the length of one row: the product of all but the first
// dimension (1 for a vector).
func rowLen(shape []int64) int {
	n := 1
	for _, d := range shape[1:] {
		n *= int(d)
	}
	return n
}

// plan checks that a tensor can be read, from the headers alone, and
// returns the shape of its values: a U8 tensor of a BitNet-quantized
// checkpoint holds packed ternary weights, four rows to a byte, whose
// weight_scale is read and checked here.
func (cv *hfConverter) plan(t *stTensor, scales map[string]bool) (shape []int64, scale float32, err error) {
	if t.DType != "U8" {
		if !slices.Contains(floatDTypes, t.DType) {
			return nil, 0, fmt.Errorf("convert: tensor %q: dtype %s is not supported (want F32, F16 or BF16)", t.Name, t.DType)
		}
		return t.Shape, 0, nil
	}
	if !cv.c.bitnetPacked() {
		return nil, 0, fmt.Errorf("convert: tensor %q: dtype U8 is only read as BitNet-packed ternary weights (config has no bitnet quantization_config)", t.Name)
	}
	if lc := cv.c.QuantizationConfig.LinearClass; lc != "" && lc != "bitlinear" && lc != "autobitlinear" {
		return nil, 0, fmt.Errorf("convert: tensor %q: BitNet linear_class %q is not supported (bitlinear and autobitlinear are)", t.Name, lc)
	}
	scaleName := strings.TrimSuffix(t.Name, ".weight") + ".weight_scale"
	st, ok := cv.ck.tensors[scaleName]
	if !ok || !strings.HasSuffix(t.Name, ".weight") {
		return nil, 0, fmt.Errorf("convert: tensor %q: packed ternary weight without %s", t.Name, scaleName)
	}
	if len(t.Shape) != 2 {
		return nil, 0, fmt.Errorf("convert: tensor %q: packed ternary weight of shape %v, want 2 dimensions", t.Name, t.Shape)
	}
	sv, err := st.Floats()
	if err != nil {
		return nil, 0, err
	}
	if len(sv) != 1 || !(sv[0] != 0) || math.IsInf(float64(sv[0]), 0) || math.IsNaN(float64(sv[0])) {
		return nil, 0, fmt.Errorf("convert: tensor %q: weight scale must be one finite non-zero value, got %v", scaleName, sv)
	}
	scales[scaleName] = true
	cv.e.sum.BytesIn += st.End - st.Begin
	return []int64{4 * t.Shape[0], t.Shape[1]}, sv[0], nil
}

// read reads a tensor's values as float32, unpacking packed ternary
// weights with their scale (plan's).
func (cv *hfConverter) read(t *stTensor, scale float32) ([]float32, error) {
	cv.e.sum.BytesIn += t.End - t.Begin
	if t.DType != "U8" {
		return t.Floats()
	}
	packed, err := t.Bytes()
	if err != nil {
		return nil, err
	}
	// transformers' BitLinear divides its output by weight_scale (as
	// llama.cpp's dequant_bitnet does); AutoBitLinear multiplies by it.
	mul := cv.c.QuantizationConfig.LinearClass == "autobitlinear"
	data, err := unpackTernary(packed, int(t.Shape[0]), int(t.Shape[1]), scale, mul)
	if err != nil {
		return nil, fmt.Errorf("convert: tensor %q: %w", t.Name, err)
	}
	return data, nil
}

// unpackTernary undoes transformers' BitNet packing (integrations/
// bitnet.py pack_weights): a [R/4, C] uint8 tensor holds, in bits 2i and
// 2i+1 of byte (r, c), the value+1 of weight row i*R/4+r, column c. The
// weights are the values divided by the scale, or times it when mul.
func unpackTernary(packed []byte, quarterRows, cols int, scale float32, mul bool) ([]float32, error) {
	out := make([]float32, 4*quarterRows*cols)
	for i := range 4 {
		for r := range quarterRows {
			row := out[(i*quarterRows+r)*cols:][:cols]
			src := packed[r*cols:][:cols]
			for c, b := range src {
				v := int(b>>(2*i)) & 3
				if v == 3 {
					return nil, fmt.Errorf("packed byte %#02x at [%d, %d] holds 3, not a ternary value+1", b, r, c)
				}
				if mul {
					row[c] = float32(v-1) * scale
				} else {
					row[c] = float32(v-1) / scale
				}
			}
		}
	}
	return out, nil
}

// bitnetWeightQuant replaces w by BitNet's ternary weights, as Hugging
// Face's WeightQuant and the converters compute them in float32: with
// s = 1/max(mean|w|, 1e-5), w becomes clamp(round(w*s), -1, 1)/s, ties to
// even as torch.round, so packed and master checkpoints of the same
// weights give the same tensors.
func bitnetWeightQuant(w []float32) {
	var sum float64
	for _, v := range w {
		sum += math.Abs(float64(v))
	}
	mean := float32(sum / float64(len(w)))
	s := 1 / max(mean, 1e-5)
	for i, v := range w {
		// Through an integer, so a code of 0 is +0 as in a packed
		// checkpoint's weights (torch.round would keep -0).
		c := int(max(-1, min(1, math.RoundToEven(float64(v*s)))))
		w[i] = float32(c) / s
	}
}

// permuteRows reorders the rows of a q or k projection (rows of rowLen
// values; a bias has rowLen 1) from Hugging Face's RoPE layout, which
// rotates the two halves of each head together, to llama.cpp's, which
// rotates adjacent pairs: within each head of d rows, row j*d/2+i moves to
// 2i+j (conversion/llama.py LlamaModel.permute).
func permuteRows(w []float32, rows, rowLen, heads int) []float32 {
	out := make([]float32, len(w))
	d := rows / heads
	for h := range heads {
		for i := range d / 2 {
			for j := range 2 {
				src := (h*d + j*d/2 + i) * rowLen
				dst := (h*d + 2*i + j) * rowLen
				copy(out[dst:dst+rowLen], w[src:src+rowLen])
			}
		}
	}
	return out
}
