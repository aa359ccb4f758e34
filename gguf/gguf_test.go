package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/quant"
)

// allValues holds one metadata value of every type, including edge values
// and nested arrays.
func allValues(t testing.TB) []KV {
	t.Helper()
	must := func(v Value, err error) Value {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	inner1 := must(NewArray([]int16{-3, 4}))
	inner2 := must(NewArray([]string{}))
	inner3 := must(NewArray([]Value{must(NewArray([]bool{true}))}))
	return []KV{
		{"u8", NewUint8(255)},
		{"i8", NewInt8(-128)},
		{"u16", NewUint16(65535)},
		{"i16", NewInt16(-32768)},
		{"u32", NewUint32(math.MaxUint32)},
		{"i32", NewInt32(math.MinInt32)},
		{"u64", NewUint64(math.MaxUint64)},
		{"i64", NewInt64(math.MinInt64)},
		{"f32", NewFloat32(-1.5)},
		{"f32nan", NewFloat32(math.Float32frombits(0x7fa00001))}, // signalling NaN payload
		{"f64", NewFloat64(math.Pi)},
		{"bool.t", NewBool(true)},
		{"bool.f", NewBool(false)},
		{"str", NewString("héllo\x00world")},
		{"str.empty", NewString("")},
		{"a.u8", must(NewArray([]uint8{0, 1, 255}))},
		{"a.i8", must(NewArray([]int8{-1, 0, 127}))},
		{"a.u16", must(NewArray([]uint16{1, 65535}))},
		{"a.i16", must(NewArray([]int16{-2, 2}))},
		{"a.u32", must(NewArray([]uint32{7, math.MaxUint32}))},
		{"a.i32", NewInt32s([]int32{-7, 1 << 30})},
		{"a.u64", must(NewArray([]uint64{math.MaxUint64}))},
		{"a.i64", must(NewArray([]int64{math.MinInt64, 5}))},
		{"a.f32", NewFloat32s([]float32{0.5, -0.25, float32(math.Inf(1))})},
		{"a.f64", must(NewArray([]float64{1e300, -0}))},
		{"a.bool", must(NewArray([]bool{true, false, true}))},
		{"a.str", NewStrings([]string{"<s>", "", "▁the", "\xff"})},
		{"a.str.empty", NewStrings([]string{})},
		{"a.arr", must(NewArray([]Value{inner1, inner2, inner3}))},
	}
}

// buildAll writes a file with every value type and a few tensors.
func buildAll(t testing.TB, align int) ([]byte, []KV, []TensorInfo) {
	t.Helper()
	w := NewWriter()
	kvs := allValues(t)
	for _, kv := range kvs {
		w.Add(kv.Key, kv.Value)
	}
	if align != 0 {
		w.SetAlignment(align)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	tensors := []TensorInfo{
		{Name: "a", Type: quant.F32, Dims: []uint64{3}},
		{Name: "b", Type: quant.F16, Dims: []uint64{5, 3}},
		{Name: "c", Type: quant.Q8_0, Dims: []uint64{64, 2, 1}},
		{Name: "d", Type: quant.TQ2_0, Dims: []uint64{256, 1, 2, 1}},
		{Name: "e", Type: quant.I2_S, Dims: []uint64{128, 3}},
	}
	for i := range tensors {
		ti := &tensors[i]
		size, err := quant.TensorBytes(ti.Type, ti.Dims[0], ti.Elements())
		if err != nil {
			t.Fatal(err)
		}
		ti.Size = size
		ti.Data = make([]byte, size)
		for j := range ti.Data {
			ti.Data[j] = byte(rng.Uint32())
		}
		if err := w.AddTensor(ti.Name, ti.Type, ti.Dims, ti.Data); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	n, err := w.WriteTo(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("WriteTo returned %d, wrote %d", n, buf.Len())
	}
	if align != 0 && align != DefaultAlignment {
		kvs = append(kvs, KV{KeyAlignment, NewUint32(uint32(align))})
	}
	return buf.Bytes(), kvs, tensors
}

func TestRoundTrip(t *testing.T) {
	for _, align := range []int{0, 1, 8, 32, 64, 4096} {
		data, kvs, tensors := buildAll(t, align)
		f, err := Parse(data)
		if err != nil {
			t.Fatalf("align %d: %v", align, err)
		}
		wantAlign := uint64(align)
		if align == 0 {
			wantAlign = DefaultAlignment
		}
		if f.Version != 3 || f.Alignment != wantAlign {
			t.Errorf("align %d: version %d alignment %d", align, f.Version, f.Alignment)
		}
		if f.DataOffset%wantAlign != 0 {
			t.Errorf("align %d: data offset %d not aligned", align, f.DataOffset)
		}
		// Values compare by their encoded form (NaN != NaN) and by Raw.
		if len(f.KVs) != len(kvs) {
			t.Fatalf("align %d: %d KVs, want %d", align, len(f.KVs), len(kvs))
		}
		for i, kv := range f.KVs {
			want := kvs[i]
			if kv.Key != want.Key || kv.Value.Type() != want.Value.Type() || kv.Value.ElemType() != want.Value.ElemType() {
				t.Errorf("KV %d: %q %s/%s, want %q %s/%s", i, kv.Key, kv.Value.Type(), kv.Value.ElemType(), want.Key, want.Value.Type(), want.Value.ElemType())
			}
			if !kv.Value.Equal(want.Value) {
				t.Errorf("KV %q: %v, want %v", kv.Key, kv.Value, want.Value)
			}
			if kv.Key != "f32nan" && !reflect.DeepEqual(kv.Value.Raw(), want.Value.Raw()) {
				t.Errorf("KV %q: Raw %#v, want %#v", kv.Key, kv.Value.Raw(), want.Value.Raw())
			}
		}
		if len(f.Tensors) != len(tensors) {
			t.Fatalf("%d tensors, want %d", len(f.Tensors), len(tensors))
		}
		for i, ti := range f.Tensors {
			want := tensors[i]
			if ti.Name != want.Name || ti.Type != want.Type || !reflect.DeepEqual(ti.Dims, want.Dims) ||
				ti.Size != want.Size || !bytes.Equal(ti.Data, want.Data) {
				t.Errorf("tensor %d: %s %s %v %d bytes, want %s %s %v %d", i, ti.Name, ti.Type, ti.Dims, ti.Size, want.Name, want.Type, want.Dims, want.Size)
			}
			if ti.Offset%wantAlign != 0 {
				t.Errorf("tensor %q offset %d not aligned to %d", ti.Name, ti.Offset, wantAlign)
			}
			got, ok := f.Tensor(ti.Name)
			if !ok || got != &f.Tensors[i] {
				t.Errorf("Tensor(%q) = %p, %v", ti.Name, got, ok)
			}
		}
		// Writing the parsed file again gives the same bytes.
		var again bytes.Buffer
		if _, err := rewrite(f).WriteTo(&again); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again.Bytes(), data) {
			t.Errorf("align %d: rewrite differs", align)
		}
	}
}

func TestOpenAndWriteFile(t *testing.T) {
	data, _, tensors := buildAll(t, 0)
	path := filepath.Join(t.TempDir(), "x.gguf")
	f0, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := rewrite(f0).WriteFile(path); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.Bytes(), data) {
		t.Fatal("WriteFile wrote other bytes than WriteTo")
	}
	if ti, _ := f.Tensor("c"); !bytes.Equal(ti.Data, tensors[2].Data) {
		t.Error("tensor c differs")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if f.Tensors[0].Data != nil {
		t.Error("tensor data still set after Close")
	}
	if s, err := f.String("str"); err != nil || s != "héllo\x00world" {
		t.Errorf("metadata after Close: %q, %v", s, err)
	}

	// A file that does not parse gives an error naming the path.
	bad := filepath.Join(t.TempDir(), "bad.gguf")
	if err := os.WriteFile(bad, data[:100], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("Open(truncated) = %v", err)
	}
	empty := filepath.Join(t.TempDir(), "empty.gguf")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(empty); err == nil {
		t.Error("Open(empty) gave no error")
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing.gguf")); err == nil {
		t.Error("Open(missing) gave no error")
	}
}

// TestTruncated parses every prefix of a small file: each must fail cleanly.
func TestTruncated(t *testing.T) {
	data, _, _ := buildAll(t, 0)
	if _, err := Parse(data); err != nil {
		t.Fatal(err)
	}
	// The last tensor is padded: prefixes that keep its bytes parse.
	f, _ := Parse(data)
	last := f.Tensors[len(f.Tensors)-1]
	end := int(f.DataOffset + last.Offset + last.Size)
	for n := range len(data) {
		_, err := Parse(data[:n])
		if n < end && err == nil {
			t.Fatalf("prefix of %d bytes (of %d) parsed", n, len(data))
		}
		if n >= end && err != nil {
			t.Fatalf("prefix of %d bytes: %v", n, err)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "gguf: ") {
			t.Fatalf("error without prefix: %v", err)
		}
	}
}

// raw builds hand-made (possibly invalid) GGUF bytes.
type raw struct{ bytes.Buffer }

func (r *raw) u32(v uint32) *raw { binary.Write(&r.Buffer, binary.LittleEndian, v); return r }
func (r *raw) u64(v uint64) *raw { binary.Write(&r.Buffer, binary.LittleEndian, v); return r }
func (r *raw) str(s string) *raw { r.u64(uint64(len(s))); r.WriteString(s); return r }
func (r *raw) header(version uint32, nt, nkv uint64) *raw {
	r.WriteString("GGUF")
	return r.u32(version).u64(nt).u64(nkv)
}
func (r *raw) tensor(name string, dims []uint64, typ uint32, off uint64) *raw {
	r.str(name).u32(uint32(len(dims)))
	for _, d := range dims {
		r.u64(d)
	}
	return r.u32(typ).u64(off)
}
func (r *raw) padTo(a int) *raw {
	for r.Len()%a != 0 {
		r.WriteByte(0)
	}
	return r
}

func TestHandMadeErrors(t *testing.T) {
	f32x8 := func(r *raw) *raw { r.padTo(32); r.Write(make([]byte, 32)); return r }
	cases := []struct {
		name string
		data []byte
		want string // substring of the error
	}{
		{"empty", nil, "end of file"},
		{"magic", []byte("GGML\x03\x00\x00\x00"), "bad magic"},
		{"v1", new(raw).header(1, 0, 0).Bytes(), "version 1"},
		{"v4", new(raw).header(4, 0, 0).Bytes(), "version 4"},
		{"big-endian", new(raw).header(0x03000000, 0, 0).Bytes(), "big-endian"},
		{"huge tensor count", new(raw).header(3, 1<<60, 0).Bytes(), "1152921504606846976 tensor infos exceed the file"},
		{"huge kv count", new(raw).header(3, 0, 4000000000).Bytes(), "4000000000 metadata keys exceed the file"},
		{"huge key length", new(raw).header(3, 0, 1).u64(1 << 62).u32(0).u32(0).Bytes(), "metadata key 0: string length 4611686018427387904"},
		{"unknown value type", new(raw).header(3, 0, 1).str("k").u32(13).u64(0).Bytes(), `metadata key 0 ("k"): unknown value type 13`},
		{"huge string array", new(raw).header(3, 0, 1).str("tokenizer.ggml.tokens").u32(9).u32(8).u64(4000000000).u64(0).Bytes(),
			`metadata key 0 ("tokenizer.ggml.tokens"): array of 4000000000 strings exceeds the file`},
		{"huge u8 array", append(new(raw).header(3, 0, 1).str("k").u32(9).u32(0).u64(2).Bytes(), 0), "array of 2 uint8s exceeds the file"},
		{"string in array too long", new(raw).header(3, 0, 1).str("k").u32(9).u32(8).u64(1).u64(1 << 40).Bytes(), "array element 0: string length 1099511627776"},
		{"array of unknown type", new(raw).header(3, 0, 1).str("k").u32(9).u32(77).u64(0).Bytes(), "array of unknown value type 77"},
		{"bad bool", new(raw).header(3, 0, 1).str("k").u32(7).u32(2).Bytes(), "bool value 2"},
		{"duplicate key", new(raw).header(3, 0, 2).str("k").u32(4).u32(1).str("k").u32(4).u32(2).Bytes(), `metadata key 1 ("k"): duplicate key`},
		{"alignment 0", new(raw).header(3, 0, 1).str(KeyAlignment).u32(4).u32(0).Bytes(), "general.alignment = 0"},
		{"alignment 48", new(raw).header(3, 0, 1).str(KeyAlignment).u32(4).u32(48).Bytes(), "want a power of two"},
		{"alignment string", new(raw).header(3, 0, 1).str(KeyAlignment).u32(8).str("32").Bytes(), "want a power of two"},
		{"alignment negative", new(raw).header(3, 0, 1).str(KeyAlignment).u32(5).u32(0xffffffe0).Bytes(), "want a power of two"},
		{"unknown tensor type", new(raw).header(3, 1, 0).tensor("blk.0.attn_q.weight", []uint64{32}, 99, 0).Bytes(),
			`gguf: tensor "blk.0.attn_q.weight": unknown type 99`},
		{"zero dims", new(raw).header(3, 1, 0).tensor("t", nil, 0, 0).u64(0).Bytes(), "0 dimensions"},
		{"five dims", new(raw).header(3, 1, 0).tensor("t", []uint64{1, 1, 1, 1, 1}, 0, 0).Bytes(), "5 dimensions"},
		{"zero dim", new(raw).header(3, 1, 0).tensor("t", []uint64{4, 0}, 0, 0).Bytes(), "dimension 1 is 0"},
		{"dim overflow", new(raw).header(3, 1, 0).tensor("t", []uint64{1 << 32, 1 << 32}, 0, 0).Bytes(), "too many elements"},
		{"dim too many", new(raw).header(3, 1, 0).tensor("t", []uint64{1 << 30, 1 << 30}, 0, 0).Bytes(), "too many elements"},
		{"bad row", new(raw).header(3, 1, 0).tensor("t", []uint64{33}, 8, 0).Bytes(), "not a multiple of the block size"},
		{"duplicate tensor", f32x8(new(raw).header(3, 2, 0).tensor("t", []uint64{4}, 0, 0).tensor("t", []uint64{4}, 0, 0)).Bytes(), `tensor 1: duplicate tensor name "t"`},
		{"unaligned offset", f32x8(new(raw).header(3, 1, 0).tensor("t", []uint64{4}, 0, 16)).Bytes(), `tensor "t": offset 16 is not a multiple of the alignment 32`},
		{"offset beyond file", f32x8(new(raw).header(3, 1, 0).tensor("t", []uint64{4}, 0, 64)).Bytes(), `tensor "t": 16 bytes at data offset 64 exceed the file`},
		{"huge offset", f32x8(new(raw).header(3, 1, 0).tensor("t", []uint64{4}, 0, math.MaxUint64-31)).Bytes(), `exceed the file`},
		{"size beyond file", f32x8(new(raw).header(3, 1, 0).tensor("t", []uint64{9}, 0, 0)).Bytes(), `tensor "t": 36 bytes at data offset 0 exceed the file`},
		{"no data section", new(raw).header(3, 1, 0).tensor("t", []uint64{4}, 0, 0).Bytes(), "data section starts at 64, beyond the end"},
		{"huge alignment", new(raw).header(3, 1, 1).str(KeyAlignment).u32(10).u64(1<<63).tensor("t", []uint64{4}, 0, 0).Bytes(),
			"data section starts at 9223372036854775808, beyond the end"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(c.data)
			if err == nil {
				t.Fatalf("no error, want %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q, want it to contain %q", err, c.want)
			}
		})
	}
}

func TestHandMadeValid(t *testing.T) {
	// Version 2, two overlapping-free tensors out of order, extra trailing bytes.
	r := new(raw).header(2, 2, 1).str("general.architecture").u32(8).str("llama")
	r.tensor("b", []uint64{2}, 0, 32).tensor("a", []uint64{8}, 0, 0)
	r.padTo(32)
	for i := range 64 {
		r.WriteByte(byte(i))
	}
	f, err := Parse(r.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != 2 {
		t.Errorf("version %d", f.Version)
	}
	b, _ := f.Tensor("b")
	if !bytes.Equal(b.Data, []byte{32, 33, 34, 35, 36, 37, 38, 39}) || cap(b.Data) != 8 {
		t.Errorf("tensor b data %v cap %d", b.Data, cap(b.Data))
	}
	// No tensors: no data section needed, even with a large alignment.
	r = new(raw).header(3, 0, 1).str(KeyAlignment).u32(4).u32(1 << 20)
	if f, err := Parse(r.Bytes()); err != nil || f.Alignment != 1<<20 {
		t.Errorf("no tensors, alignment 1<<20: %v", err)
	}
}

// TestCorruptedCounts rewrites each count and length field of a real-shaped
// file with hostile values: every result must be an error, not a panic.
func TestCorruptedCounts(t *testing.T) {
	data, _, _ := buildAll(t, 0)
	hostile := []uint64{0, 1, 2, 255, 1 << 31, 1 << 32, 1<<63 - 1, 1 << 63, math.MaxUint64}
	rng := rand.New(rand.NewPCG(3, 4))
	for off := 0; off+8 <= len(data); off++ {
		for _, h := range hostile {
			d := append([]byte(nil), data...)
			binary.LittleEndian.PutUint64(d[off:], h)
			f, err := Parse(d)
			if err == nil {
				checkInvariants(t, f, d)
			}
		}
		// And random single-byte damage.
		d := append([]byte(nil), data...)
		d[off] = byte(rng.Uint32())
		if f, err := Parse(d); err == nil {
			checkInvariants(t, f, d)
		}
	}
}

// checkInvariants checks what a successful parse promises.
func checkInvariants(t testing.TB, f *File, data []byte) {
	t.Helper()
	if f.Alignment == 0 || f.Alignment&(f.Alignment-1) != 0 {
		t.Fatalf("alignment %d", f.Alignment)
	}
	for _, ti := range f.Tensors {
		if uint64(len(ti.Data)) != ti.Size || ti.Offset%f.Alignment != 0 {
			t.Fatalf("tensor %q: %d bytes, size %d, offset %d", ti.Name, len(ti.Data), ti.Size, ti.Offset)
		}
		if len(ti.Dims) < 1 || len(ti.Dims) > MaxDims || !ti.Type.Known() {
			t.Fatalf("tensor %q: dims %v type %d", ti.Name, ti.Dims, ti.Type)
		}
		if f.DataOffset+ti.Offset+ti.Size > uint64(len(data)) {
			t.Fatalf("tensor %q beyond the file", ti.Name)
		}
	}
	for _, kv := range f.KVs {
		_ = kv.Value.String()
	}
}

func TestWriterErrors(t *testing.T) {
	w := NewWriter()
	if err := w.AddTensor("t", quant.F32, []uint64{4}, make([]byte, 16)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		typ  quant.Type
		dims []uint64
		n    int
		want string
	}{
		{"t", quant.F32, []uint64{4}, 16, "duplicate"},
		{"u", quant.F32, nil, 0, "0 dimensions"},
		{"u", quant.F32, []uint64{1, 1, 1, 1, 1}, 4, "5 dimensions"},
		{"u", quant.F32, []uint64{4, 0}, 0, "dimension 1 is 0"},
		{"u", quant.Type(99), []uint64{4}, 16, "unknown type 99"},
		{"u", quant.F32, []uint64{4}, 15, "takes 16 bytes, got 15"},
		{"u", quant.Q8_0, []uint64{16}, 17, "block size"},
		{"u", quant.F32, []uint64{1 << 40, 1 << 40}, 0, "too many elements"},
	} {
		err := w.AddTensor(c.name, c.typ, c.dims, make([]byte, c.n))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("AddTensor(%q, %s, %v, %d) = %v, want %q", c.name, c.typ, c.dims, c.n, err, c.want)
		}
	}
	shift := 33 // a variable: 1<<33 as a constant does not fit a 32-bit int
	for _, a := range []int{0, -4, 3, 48, 1 << shift} {
		w := NewWriter()
		w.SetAlignment(a)
		if _, err := w.WriteTo(new(bytes.Buffer)); err == nil {
			t.Errorf("SetAlignment(%d): no error", a)
		}
	}
	w = NewWriter()
	w.AddUint32(KeyAlignment, 24)
	if _, err := w.WriteTo(new(bytes.Buffer)); err == nil {
		t.Error("general.alignment 24: no error")
	}
	w = NewWriter()
	w.Add("k", Value{typ: 42})
	if _, err := w.WriteTo(new(bytes.Buffer)); err == nil {
		t.Error("invalid value type: no error")
	}
	if _, err := NewArray([]Value{NewUint8(1)}); err == nil {
		t.Error("array of scalar Values: no error")
	}
	if _, err := NewArray([]int{1}); err == nil {
		t.Error("array of int: no error")
	}
}

func TestWriterReplaceAndHelpers(t *testing.T) {
	w := NewWriter()
	w.AddString("a", "x")
	w.AddUint32("b", 7)
	w.AddInt32("c", -7)
	w.AddUint64("d", 1<<40)
	w.AddFloat32("e", 0.25)
	w.AddBool("f", true)
	w.AddStrings("g", []string{"p", "q"})
	w.AddFloat32s("h", []float32{1, 2})
	w.AddInt32s("i", []int32{3, -4})
	w.AddString("a", "y") // replaces, keeps position
	w.SetAlignment(64)
	w.SetAlignment(32) // key now present: updated, not removed
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	f, err := Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{}
	for _, kv := range f.KVs {
		keys = append(keys, kv.Key)
	}
	if want := []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", KeyAlignment}; !reflect.DeepEqual(keys, want) {
		t.Errorf("keys %v, want %v", keys, want)
	}
	if s, _ := f.String("a"); s != "y" {
		t.Errorf("a = %q", s)
	}
	if a, _ := f.Uint(KeyAlignment); a != 32 || f.Alignment != 32 {
		t.Errorf("alignment %d/%d", a, f.Alignment)
	}
	if u, _ := f.Uint("d"); u != 1<<40 {
		t.Errorf("d = %d", u)
	}
	if x, _ := f.Float("e"); x != 0.25 {
		t.Errorf("e = %g", x)
	}
	if b, _ := f.Bool("f"); !b {
		t.Error("f false")
	}
	if s, _ := f.Float32s("h"); !reflect.DeepEqual(s, []float32{1, 2}) {
		t.Errorf("h = %v", s)
	}
	if s, _ := f.Int32s("i"); !reflect.DeepEqual(s, []int32{3, -4}) {
		t.Errorf("i = %v", s)
	}
}

