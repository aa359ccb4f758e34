// Package gguf reads and writes GGUF files (versions 2 and 3 read, 3
// written): typed metadata and tensor infos, with tensor data as zero-copy
// views of a read-only memory mapping. Every count, length, offset and size
// in a file is checked against the bytes that remain before it is used, so a
// truncated or hostile file gives an error, never a panic or an allocation
// sized by an untrusted number.
//
// It knows tensor types only through package quant (ids and byte sizes); it
// must not know about models, architectures or backends.
package gguf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"os"
	"unsafe"

	"github.com/edgellm/edgellm/quant"
)

// Magic is the first four bytes of a GGUF file.
const Magic = "GGUF"

// DefaultAlignment is the data alignment when general.alignment is absent.
const DefaultAlignment = 32

// KeyAlignment is the metadata key that sets the data alignment.
const KeyAlignment = "general.alignment"

// MaxDims is the most dimensions a tensor may have (GGML_MAX_DIMS).
const MaxDims = 4

// maxDepth bounds arrays nested in arrays so a hostile file cannot recurse
// deeply; real files nest at most once.
const maxDepth = 16

// maxElements bounds a tensor's element count (as quant.TensorBytes does).
const maxElements = 1 << 50

// mmap maps a file read-only; a variable so tests can make it fail.
var mmap = mmapFile

// KV is one metadata key and its value, in file order.
type KV struct {
	Key   string
	Value Value
}

// TensorInfo describes one tensor. Data is a view of the file's bytes
// (of the mapping when opened with Open), valid until File.Close.
type TensorInfo struct {
	Name   string
	Dims   []uint64 // ne0 first: Dims[0] is the contiguous (row) dimension
	Type   quant.Type
	Offset uint64 // from the start of the data section
	Size   uint64 // bytes, from quant.TensorBytes
	Data   []byte
}

// Elements is the tensor's number of elements.
func (t *TensorInfo) Elements() uint64 {
	n := uint64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// File is a parsed GGUF file.
type File struct {
	Version    uint32
	Alignment  uint64 // data alignment (general.alignment or 32)
	DataOffset uint64 // where the data section starts in the file
	KVs        []KV
	Tensors    []TensorInfo

	data      []byte
	unmap     func() error
	kvIndex   map[string]int
	tensIndex map[string]int
}

// Open maps the file at path read-only and parses it; tensor Data are views
// of the mapping. Where mapping fails the file is read into memory instead.
// Call Close when done with the tensors.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	size := st.Size()
	if size < 0 || uint64(size) > math.MaxInt {
		return nil, fmt.Errorf("gguf: %s: size %d is too large to map", path, size)
	}
	var data []byte
	var unmap func() error
	if size > 0 {
		data, unmap, err = mmap(f, int(size))
	}
	if size == 0 || err != nil {
		// Mapping is an optimisation: fall back to reading into memory.
		data = make([]byte, size)
		if _, err := f.ReadAt(data, 0); err != nil && size > 0 {
			return nil, fmt.Errorf("gguf: %s: %w", path, err)
		}
		unmap = nil
	}
	gf, err := parse(data)
	if err != nil {
		if unmap != nil {
			_ = unmap()
		}
		return nil, fmt.Errorf("gguf: %s: %w", path, err)
	}
	gf.unmap = unmap
	return gf, nil
}

