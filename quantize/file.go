package quantize

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/internal/atomicfile"
	"github.com/edgellm/edgellm/internal/par"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/quant"
)

// Note is one tensor written in another type than the target, and why.
type Note struct {
	Tensor string
	Type   quant.Type
	Reason string
}

// Summary says what File did.
type Summary struct {
	Tensors   int
	Converted int            // tensors re-encoded
	Copied    int            // tensors whose bytes were copied (same type in and out)
	ByType    map[string]int // "F16 -> TQ2_0": tensors
	Notes     []Note         // matrices not in the target type (embedding, output, fallbacks)
	BytesIn   int64          // input file size
	BytesOut  int64          // output file size
	Duration  time.Duration
	I2SLayout model.I2SLayout // layout of the I2_S tensors written, if any
}

// Print writes the summary as a short table.
func (s *Summary) Print(w io.Writer) {
	fmt.Fprintf(w, "tensors: %d (%d converted, %d copied)\n", s.Tensors, s.Converted, s.Copied)
	keys := make([]string, 0, len(s.ByType))
	for k := range s.ByType {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %-22s %5d\n", k, s.ByType[k])
	}
	// Group the notes by reason: a model whose rows the type cannot hold
	// falls back in every layer.
	type group struct {
		reason string
		names  []string
	}
	var groups []*group
	for _, n := range s.Notes {
		r := n.Type.String() + ": " + n.Reason
		i := slices.IndexFunc(groups, func(g *group) bool { return g.reason == r })
		if i < 0 {
			groups = append(groups, &group{reason: r})
			i = len(groups) - 1
		}
		groups[i].names = append(groups[i].names, n.Tensor)
	}
	for _, g := range groups {
		names := strings.Join(g.names[:min(3, len(g.names))], ", ")
		if len(g.names) > 3 {
			names += fmt.Sprintf(" and %d more", len(g.names)-3)
		}
		fmt.Fprintf(w, "  %s (%s)\n", g.reason, names)
	}
	if s.I2SLayout != "" {
		fmt.Fprintf(w, "I2_S layout: %s\n", s.I2SLayout)
	}
	fmt.Fprintf(w, "bytes: %d in, %d out (%.1f%%), %.2fs\n", s.BytesIn, s.BytesOut,
		100*float64(s.BytesOut)/float64(max(s.BytesIn, 1)), s.Duration.Seconds())
}

// progressMin is the input size from which File reports progress (a
// variable for tests).
var progressMin int64 = 64 << 20