func TestGetters(t *testing.T) {
	data, _, _ := buildAll(t, 0)
	f, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	ok := func(err error) {
		t.Helper()
		if err != nil {
			t.Error(err)
		}
	}
	bad := func(err error, key string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), `"`+key+`"`) {
			t.Errorf("key %q: error %v, want one naming the key", key, err)
		}
	}
	u, err := f.Uint("u8")
	ok(err)
	if u != 255 {
		t.Errorf("u8 = %d", u)
	}
	u, err = f.Uint("u64")
	ok(err)
	if u != math.MaxUint64 {
		t.Errorf("u64 = %d", u)
	}
	_, err = f.Uint("i8")
	bad(err, "i8")
	_, err = f.Uint("f32")
	bad(err, "f32")
	i, err := f.Int("i64")
	ok(err)
	if i != math.MinInt64 {
		t.Errorf("i64 = %d", i)
	}
	i, err = f.Int("u32")
	ok(err)
	if i != math.MaxUint32 {
		t.Errorf("u32 as int = %d", i)
	}
	_, err = f.Int("u64")
	bad(err, "u64")
	x, err := f.Float("f64")
	ok(err)
	if x != math.Pi {
		t.Errorf("f64 = %g", x)
	}
	_, err = f.Float("i32")
	bad(err, "i32")
	b, err := f.Bool("bool.t")
	ok(err)
	if !b {
		t.Error("bool.t false")
	}
	_, err = f.Bool("u8")
	bad(err, "u8")
	s, err := f.String("str")
	ok(err)
	if s != "héllo\x00world" {
		t.Errorf("str = %q", s)
	}
	_, err = f.String("a.str")
	bad(err, "a.str")
	ss, err := f.Strings("a.str")
	ok(err)
	if !reflect.DeepEqual(ss, []string{"<s>", "", "▁the", "\xff"}) {
		t.Errorf("a.str = %q", ss)
	}
	_, err = f.Strings("a.i32")
	bad(err, "a.i32")
	fs, err := f.Float32s("a.f64")
	ok(err)
	if len(fs) != 2 || !math.IsInf(float64(fs[0]), 1) || fs[1] != 0 {
		t.Errorf("a.f64 as float32s = %v", fs)
	}
	is, err := f.Int32s("a.u16")
	ok(err)
	if !reflect.DeepEqual(is, []int32{1, 65535}) {
		t.Errorf("a.u16 as int32s = %v", is)
	}
	_, err = f.Int32s("a.u32")
	bad(err, "a.u32") // MaxUint32 does not fit
	_, err = f.Int32s("a.f32")
	bad(err, "a.f32")
	_, err = f.Strings("missing")
	bad(err, "missing")
	if !f.Has("a.arr") || f.Has("missing") {
		t.Error("Has")
	}
	v, _ := f.Lookup("a.arr")
	elems, okA := v.Array()
	if !okA || len(elems) != 3 || elems[2].Len() != 1 {
		t.Fatalf("a.arr = %v", v)
	}
	inner, _ := elems[2].Array()
	if bs, _ := inner[0].Array(); len(bs) != 1 {
		t.Errorf("nested bool array %v", inner[0])
	} else if x, _ := bs[0].Bool(); !x {
		t.Errorf("nested bool = %v", bs[0])
	}
	if _, ok := f.Tensor("nope"); ok {
		t.Error("Tensor(nope) found")
	}
}

