package convert

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"

	"github.com/edgellm/edgellm/quant"
)

// maxHeaderBytes bounds a safetensors header, as the reference
// implementation does (100 MB), so a hostile length cannot make us
// allocate without bound.
const maxHeaderBytes = 100 << 20

// maxDims bounds a tensor's rank; real checkpoints have at most 4 or 5.
const maxDims = 8

// dtypeSizes are the element sizes of the safetensors dtypes we accept in a
// header; conversion reads only F32, F16, BF16 and U8 (packed ternary).
var dtypeSizes = map[string]int64{
	"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
	"I16": 2, "U16": 2, "F16": 2, "BF16": 2,
	"I32": 4, "U32": 4, "F32": 4,
	"I64": 8, "U64": 8, "F64": 8,
}

// stTensor is one tensor of a safetensors file: its dtype, its shape (the
// PyTorch order: rows first) and its byte range in the data section.
type stTensor struct {
	Name       string
	DType      string
	Shape      []int64
	Begin, End int64 // offsets in the data section
	file       *stFile
}

// Elements is the product of the shape (1 for a scalar).
func (t *stTensor) Elements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// stFile is an open safetensors file: the parsed header and the file, read
// through ReadAt (nothing is loaded until a tensor is asked for).
type stFile struct {
	path     string
	f        *os.File
	dataOff  int64
	Tensors  map[string]*stTensor
	Metadata map[string]string
}

// openSafetensors opens path and checks its header: size, JSON, every
// tensor's dtype, shape and byte range against the file's size.
func openSafetensors(path string) (*stFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("convert: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("convert: %w", err)
	}
	var lenBuf [8]byte
	if _, err := f.ReadAt(lenBuf[:], 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("convert: %s: safetensors header length: %w", path, err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > maxHeaderBytes || int64(n) > st.Size()-8 {
		f.Close()
		return nil, fmt.Errorf("convert: %s: safetensors header of %d bytes (file %d bytes, limit %d)", path, n, st.Size(), maxHeaderBytes)
	}
	hdr := make([]byte, n)
	if _, err := f.ReadAt(hdr, 8); err != nil {
		f.Close()
		return nil, fmt.Errorf("convert: %s: safetensors header: %w", path, err)
	}
	dataOff := 8 + int64(n)
	tensors, meta, err := parseSafetensorsHeader(hdr, st.Size()-dataOff)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("convert: %s: %w", path, err)
	}
	sf := &stFile{path: path, f: f, dataOff: dataOff, Tensors: tensors, Metadata: meta}
	for _, t := range tensors {
		t.file = sf
	}
	return sf, nil
}

func (s *stFile) Close() error { return s.f.Close() }

// parseSafetensorsHeader parses a header's JSON: an object of tensor
// entries {"dtype", "shape", "data_offsets"} and an optional
// "__metadata__" of strings. Every range must lie within dataLen bytes,
// match its dtype and shape exactly, and not overlap another.
func parseSafetensorsHeader(hdr []byte, dataLen int64) (map[string]*stTensor, map[string]string, error) {
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(hdr))
	if err := dec.Decode(&raw); err != nil {
		return nil, nil, fmt.Errorf("safetensors header: %w", err)
	}
	if raw == nil {
		return nil, nil, errors.New("safetensors header: not a JSON object")
	}
	// Only padding may follow the object (the format pads with spaces).
	if rest, _ := io.ReadAll(dec.Buffered()); len(bytes.TrimRight(rest, " \t\r\n")) != 0 {
		return nil, nil, errors.New("safetensors header: data after the JSON object")
	}
	tensors := map[string]*stTensor{}
	var meta map[string]string
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &meta); err != nil {
				return nil, nil, fmt.Errorf("safetensors header: __metadata__: %w", err)
			}
			continue
		}
		var e struct {
			DType   *string  `json:"dtype"`
			Shape   *[]int64 `json:"shape"`
			Offsets *[]int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(msg, &e); err != nil {
			return nil, nil, fmt.Errorf("safetensors tensor %q: %w", name, err)
		}
		if e.DType == nil || e.Shape == nil || e.Offsets == nil {
			return nil, nil, fmt.Errorf("safetensors tensor %q: dtype, shape and data_offsets are required", name)
		}
		size, ok := dtypeSizes[*e.DType]
		if !ok {
			return nil, nil, fmt.Errorf("safetensors tensor %q: unknown dtype %q", name, *e.DType)
		}
		shape, offs := *e.Shape, *e.Offsets
		if len(shape) > maxDims {
			return nil, nil, fmt.Errorf("safetensors tensor %q: %d dimensions (at most %d)", name, len(shape), maxDims)
		}
		n := int64(1)
		for _, d := range shape {
			if d < 0 || (d > 0 && n > math.MaxInt64/size/d) {
				return nil, nil, fmt.Errorf("safetensors tensor %q: shape %v out of range", name, shape)
			}
			n *= d
		}
		if len(offs) != 2 || offs[0] < 0 || offs[1] < offs[0] || offs[1] > dataLen {
			return nil, nil, fmt.Errorf("safetensors tensor %q: data_offsets %v outside the %d data bytes", name, offs, dataLen)
		}
		if offs[1]-offs[0] != n*size {
			return nil, nil, fmt.Errorf("safetensors tensor %q: %s %v takes %d bytes, data_offsets give %d", name, *e.DType, shape, n*size, offs[1]-offs[0])
		}
		tensors[name] = &stTensor{Name: name, DType: *e.DType, Shape: shape, Begin: offs[0], End: offs[1]}
	}
	// Ranges must not overlap (the format lays tensors out back to back).
	byBegin := make([]*stTensor, 0, len(tensors))
	for _, t := range tensors {
		if t.End > t.Begin {
			byBegin = append(byBegin, t)
		}
	}
	sort.Slice(byBegin, func(i, j int) bool { return byBegin[i].Begin < byBegin[j].Begin })
	for i := 1; i < len(byBegin); i++ {
		if byBegin[i].Begin < byBegin[i-1].End {
			return nil, nil, fmt.Errorf("safetensors tensors %q and %q overlap", byBegin[i-1].Name, byBegin[i].Name)
		}
	}
	return tensors, meta, nil
}

// Bytes reads the tensor's raw bytes.
func (t *stTensor) Bytes() ([]byte, error) {
	b := make([]byte, t.End-t.Begin)
	if _, err := t.file.f.ReadAt(b, t.file.dataOff+t.Begin); err != nil {
		return nil, fmt.Errorf("convert: tensor %q: %w", t.Name, err)
	}
	return b, nil
}

// floatDTypes are the dtypes Floats decodes.
var floatDTypes = []string{"F32", "F16", "BF16"}

// Floats reads an F32, F16 or BF16 tensor as float32 (exactly: both 16-bit
// types widen without rounding).
func (t *stTensor) Floats() ([]float32, error) {
	if !slices.Contains(floatDTypes, t.DType) {
		return nil, fmt.Errorf("convert: tensor %q: dtype %s is not supported (want F32, F16 or BF16)", t.Name, t.DType)
	}
	b, err := t.Bytes()
	if err != nil {
		return nil, err
	}
	out := make([]float32, t.Elements())
	var typ quant.Type
	switch t.DType {
	case "F32":
		typ = quant.F32
	case "F16":
		typ = quant.F16
	case "BF16":
		typ = quant.BF16
	}
	if err := quant.Dequantize(typ, out, b); err != nil {
		return nil, fmt.Errorf("convert: tensor %q: %w", t.Name, err)
	}
	return out, nil
}
