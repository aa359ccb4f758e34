package gguf

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/edgellm/edgellm/quant"
)

// Writer builds a GGUF v3 file: metadata in insertion order, then tensor
// infos and tensor data in insertion order, each tensor padded to the
// alignment (as llama.cpp writes them).
//
// Adding a key that is already present replaces its value in place, so a
// converter can copy a file's metadata and then override some of it. Errors
// from Add* and SetAlignment are kept and returned by WriteTo.
type Writer struct {
	alignment uint64
	kvs       []KV
	kvIndex   map[string]int
	tensors   []TensorInfo
	fills     []func([]byte) error // per tensor: nil, or AddTensorFunc's fill
	tensIndex map[string]struct{}
	err       error
}

// NewWriter returns an empty writer with the default alignment (32).
func NewWriter() *Writer {
	return &Writer{
		alignment: DefaultAlignment,
		kvIndex:   map[string]int{},
		tensIndex: map[string]struct{}{},
	}
}

func (w *Writer) fail(err error) {
	if w.err == nil {
		w.err = err
	}
}

// SetAlignment sets the data alignment, a power of two, and records it as
// general.alignment (uint32) unless it is the default and the key is absent.
func (w *Writer) SetAlignment(n int) {
	if n <= 0 || n&(n-1) != 0 || uint64(n) > math.MaxUint32 {
		w.fail(fmt.Errorf("gguf: alignment %d is not a power of two that fits uint32", n))
		return
	}
	w.alignment = uint64(n)
	if _, ok := w.kvIndex[KeyAlignment]; ok || n != DefaultAlignment {
		w.set(KeyAlignment, NewUint32(uint32(n)))
	}
}

// Add sets key to v. Setting general.alignment also sets the alignment.
func (w *Writer) Add(key string, v Value) {
	if !v.Type().Valid() {
		w.fail(fmt.Errorf("gguf: key %q: invalid value type %d", key, uint32(v.Type())))
		return
	}
	if key == KeyAlignment {
		a, ok := v.Uint()
		if !ok || a == 0 || a&(a-1) != 0 || a > math.MaxUint32 {
			w.fail(fmt.Errorf("gguf: key %q: %v (%s) is not a power of two that fits uint32", key, v, v.Type()))
			return
		}
		w.alignment = a
	}
	w.set(key, v)
}

func (w *Writer) set(key string, v Value) {
	if i, ok := w.kvIndex[key]; ok {
		w.kvs[i].Value = v
		return
	}
	w.kvIndex[key] = len(w.kvs)
	w.kvs = append(w.kvs, KV{Key: key, Value: v})
}

func (w *Writer) AddString(key, v string)          { w.Add(key, NewString(v)) }
func (w *Writer) AddUint32(key string, v uint32)   { w.Add(key, NewUint32(v)) }
func (w *Writer) AddInt32(key string, v int32)     { w.Add(key, NewInt32(v)) }
func (w *Writer) AddUint64(key string, v uint64)   { w.Add(key, NewUint64(v)) }
func (w *Writer) AddFloat32(key string, v float32) { w.Add(key, NewFloat32(v)) }
func (w *Writer) AddBool(key string, v bool)       { w.Add(key, NewBool(v)) }
func (w *Writer) AddStrings(key string, v []string) {
	w.Add(key, NewStrings(v))
}
func (w *Writer) AddFloat32s(key string, v []float32) { w.Add(key, NewFloat32s(v)) }
func (w *Writer) AddInt32s(key string, v []int32)     { w.Add(key, NewInt32s(v)) }

// AddTensor appends a tensor. dims are ne0 first (Dims[0] is the row
// length); data must be exactly quant.TensorBytes of the shape and is kept,
// not copied, until WriteTo.
func (w *Writer) AddTensor(name string, typ quant.Type, dims []uint64, data []byte) error {
	size, err := w.addTensor(name, typ, dims)
	if err != nil {
		return err
	}
	if uint64(len(data)) != size {
		w.dropLast()
		return fmt.Errorf("gguf: tensor %q: %s %v takes %d bytes, got %d", name, typ, dims, size, len(data))
	}
	w.tensors[len(w.tensors)-1].Data = data
	return nil
}