func TestValueString(t *testing.T) {
	long := strings.Repeat("x", 100)
	arr, _ := NewArray([]Value{NewInt32s([]int32{1, 2, 3})})
	for _, c := range []struct {
		v    Value
		want string
	}{
		{NewUint8(7), "7"},
		{NewInt64(-9), "-9"},
		{NewFloat32(0.1), "0.1"},
		{NewFloat64(1e-5), "1e-05"},
		{NewBool(true), "true"},
		{NewString("a\"b\n"), `"a\"b\n"`},
		{NewStrings([]string{"<unk>", "<s>"}), `[2 x string] ["<unk>", "<s>"]`},
		{NewInt32s([]int32{1, 2, 3, 4, 5, 6, 7, 8}), "[8 x int32] [1, 2, 3, 4, 5, 6, ...]"},
		{NewStrings([]string{long}), `[1 x string] ["` + long[:64] + `"...]`},
		{NewFloat32s(nil), "[0 x float32] []"},
		{arr, "[1 x array] [[3 x int32] [1, 2, 3]]"},
		{NewString(long), `"` + long + `"`},
	} {
		if got := c.v.String(); got != c.want {
			t.Errorf("String() = %s, want %s", got, c.want)
		}
	}
	if TypeUint32.String() != "uint32" || ValueType(77).String() != "type(77)" {
		t.Error("ValueType.String")
	}
}