// File writes in's model with its tensors in opt.Type (per Choose) to out:
// to a temporary file beside out, checked to load, then renamed. Metadata
// is copied, with general.file_type set as llama-quantize sets it (see
// FileType) and, for I2_S output, model.KeyI2SLayout. Tensors already of
// their output type are copied byte for byte; others are decoded to
// float32 and encoded anew, ternary types through BitNet's per-tensor
// absmean (quant.TernaryScale), which reproduces a ternary-trained
// tensor's codes exactly.
func File(ctx context.Context, in, out string, opt Options) (*Summary, error) {
	start := time.Now()
	if !writable(opt.Type) || quant.IsI2S(opt.Type) && opt.Type != quant.I2_S {
		return nil, fmt.Errorf("quantize: cannot write type %s", opt.Type)
	}
	for _, t := range []*quant.Type{opt.TokenEmbdType, opt.OutputType} {
		if t != nil && !writable(*t) {
			return nil, fmt.Errorf("quantize: cannot write type %s", *t)
		}
	}
	if _, err := model.ParseI2SLayout(string(opt.I2SLayout)); err != nil {
		return nil, fmt.Errorf("quantize: %w", err)
	}
	f, err := gguf.Open(in)
	if err != nil {
		return nil, fmt.Errorf("quantize: %w", err)
	}
	defer f.Close()
	// The input must be a model EdgeLLM reads (architecture, shapes, types):
	// its errors name what is wrong. It also settles how I2_S input reads.
	if _, err := model.FromGGUFWith(f, model.LoadOptions{I2SLayout: opt.InputI2SLayout}); err != nil {
		return nil, fmt.Errorf("quantize: %s: %w", in, err)
	}
	inI2S := quant.I2_S
	if slices.ContainsFunc(f.Tensors, func(t gguf.TensorInfo) bool { return t.Type == quant.I2_S }) {
		l, _, err := model.ChooseI2SLayout(f, opt.InputI2SLayout)
		if err != nil {
			return nil, fmt.Errorf("quantize: %s: %w", in, err)
		}
		inI2S = l.Type()
	}
	_, hasOutput := f.Tensor("output.weight")
	opt.Tied = !hasOutput

	sum := &Summary{Tensors: len(f.Tensors), ByType: map[string]int{}}
	w := gguf.NewWriter()
	for _, kv := range f.KVs {
		if kv.Key != model.KeyI2SLayout {
			w.Add(kv.Key, kv.Value)
		}
	}
	ftype, ok := FileType(opt.Type)
	if !ok {
		return nil, fmt.Errorf("quantize: no file type for %s", opt.Type)
	}
	w.AddUint32("general.file_type", ftype)
	w.AddUint32("general.quantization_version", 2) // GGML_QNT_VERSION

	var total, done int64
	for i := range f.Tensors {
		total += int64(len(f.Tensors[i].Data))
	}
	nextReport := int64(0)
	for i := range f.Tensors {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("quantize: %w", err)
		}
		ti := &f.Tensors[i]
		inType := ti.Type
		if inType == quant.I2_S {
			inType = inI2S
		}
		outType, reason := Choose(ti.Name, ti.Dims, inType, opt)
		if quant.IsI2S(outType) {
			sum.I2SLayout = model.I2SX86
			if outType == quant.I2_S_ARM {
				sum.I2SLayout = model.I2SARM
			}
		}
		sum.ByType[inType.String()+" -> "+outType.String()]++
		if reason != "" && !strings.HasPrefix(reason, "kept ") {
			sum.Notes = append(sum.Notes, Note{ti.Name, outType, reason})
		}
		var data []byte
		if outType == inType {
			data = ti.Data[:ti.Size]
			sum.Copied++
		} else {
			data, err = convert(ctx, ti, inType, outType)
			if err != nil {
				return nil, fmt.Errorf("quantize: tensor %q: %w", ti.Name, err)
			}
			sum.Converted++
		}
		fileType := outType
		if quant.IsI2S(fileType) {
			fileType = quant.I2_S // both layouts are id 36 in a file
		}
		if err := w.AddTensor(ti.Name, fileType, ti.Dims, data); err != nil {
			return nil, fmt.Errorf("quantize: %w", err)
		}
		done += int64(len(ti.Data))
		if opt.Progress != nil && total >= progressMin && (done >= nextReport || i == len(f.Tensors)-1) {
			fmt.Fprintf(opt.Progress, "quantize: %3.0f%% (%d/%d tensors, %s)\n", 100*float64(done)/float64(total), i+1, len(f.Tensors), time.Since(start).Round(time.Second))
			nextReport = done + total/10
		}
	}
	if sum.I2SLayout != "" {
		w.AddString(model.KeyI2SLayout, string(sum.I2SLayout))
	}
	n, err := writeChecked(w, out, model.LoadOptions{I2SLayout: sum.I2SLayout})
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(in); err == nil {
		sum.BytesIn = st.Size()
	}
	sum.BytesOut = n
	sum.Duration = time.Since(start)
	return sum, nil
}