// AddTensorFunc appends a tensor whose bytes fill writes, during WriteTo,
// into a buffer of exactly the tensor's size, so a converter holds one
// tensor at a time rather than the whole file. An error from fill stops
// WriteTo and is returned by it.
func (w *Writer) AddTensorFunc(name string, typ quant.Type, dims []uint64, fill func(dst []byte) error) error {
	if _, err := w.addTensor(name, typ, dims); err != nil {
		return err
	}
	w.fills[len(w.fills)-1] = fill
	return nil
}

// addTensor checks a tensor's name, type and shape and appends its info,
// returning its size in bytes.
func (w *Writer) addTensor(name string, typ quant.Type, dims []uint64) (uint64, error) {
	if _, dup := w.tensIndex[name]; dup {
		return 0, fmt.Errorf("gguf: tensor %q: duplicate tensor name", name)
	}
	if len(dims) < 1 || len(dims) > MaxDims {
		return 0, fmt.Errorf("gguf: tensor %q: %d dimensions, want 1 to %d", name, len(dims), MaxDims)
	}
	if !typ.Known() {
		return 0, fmt.Errorf("gguf: tensor %q: unknown type %d", name, uint32(typ))
	}
	n := uint64(1)
	for j, d := range dims {
		if d == 0 {
			return 0, fmt.Errorf("gguf: tensor %q: dimension %d is 0", name, j)
		}
		if n > maxElements/d {
			return 0, fmt.Errorf("gguf: tensor %q: dimensions %v: too many elements", name, dims)
		}
		n *= d
	}
	size, err := quant.TensorBytes(typ, dims[0], n)
	if err != nil {
		return 0, fmt.Errorf("gguf: tensor %q: %s %v: %w", name, typ, dims, err)
	}
	w.tensIndex[name] = struct{}{}
	w.tensors = append(w.tensors, TensorInfo{
		Name: name, Dims: append([]uint64(nil), dims...), Type: typ, Size: size,
	})
	w.fills = append(w.fills, nil)
	return size, nil
}

// dropLast removes the tensor addTensor just appended.
func (w *Writer) dropLast() {
	delete(w.tensIndex, w.tensors[len(w.tensors)-1].Name)
	w.tensors = w.tensors[:len(w.tensors)-1]
	w.fills = w.fills[:len(w.fills)-1]
}

// WriteFile writes the file to path (created or truncated).
func (w *Writer) WriteFile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("gguf: %w", err)
	}
	if _, err := w.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("gguf: %w", err)
	}
	return nil
}

// countWriter counts the bytes written through it.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// WriteTo writes the file as GGUF v3.
func (w *Writer) WriteTo(out io.Writer) (int64, error) {
	if w.err != nil {
		return 0, w.err
	}
	cw := &countWriter{w: out}
	e := &encoder{w: bufio.NewWriterSize(cw, 1<<20)}
	e.raw([]byte(Magic))
	e.u32(3)
	e.u64(uint64(len(w.tensors)))
	e.u64(uint64(len(w.kvs)))
	for _, kv := range w.kvs {
		e.str(kv.Key)
		e.u32(uint32(kv.Value.Type()))
		e.value(kv.Value)
	}
	a := w.alignment
	var off uint64
	for _, t := range w.tensors {
		e.str(t.Name)
		e.u32(uint32(len(t.Dims)))
		for _, d := range t.Dims {
			e.u64(d)
		}
		e.u32(uint32(t.Type))
		e.u64(off)
		off += alignUp(t.Size, a)
	}
	// With no tensors there is no data section to align (vocabulary-only
	// files from llama.cpp end right after the metadata).
	if len(w.tensors) > 0 {
		e.pad(a)
	}
	var buf []byte // AddTensorFunc's tensors, one at a time
	for i, t := range w.tensors {
		data := t.Data
		if fill := w.fills[i]; fill != nil && e.err == nil {
			if uint64(cap(buf)) < t.Size {
				buf = make([]byte, t.Size)
			}
			data = buf[:t.Size]
			clear(data)
			if err := fill(data); err != nil {
				return cw.n, fmt.Errorf("gguf: tensor %q: %w", t.Name, err)
			}
		}
		e.raw(data)
		e.pad(a)
	}
	if e.err == nil {
		e.err = e.w.Flush()
	}
	if e.err != nil {
		return cw.n, fmt.Errorf("gguf: write: %w", e.err)
	}
	return cw.n, nil
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) / a * a }