func TestNestingDepth(t *testing.T) {
	nested := func(depth int) []byte {
		r := new(raw).header(3, 0, 1).str("k").u32(uint32(TypeArray))
		for range depth - 1 {
			r.u32(uint32(TypeArray)).u64(1)
		}
		r.u32(uint32(TypeUint8)).u64(1)
		r.WriteByte(42)
		return r.Bytes()
	}
	f, err := Parse(nested(maxDepth))
	if err != nil {
		t.Fatalf("depth %d: %v", maxDepth, err)
	}
	v, _ := f.Lookup("k")
	for range maxDepth - 1 {
		a, _ := v.Array()
		v = a[0]
	}
	if s, _ := v.Array(); len(s) != 1 || s[0].Raw() != uint8(42) {
		t.Errorf("innermost %v", v)
	}
	if _, err := Parse(nested(maxDepth + 1)); err == nil || !strings.Contains(err.Error(), "nested deeper") {
		t.Errorf("depth %d: %v", maxDepth+1, err)
	}
}

func TestValueEqual(t *testing.T) {
	a, _ := NewArray([]Value{NewStrings([]string{"x"})})
	b, _ := NewArray([]Value{NewStrings([]string{"x"})})
	c, _ := NewArray([]Value{NewStrings([]string{"y"})})
	nan := NewFloat32(float32(math.NaN()))
	for _, tc := range []struct {
		x, y Value
		want bool
	}{
		{a, b, true},
		{a, c, false},
		{nan, nan, true},
		{NewUint32(1), NewInt32(1), false},
		{NewString("a"), NewString("a"), true},
		{NewInt32s([]int32{1}), NewInt32s([]int32{1, 2}), false},
		{NewInt32s(nil), NewInt32s([]int32{}), true},
		{NewStrings(nil), NewInt32s(nil), false},
	} {
		if got := tc.x.Equal(tc.y); got != tc.want {
			t.Errorf("%v.Equal(%v) = %v", tc.x, tc.y, got)
		}
	}
}

