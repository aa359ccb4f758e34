// Package convert writes GGUF files from Hugging Face checkpoints
// (safetensors, config.json) and from llama2.c checkpoints, with the
// architecture names, metadata keys, tensor names and tensor layouts that
// llama.cpp's converters write, so the files load in llama.cpp as in
// EdgeLLM. It reads untrusted files: every header, shape and size is
// checked before anything is allocated from it.
package convert

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/internal/atomicfile"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/quant"
	"github.com/edgellm/edgellm/quantize"
)

// VocabWriter adds a tokenizer's tokenizer.ggml.* keys (and the chat
// template) to a file being written.
type VocabWriter interface {
	Write(w *gguf.Writer)
}

// checkVocab fails when the tokenizer's token count (for a VocabWriter
// that has Len, as convert/vocab's) is not the embedding's row count:
// neither llama.cpp nor EdgeLLM loads such a file.
func checkVocab(v VocabWriter, rows int) error {
	if l, ok := v.(interface{ Len() int }); ok && l.Len() != rows {
		return fmt.Errorf("convert: the tokenizer has %d tokens, the model's embedding %d rows", l.Len(), rows)
	}
	return nil
}

// Options tune a conversion.
type Options struct {
	// Type is the matrices' type: "auto" (or ""), "f32", "f16", "bf16" or
	// "q8_0"; for ternary-trained checkpoints also "tq1_0", "tq2_0",
	// "q2_0" or "i2_s" (package quantize's per-tensor policy). Auto is
	// BF16 when the checkpoint's first matrix is BF16, else F16, as
	// llama.cpp's converter chooses (llama2.c files: F32).
	Type string
	// Vocab, when not nil, writes the tokenizer; without it the file gets
	// tokenizer.ggml.model "none" (weights only, as llama.cpp reads it).
	Vocab VocabWriter
	// Name is general.name; the checkpoint's folder or file name when empty.
	Name string
	// Progress, when not nil, receives a line per tensor as it is written.
	Progress io.Writer
}

// Summary says what a conversion did.
type Summary struct {
	Arch      string
	Tensors   int
	BytesIn   int64 // tensor bytes read from the checkpoint
	BytesOut  int64 // bytes of the written file
	Took      time.Duration
	Fallbacks []string // matrices written in another type than asked, and why
}

func (s *Summary) String() string {
	return fmt.Sprintf("%s: %d tensors, %.1f MB read, %.1f MB written, %s", s.Arch, s.Tensors,
		float64(s.BytesIn)/1e6, float64(s.BytesOut)/1e6, s.Took.Round(time.Millisecond))
}

// ternaryTypes are the --type values for ternary-trained checkpoints:
// their per-tensor types come from package quantize's policy (the
// embedding and LM head kept finer, llama-quantize's fallbacks), and their
// matrices are ternarized by BitNet's absmean, as edgellm quantize does.
var ternaryTypes = []quant.Type{quant.TQ1_0, quant.TQ2_0, quant.Q2_0, quant.I2_S}

// parseType reads Options.Type; auto says it is "auto" (or empty).
func parseType(s string) (t quant.Type, auto bool, err error) {
	switch strings.ToLower(s) {
	case "", "auto":
		return 0, true, nil
	case "f32":
		return quant.F32, false, nil
	case "f16":
		return quant.F16, false, nil
	case "bf16":
		return quant.BF16, false, nil
	case "q8_0":
		return quant.Q8_0, false, nil
	}
	if t, err := quantize.ParseType(s); err == nil && slices.Contains(ternaryTypes, t) {
		return t, false, nil
	}
	return 0, false, fmt.Errorf("convert: unknown type %q (want auto, f32, f16, bf16 or q8_0; tq1_0, tq2_0, q2_0 or i2_s for ternary-trained checkpoints)", s)
}

// checkTernary refuses a ternary type for a checkpoint that was not
// trained ternary: absmean would destroy its weights.
func checkTernary(t quant.Type, arch string, ternaryTrained bool) error {
	if slices.Contains(ternaryTypes, t) && !ternaryTrained {
		return fmt.Errorf("convert: type %s is for ternary-trained checkpoints (BitNet, or a bitnet quantization_config); this %s checkpoint is not one: use f16, bf16 or q8_0", t, arch)
	}
	return nil
}

// emitter builds the output file: it picks each tensor's type, encodes it
// as the file is written, reports progress and counts.
type emitter struct {
	w   *gguf.Writer
	typ quant.Type // the matrices' type
	// policy, for ternary types, is package quantize's per-tensor choice.
	policy   *quantize.Options
	i2s      bool // some tensor is I2_S
	progress io.Writer
	sum      Summary
	names    map[string]bool
}