// encoder writes little-endian values, keeping the first error and the
// position (for padding).
type encoder struct {
	w   *bufio.Writer
	pos uint64
	err error
	buf [8]byte
}

func (e *encoder) raw(b []byte) {
	if e.err != nil {
		return
	}
	_, e.err = e.w.Write(b)
	e.pos += uint64(len(b))
}

func (e *encoder) u8(v uint8)   { e.raw([]byte{v}) }
func (e *encoder) u16(v uint16) { binary.LittleEndian.PutUint16(e.buf[:], v); e.raw(e.buf[:2]) }
func (e *encoder) u32(v uint32) { binary.LittleEndian.PutUint32(e.buf[:], v); e.raw(e.buf[:4]) }
func (e *encoder) u64(v uint64) { binary.LittleEndian.PutUint64(e.buf[:], v); e.raw(e.buf[:8]) }

func (e *encoder) str(s string) {
	e.u64(uint64(len(s)))
	if e.err == nil {
		_, e.err = e.w.WriteString(s)
		e.pos += uint64(len(s))
	}
}

var zeros [256]byte

func (e *encoder) pad(a uint64) {
	for n := alignUp(e.pos, a) - e.pos; n > 0; {
		k := min(n, uint64(len(zeros)))
		e.raw(zeros[:k])
		n -= k
	}
}

// encodeValue returns v's payload as the writer encodes it.
func encodeValue(v Value) []byte {
	var buf bytes.Buffer
	e := &encoder{w: bufio.NewWriter(&buf)}
	e.value(v)
	_ = e.w.Flush() // a bytes.Buffer does not fail
	return buf.Bytes()
}

// value writes v's payload (its type id is written by the caller).
func (e *encoder) value(v Value) {
	switch v.typ {
	case TypeUint8, TypeInt8, TypeBool:
		e.u8(uint8(v.bits))
	case TypeUint16, TypeInt16:
		e.u16(uint16(v.bits))
	case TypeUint32, TypeInt32, TypeFloat32:
		e.u32(uint32(v.bits))
	case TypeUint64, TypeInt64, TypeFloat64:
		e.u64(v.bits)
	case TypeString:
		e.str(v.str)
	case TypeArray:
		e.u32(uint32(v.elem))
		e.u64(uint64(v.Len()))
		e.array(v)
	}
}

func (e *encoder) array(v Value) {
	switch s := v.arr.(type) {
	case []uint8:
		e.raw(s)
	case []int8:
		for _, x := range s {
			e.u8(uint8(x))
		}
	case []bool:
		for _, x := range s {
			if x {
				e.u8(1)
			} else {
				e.u8(0)
			}
		}
	case []uint16:
		for _, x := range s {
			e.u16(x)
		}
	case []int16:
		for _, x := range s {
			e.u16(uint16(x))
		}
	case []uint32:
		for _, x := range s {
			e.u32(x)
		}
	case []int32:
		for _, x := range s {
			e.u32(uint32(x))
		}
	case []float32:
		for _, x := range s {
			e.u32(math.Float32bits(x))
		}
	case []uint64:
		for _, x := range s {
			e.u64(x)
		}
	case []int64:
		for _, x := range s {
			e.u64(uint64(x))
		}
	case []float64:
		for _, x := range s {
			e.u64(math.Float64bits(x))
		}
	case []string:
		for _, x := range s {
			e.str(x)
		}
	case []Value:
		for _, x := range s {
			e.value(x)
		}
	}
}