// writeChecked writes w to out atomically (internal/atomicfile), checking
// that the temporary file loads before it is renamed to out.
func writeChecked(w *gguf.Writer, out string, lo model.LoadOptions) (int64, error) {
	var n int64
	var loadErr error
	err := atomicfile.Write(out, func(f io.Writer) (err error) {
		n, err = w.WriteTo(f)
		return err
	}, func(tmp string) error {
		g, err := gguf.Open(tmp)
		if err == nil {
			_, err = model.FromGGUFWith(g, lo)
			g.Close()
		}
		if err != nil {
			loadErr = fmt.Errorf("quantize: the written file does not load: %w", err)
		}
		return loadErr
	})
	if loadErr != nil {
		return 0, loadErr
	}
	if err != nil {
		return 0, fmt.Errorf("quantize: %s: %w", out, err)
	}
	return n, nil
}

// chunkElems bounds the float32 values one tensor is decoded into at a
// time (64 MiB), so a large embedding does not need its float32 copy.
const chunkElems = 16 << 20

// convert decodes ti (of type in) and encodes it as out. Ternary outputs
// take one absmean scale over the whole tensor (a first pass over it), then
// keep clip(round(w/scale), -1, 1)*scale, which the block types store
// exactly (but for their fp16 scale).
func convert(ctx context.Context, ti *gguf.TensorInfo, in, out quant.Type) ([]byte, error) {
	if !in.Supported() {
		return nil, fmt.Errorf("input type %s cannot be decoded", in)
	}
	n := ti.Elements()
	cols := ti.Dims[0]
	if n == 0 || cols == 0 || n > math.MaxInt/4 {
		return nil, fmt.Errorf("%d elements", n)
	}
	rows := int(n / cols)
	c := int(cols)
	inRB, err := in.RowBytes(c)
	if err != nil {
		return nil, err
	}
	outRB, err := out.RowBytes(c)
	if err != nil {
		return nil, err
	}
	size, err := quant.TensorBytes(out, cols, n)
	if err != nil {
		return nil, err
	}
	if uint64(len(ti.Data)) < uint64(rows)*uint64(inRB) {
		return nil, fmt.Errorf("%d bytes of data, want %d", len(ti.Data), rows*inRB)
	}
	inScale := float32(1)
	if quant.IsI2S(in) {
		if inScale, err = quant.I2SScale(ti.Data, int(n)); err != nil {
			return nil, err
		}
	}
	chunk := max(1, chunkElems/c)
	buf := make([]float32, min(rows, chunk)*c)
	decode := func(r0, r1 int, dst []float32) error {
		if err := quant.Dequantize(in, dst, ti.Data[r0*inRB:r1*inRB]); err != nil {
			return err
		}
		if inScale != 1 {
			for i := range dst {
				dst[i] *= inScale
			}
		}
		return nil
	}
	ternary := quant.IsTernary(out)
	var scale float32
	if ternary {
		var s quant.TernaryScaler
		for r := 0; r < rows; r += chunk {
			r1 := min(rows, r+chunk)
			if err := decode(r, r1, buf[:(r1-r)*c]); err != nil {
				return nil, err
			}
			s.Add(buf[:(r1-r)*c])
		}
		scale = s.Scale()
		if math.IsNaN(float64(scale)) || math.IsInf(float64(scale), 0) {
			return nil, fmt.Errorf("absmean scale is %v", scale)
		}
	}
	dst := make([]byte, size)
	for r := 0; r < rows; r += chunk {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r1 := min(rows, r+chunk)
		vals := buf[:(r1-r)*c]
		if err := decode(r, r1, vals); err != nil {
			return nil, err
		}
		err := par.Rows(r1-r, func(a, b int) error {
			v := vals[a*c : b*c]
			if ternary {
				quant.Ternarize(v, v, scale)
			}
			return quant.Quantize(out, dst[(r+a)*outRB:(r+b)*outRB], v)
		})
		if err != nil {
			return nil, err
		}
	}
	if quant.IsI2S(out) {
		// Each chunk packed its codes; the one scale follows them all.
		binary.LittleEndian.PutUint32(dst[n/4:], math.Float32bits(scale))
	}
	return dst, nil
}