func newEmitter(arch string, typ quant.Type, o Options) *emitter {
	e := &emitter{w: gguf.NewWriter(), typ: typ, progress: o.Progress, names: map[string]bool{}}
	if slices.Contains(ternaryTypes, typ) {
		e.policy = &quantize.Options{Type: typ}
	}
	e.sum.Arch = arch
	e.w.AddString("general.architecture", arch)
	e.w.AddString("general.type", "model")
	return e
}

// tensorType is what a tensor is written as. For ternary types, package
// quantize's policy says; else F32 for vectors and norms (llama.cpp's
// rule) and the asked type for matrices, falling back to F16 where a Q8_0
// block does not fit the row, as llama.cpp's converter does.
func (e *emitter) tensorType(name string, dims []uint64) quant.Type {
	if e.policy != nil {
		t, why := quantize.Choose(name, dims, quant.F32, *e.policy)
		if why != "" && !strings.HasPrefix(why, "kept ") {
			e.sum.Fallbacks = append(e.sum.Fallbacks, name+": "+why)
		}
		return t
	}
	if len(dims) < 2 || strings.HasSuffix(name, "_norm.weight") {
		return quant.F32
	}
	if _, err := e.typ.RowBytes(int(dims[0])); err != nil {
		e.sum.Fallbacks = append(e.sum.Fallbacks, fmt.Sprintf("%s: %s cannot hold rows of %d, wrote F16", name, e.typ, dims[0]))
		return quant.F16
	}
	return e.typ
}

// add appends tensor name (shape rows first, as PyTorch writes it), whose
// float32 values produce returns when the file is written: the writer
// holds one tensor at a time, not the whole model.
func (e *emitter) add(name string, shape []int64, produce func() ([]float32, error)) error {
	if e.names[name] {
		return fmt.Errorf("convert: tensor %q written twice (two checkpoint tensors map to it)", name)
	}
	e.names[name] = true
	dims := make([]uint64, len(shape))
	n := 1
	for i, d := range shape {
		dims[len(shape)-1-i] = uint64(d) // GGUF: the contiguous dimension first
		n *= int(d)
	}
	typ := e.tensorType(name, dims)
	e.i2s = e.i2s || typ == quant.I2_S
	index := e.sum.Tensors + 1
	err := e.w.AddTensorFunc(name, typ, dims, func(dst []byte) error {
		data, err := produce()
		if err != nil {
			return err
		}
		if len(data) != n {
			return fmt.Errorf("convert: tensor %q: %d values for shape %v", name, len(data), shape)
		}
		if quant.IsTernary(typ) {
			// One absmean scale over the tensor, as edgellm quantize: a
			// ternary-trained tensor's values are kept exactly (but for
			// the blocks' fp16 scales).
			var sc quant.TernaryScaler
			sc.Add(data)
			scale := sc.Scale()
			if math.IsNaN(float64(scale)) || math.IsInf(float64(scale), 0) {
				return fmt.Errorf("convert: tensor %q: absmean scale is %v", name, scale)
			}
			quant.Ternarize(data, data, scale)
		}
		if err := quant.Quantize(typ, dst, data); err != nil {
			return fmt.Errorf("convert: tensor %q: %w", name, err)
		}
		if e.progress != nil {
			fmt.Fprintf(e.progress, "[%4d/%4d] %-32s %-5s %v\n", index, e.sum.Tensors, name, typ, dims)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	e.sum.Tensors++
	return nil
}

// write finishes the metadata and writes the file to out atomically
// (internal/atomicfile), so a failed conversion leaves no half file.
func (e *emitter) write(out string, o Options, start time.Time) (*Summary, error) {
	ft, ok := quantize.FileType(e.typ)
	if !ok {
		return nil, fmt.Errorf("convert: no file type for %s", e.typ)
	}
	e.w.AddUint32("general.file_type", ft)
	e.w.AddUint32("general.quantization_version", 2)
	if e.i2s {
		e.w.AddString(model.KeyI2SLayout, string(model.I2SX86))
	}
	if o.Vocab != nil {
		o.Vocab.Write(e.w)
	} else {
		e.w.AddString("tokenizer.ggml.model", "none")
	}
	var n int64
	err := atomicfile.Write(out, func(w io.Writer) (err error) {
		n, err = e.w.WriteTo(w)
		return err
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("convert: writing %s: %w", out, err)
	}
	e.sum.BytesOut = n
	e.sum.Took = time.Since(start)
	return &e.sum, nil
}