// Release says a backend has copied what it needs of b, a tensor's Data: on
// a mapped file its pages leave the resident set (they are read from the
// file again if b is touched later), so a repacked model does not keep two
// copies in memory. It does nothing for files read into memory, for Parse'd
// buffers, or for b outside the mapping.
func (f *File) Release(b []byte) {
	if f.unmap == nil || len(b) == 0 || len(f.data) == 0 {
		return
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(f.data)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	if p < base || p+uintptr(len(b)) > base+uintptr(len(f.data)) {
		return
	}
	dropPages(b)
}

// Parse parses a GGUF file held in data. Tensor Data are views of data.
func Parse(data []byte) (*File, error) {
	f, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	return f, nil
}

// Close releases the mapping made by Open; tensor Data must not be used
// afterwards. Metadata stays valid (it is copied out of the mapping).
func (f *File) Close() error {
	if f == nil || f.unmap == nil {
		return nil
	}
	err := f.unmap()
	f.unmap = nil
	for i := range f.Tensors {
		f.Tensors[i].Data = nil
	}
	f.data = nil
	if err != nil {
		return fmt.Errorf("gguf: unmap: %w", err)
	}
	return nil
}

// Bytes is the whole file (the mapping when opened with Open).
func (f *File) Bytes() []byte { return f.data }

// Lookup returns the value of key.
func (f *File) Lookup(key string) (Value, bool) {
	i, ok := f.kvIndex[key]
	if !ok {
		return Value{}, false
	}
	return f.KVs[i].Value, true
}

// Has reports whether key is present.
func (f *File) Has(key string) bool { _, ok := f.kvIndex[key]; return ok }

// Tensor returns the tensor named name.
func (f *File) Tensor(name string) (*TensorInfo, bool) {
	i, ok := f.tensIndex[name]
	if !ok {
		return nil, false
	}
	return &f.Tensors[i], true
}

// parser walks a byte slice; every read checks the bytes that remain.
type parser struct {
	data []byte
	pos  int
}

var errShort = errors.New("unexpected end of file")

func (p *parser) left() int { return len(p.data) - p.pos }

func (p *parser) bytes(n int) ([]byte, error) {
	if n < 0 || n > p.left() {
		return nil, fmt.Errorf("%w at offset %d (need %d bytes, %d left)", errShort, p.pos, n, p.left())
	}
	b := p.data[p.pos : p.pos+n]
	p.pos += n
	return b, nil
}

func (p *parser) u32() (uint32, error) {
	b, err := p.bytes(4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (p *parser) u64() (uint64, error) {
	b, err := p.bytes(8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// strBytes reads a length-prefixed string without copying it.
func (p *parser) strBytes() ([]byte, error) {
	n, err := p.u64()
	if err != nil {
		return nil, err
	}
	if n > uint64(p.left()) {
		return nil, fmt.Errorf("string length %d at offset %d exceeds the file (%d bytes left)", n, p.pos-8, p.left())
	}
	return p.bytes(int(n))
}

func (p *parser) str() (string, error) {
	b, err := p.strBytes()
	return string(b), err
}

// count reads an element count and checks that count elements of at least
// minSize bytes each fit in what remains; what means the elements, for errors.
func (p *parser) count(minSize int, what string) (int, error) {
	n, err := p.u64()
	if err != nil {
		return 0, err
	}
	if n > uint64(p.left()/minSize) {
		return 0, fmt.Errorf("%d %s exceed the file (%d bytes left)", n, what, p.left())
	}
	return int(n), nil
}

func parse(data []byte) (*File, error) {
	p := &parser{data: data}
	magic, err := p.bytes(4)
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	if string(magic) != Magic {
		return nil, fmt.Errorf("bad magic %q, want %q", magic, Magic)
	}
	version, err := p.u32()
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	switch {
	case version == 1:
		return nil, fmt.Errorf("version 1 is not supported (only 2 and 3)")
	case version != 2 && version != 3:
		if bits.ReverseBytes32(version) <= 3 {
			return nil, fmt.Errorf("version %d is not supported (a big-endian file?)", version)
		}
		return nil, fmt.Errorf("version %d is not supported (only 2 and 3)", version)
	}
	f := &File{Version: version, Alignment: DefaultAlignment, data: data}

	// A tensor info takes at least a name length, one dim count, one dim, a
	// type and an offset; a KV at least a key length, a type and one byte.
	const minTensorInfo, minKV = 8 + 4 + 8 + 4 + 8, 8 + 4 + 1
	nTensors, err := p.count(minTensorInfo, "tensor infos")
	if err != nil {
		return nil, fmt.Errorf("header: tensor count: %w", err)
	}
	nKV, err := p.count(minKV, "metadata keys")
	if err != nil {
		return nil, fmt.Errorf("header: metadata count: %w", err)
	}

	f.KVs = make([]KV, 0, nKV)
	f.kvIndex = make(map[string]int, nKV)
	for i := range nKV {
		key, err := p.str()
		if err != nil {
			return nil, fmt.Errorf("metadata key %d: %w", i, err)
		}
		if _, dup := f.kvIndex[key]; dup {
			return nil, fmt.Errorf("metadata key %d (%q): duplicate key", i, key)
		}
		typ, err := p.u32()
		if err != nil {
			return nil, fmt.Errorf("metadata key %d (%q): %w", i, key, err)
		}
		v, err := p.value(ValueType(typ), 0)
		if err != nil {
			return nil, fmt.Errorf("metadata key %d (%q): %w", i, key, err)
		}
		f.kvIndex[key] = len(f.KVs)
		f.KVs = append(f.KVs, KV{Key: key, Value: v})
	}
	if v, ok := f.Lookup(KeyAlignment); ok {
		a, ok := v.Uint()
		if !ok || a == 0 || a&(a-1) != 0 {
			return nil, fmt.Errorf("metadata %s = %v (%s): want a power of two", KeyAlignment, v, v.Type())
		}
		f.Alignment = a
	}

	f.Tensors = make([]TensorInfo, 0, nTensors)
	f.tensIndex = make(map[string]int, nTensors)
	for i := range nTensors {
		t, err := p.tensorInfo()
		if err != nil {
			if t.Name != "" {
				return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
			}
			return nil, fmt.Errorf("tensor %d: %w", i, err)
		}
		if _, dup := f.tensIndex[t.Name]; dup {
			return nil, fmt.Errorf("tensor %d: duplicate tensor name %q", i, t.Name)
		}
		f.tensIndex[t.Name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, t)
	}

	// The data section starts at the end of the header, aligned.
	start := uint64(p.pos)
	if r := start % f.Alignment; r != 0 {
		pad := f.Alignment - r
		if start > math.MaxUint64-pad {
			return nil, fmt.Errorf("data section: alignment %d overflows", f.Alignment)
		}
		start += pad
	}
	f.DataOffset = start
	if len(f.Tensors) > 0 && start > uint64(len(data)) {
		return nil, fmt.Errorf("data section starts at %d, beyond the end of the file (%d bytes)", start, len(data))
	}
	for i := range f.Tensors {
		t := &f.Tensors[i]
		if t.Offset%f.Alignment != 0 {
			return nil, fmt.Errorf("tensor %q: offset %d is not a multiple of the alignment %d", t.Name, t.Offset, f.Alignment)
		}
		room := uint64(len(data)) - start
		if t.Offset > room || t.Size > room-t.Offset {
			return nil, fmt.Errorf("tensor %q: %d bytes at data offset %d exceed the file (data section holds %d bytes)", t.Name, t.Size, t.Offset, room)
		}
		lo := start + t.Offset
		hi := lo + t.Size
		t.Data = data[lo:hi:hi]
	}
	return f, nil
}

func (p *parser) tensorInfo() (TensorInfo, error) {
	var t TensorInfo
	name, err := p.str()
	if err != nil {
		return t, fmt.Errorf("name: %w", err)
	}
	t.Name = name
	nd, err := p.u32()
	if err != nil {
		return t, err
	}
	if nd < 1 || nd > MaxDims {
		return t, fmt.Errorf("%d dimensions, want 1 to %d", nd, MaxDims)
	}
	t.Dims = make([]uint64, nd)
	n := uint64(1)
	for j := range t.Dims {
		d, err := p.u64()
		if err != nil {
			return t, err
		}
		if d == 0 {
			return t, fmt.Errorf("dimension %d is 0", j)
		}
		hi, lo := bits.Mul64(n, d)
		if hi != 0 || lo > maxElements {
			return t, fmt.Errorf("dimensions %v: too many elements", t.Dims[:j+1])
		}
		t.Dims[j] = d
		n = lo
	}
	typ, err := p.u32()
	if err != nil {
		return t, err
	}
	t.Type = quant.Type(typ)
	if !t.Type.Known() {
		return t, fmt.Errorf("unknown type %d", typ)
	}
	t.Size, err = quant.TensorBytes(t.Type, t.Dims[0], n)
	if err != nil {
		return t, fmt.Errorf("%s %v: %w", t.Type, t.Dims, err)
	}
	t.Offset, err = p.u64()
	return t, err
}

// value reads one value of type t; depth counts enclosing arrays.
func (p *parser) value(t ValueType, depth int) (Value, error) {
	if !t.Valid() {
		return Value{}, fmt.Errorf("unknown value type %d", uint32(t))
	}
	switch t {
	case TypeString:
		s, err := p.str()
		return NewString(s), err
	case TypeArray:
		return p.array(depth)
	}
	b, err := p.bytes(t.size())
	if err != nil {
		return Value{}, err
	}
	v := Value{typ: t}
	switch t {
	case TypeUint8:
		v.bits = uint64(b[0])
	case TypeInt8:
		v.bits = uint64(int64(int8(b[0])))
	case TypeBool:
		if b[0] > 1 {
			return Value{}, fmt.Errorf("bool value %d is not 0 or 1", b[0])
		}
		v.bits = uint64(b[0])
	case TypeUint16:
		v.bits = uint64(binary.LittleEndian.Uint16(b))
	case TypeInt16:
		v.bits = uint64(int64(int16(binary.LittleEndian.Uint16(b))))
	case TypeUint32, TypeFloat32:
		v.bits = uint64(binary.LittleEndian.Uint32(b))
	case TypeInt32:
		v.bits = uint64(int64(int32(binary.LittleEndian.Uint32(b))))
	default: // 64-bit types
		v.bits = binary.LittleEndian.Uint64(b)
	}
	return v, nil
}

func (p *parser) array(depth int) (Value, error) {
	if depth >= maxDepth {
		return Value{}, fmt.Errorf("arrays nested deeper than %d", maxDepth)
	}
	et, err := p.u32()
	if err != nil {
		return Value{}, err
	}
	elem := ValueType(et)
	if !elem.Valid() {
		return Value{}, fmt.Errorf("array of unknown value type %d", et)
	}
	n64, err := p.u64()
	if err != nil {
		return Value{}, err
	}
	// Bound the count (and so any allocation) by the bytes that remain.
	if n64 > uint64(p.left()/elem.minSize()) {
		return Value{}, fmt.Errorf("array of %d %ss exceeds the file (%d bytes left)", n64, elem, p.left())
	}
	n := int(n64)
	if elem == TypeString {
		s, err := p.strings(n)
		return Value{typ: TypeArray, elem: elem, arr: s}, err
	}
	if elem == TypeArray {
		vs := make([]Value, n)
		for i := range vs {
			if vs[i], err = p.array(depth + 1); err != nil {
				return Value{}, fmt.Errorf("array element %d: %w", i, err)
			}
		}
		return Value{typ: TypeArray, elem: elem, arr: vs}, nil
	}
	b, err := p.bytes(n * elem.size())
	if err != nil {
		return Value{}, err
	}
	le := binary.LittleEndian
	var arr any
	switch elem {
	case TypeUint8:
		arr = append([]uint8(nil), b...)
	case TypeInt8:
		s := make([]int8, n)
		for i := range s {
			s[i] = int8(b[i])
		}
		arr = s
	case TypeBool:
		s := make([]bool, n)
		for i := range s {
			if b[i] > 1 {
				return Value{}, fmt.Errorf("array element %d: bool value %d is not 0 or 1", i, b[i])
			}
			s[i] = b[i] == 1
		}
		arr = s
	case TypeUint16:
		s := make([]uint16, n)
		for i := range s {
			s[i] = le.Uint16(b[2*i:])
		}
		arr = s
	case TypeInt16:
		s := make([]int16, n)
		for i := range s {
			s[i] = int16(le.Uint16(b[2*i:]))
		}
		arr = s
	case TypeUint32:
		s := make([]uint32, n)
		for i := range s {
			s[i] = le.Uint32(b[4*i:])
		}
		arr = s
	case TypeInt32:
		s := make([]int32, n)
		for i := range s {
			s[i] = int32(le.Uint32(b[4*i:]))
		}
		arr = s
	case TypeFloat32:
		s := make([]float32, n)
		for i := range s {
			s[i] = math.Float32frombits(le.Uint32(b[4*i:]))
		}
		arr = s
	case TypeUint64:
		s := make([]uint64, n)
		for i := range s {
			s[i] = le.Uint64(b[8*i:])
		}
		arr = s
	case TypeInt64:
		s := make([]int64, n)
		for i := range s {
			s[i] = int64(le.Uint64(b[8*i:]))
		}
		arr = s
	case TypeFloat64:
		s := make([]float64, n)
		for i := range s {
			s[i] = math.Float64frombits(le.Uint64(b[8*i:]))
		}
		arr = s
	}
	return Value{typ: TypeArray, elem: elem, arr: arr}, nil
}

// strings reads n length-prefixed strings. It checks them all first, then
// copies their bytes out in one allocation that the strings share, since a
// vocabulary holds 10^5 small strings.
func (p *parser) strings(n int) ([]string, error) {
	start := p.pos
	total := 0
	for i := range n {
		b, err := p.strBytes()
		if err != nil {
			return nil, fmt.Errorf("array element %d: %w", i, err)
		}
		total += len(b)
	}
	end := p.pos
	buf := make([]byte, 0, total)
	p.pos = start
	for range n {
		b, _ := p.strBytes() // checked above
		buf = append(buf, b...)
	}
	p.pos = end
	all := string(buf)
	out := make([]string, n)
	p.pos = start
	off := 0
	for i := range out {
		b, _ := p.strBytes()
		out[i] = all[off : off+len(b)]
		off += len(b)
	}
	p.pos = end
	return out, nil
}