// TestZeroCopy checks that Open's tensor data are views of the mapping.
func TestZeroCopy(t *testing.T) {
	f, err := Open(storiesPath(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	all := f.Bytes()
	for _, ti := range f.Tensors {
		off := int(f.DataOffset + ti.Offset)
		if &ti.Data[0] != &all[off] {
			t.Fatalf("tensor %q is not a view of the file at %d", ti.Name, off)
		}
	}
}

// TestOpenWithoutMmap checks Open's fallback to reading the file.
func TestOpenWithoutMmap(t *testing.T) {
	defer func(m func(*os.File, int) ([]byte, func() error, error)) { mmap = m }(mmap)
	mmap = func(*os.File, int) ([]byte, func() error, error) { return nil, nil, os.ErrInvalid }
	data, _, _ := buildAll(t, 64)
	path := filepath.Join(t.TempDir(), "x.gguf")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !bytes.Equal(f.Bytes(), data) || len(f.Tensors) != 5 || f.Alignment != 64 {
		t.Errorf("fallback read: %d bytes, %d tensors, alignment %d", len(f.Bytes()), len(f.Tensors), f.Alignment)
	}
}

type failWriter struct{ left int }

func (w *failWriter) Write(p []byte) (int, error) {
	if len(p) > w.left {
		n := w.left
		w.left = 0
		return n, os.ErrClosed
	}
	w.left -= len(p)
	return len(p), nil
}

func TestWriteErrors(t *testing.T) {
	data, _, _ := buildAll(t, 0)
	f, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	w := rewrite(f)
	for _, limit := range []int{0, 10, len(data) - 1} {
		n, err := w.WriteTo(&failWriter{left: limit})
		if err == nil || n != int64(limit) {
			t.Errorf("limit %d: wrote %d, %v", limit, n, err)
		}
	}
	if err := w.WriteFile(filepath.Join(t.TempDir(), "no", "such", "dir.gguf")); err == nil {
		t.Error("WriteFile into a missing directory: no error")
	}
}

// TestAddTensorFunc: a tensor filled at write time gives the same file
// as one added with its bytes; a fill error stops the write.
func TestAddTensorFunc(t *testing.T) {
	data := make([]byte, 2*34) // two Q8_0 blocks
	for i := range data {
		data[i] = byte(i * 7)
	}
	vec := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	var a, b bytes.Buffer
	wa, wb := NewWriter(), NewWriter()
	if err := wa.AddTensor("m", quant.Q8_0, []uint64{32, 2}, data); err != nil {
		t.Fatal(err)
	}
	if err := wa.AddTensor("v", quant.F32, []uint64{2}, vec); err != nil {
		t.Fatal(err)
	}
	if err := wb.AddTensorFunc("m", quant.Q8_0, []uint64{32, 2}, func(dst []byte) error {
		if len(dst) != len(data) {
			t.Fatalf("fill got %d bytes, want %d", len(dst), len(data))
		}
		copy(dst, data)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := wb.AddTensor("v", quant.F32, []uint64{2}, vec); err != nil {
		t.Fatal(err)
	}
	if _, err := wa.WriteTo(&a); err != nil {
		t.Fatal(err)
	}
	if _, err := wb.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("AddTensorFunc's file differs from AddTensor's")
	}
	if err := wb.AddTensorFunc("m", quant.F32, []uint64{1}, nil); err == nil {
		t.Fatal("duplicate name: no error")
	}
	if err := wb.AddTensor("short", quant.F32, []uint64{4}, vec); err == nil {
		t.Fatal("short data: no error")
	}
	if err := wb.AddTensorFunc("short", quant.F32, []uint64{1}, func([]byte) error { return errors.New("boom") }); err != nil {
		t.Fatalf("a refused tensor's name is not free again: %v", err)
	}
	if _, err := wb.WriteTo(io.Discard); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("fill error: %v", err)
	}
}
