package gguf

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ValueType is a GGUF metadata value type id.
type ValueType uint32

// GGUF metadata value type ids, as stored in the file.
const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

var valueTypeNames = [...]string{
	TypeUint8:   "uint8",
	TypeInt8:    "int8",
	TypeUint16:  "uint16",
	TypeInt16:   "int16",
	TypeUint32:  "uint32",
	TypeInt32:   "int32",
	TypeFloat32: "float32",
	TypeBool:    "bool",
	TypeString:  "string",
	TypeArray:   "array",
	TypeUint64:  "uint64",
	TypeInt64:   "int64",
	TypeFloat64: "float64",
}

// Valid reports whether t is a value type GGUF defines.
func (t ValueType) Valid() bool { return t <= TypeFloat64 }

// String returns the type's name ("uint32", "string", "array"), or
// "type(N)" for an id GGUF does not define.
func (t ValueType) String() string {
	if t.Valid() {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// size is the encoded size of a fixed-size type, 0 for string and array.
func (t ValueType) size() int {
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		return 1
	case TypeUint16, TypeInt16:
		return 2
	case TypeUint32, TypeInt32, TypeFloat32:
		return 4
	case TypeUint64, TypeInt64, TypeFloat64:
		return 8
	}
	return 0
}

// minSize is the fewest bytes one encoded value of type t can take: a string
// is at least its 8-byte length, an array its 4-byte type and 8-byte count.
// Parsers use it to bound counts by the bytes that remain.
func (t ValueType) minSize() int {
	switch t {
	case TypeString:
		return 8
	case TypeArray:
		return 12
	}
	return t.size()
}

func (t ValueType) isInteger() bool {
	switch t {
	case TypeUint8, TypeInt8, TypeUint16, TypeInt16, TypeUint32, TypeInt32, TypeUint64, TypeInt64:
		return true
	}
	return false
}

func (t ValueType) isSigned() bool {
	return t == TypeInt8 || t == TypeInt16 || t == TypeInt32 || t == TypeInt64
}

// Value holds one metadata value of any GGUF type. The zero Value is the
// uint8 0. Scalars live in bits (integers sign-extended, floats as their IEEE
// bits so NaN payloads survive a round trip); arrays hold a typed Go slice
// (see NewArray), so a 150k-token vocabulary costs one []string, not 150k
// Values.
type Value struct {
	typ  ValueType
	elem ValueType // arrays only
	bits uint64
	str  string
	arr  any
}

// Scalar constructors.

func NewUint8(v uint8) Value     { return Value{typ: TypeUint8, bits: uint64(v)} }
func NewInt8(v int8) Value       { return Value{typ: TypeInt8, bits: uint64(int64(v))} }
func NewUint16(v uint16) Value   { return Value{typ: TypeUint16, bits: uint64(v)} }
func NewInt16(v int16) Value     { return Value{typ: TypeInt16, bits: uint64(int64(v))} }
func NewUint32(v uint32) Value   { return Value{typ: TypeUint32, bits: uint64(v)} }
func NewInt32(v int32) Value     { return Value{typ: TypeInt32, bits: uint64(int64(v))} }
func NewUint64(v uint64) Value   { return Value{typ: TypeUint64, bits: v} }
func NewInt64(v int64) Value     { return Value{typ: TypeInt64, bits: uint64(v)} }
func NewFloat32(v float32) Value { return Value{typ: TypeFloat32, bits: uint64(math.Float32bits(v))} }
func NewFloat64(v float64) Value { return Value{typ: TypeFloat64, bits: math.Float64bits(v)} }
func NewString(v string) Value   { return Value{typ: TypeString, str: v} }

func NewBool(v bool) Value {
	if v {
		return Value{typ: TypeBool, bits: 1}
	}
	return Value{typ: TypeBool}
}

// NewStrings returns a string array value. The slice is kept, not copied.
func NewStrings(v []string) Value { return Value{typ: TypeArray, elem: TypeString, arr: v} }

// NewFloat32s returns a float32 array value. The slice is kept, not copied.
func NewFloat32s(v []float32) Value { return Value{typ: TypeArray, elem: TypeFloat32, arr: v} }

// NewInt32s returns an int32 array value. The slice is kept, not copied.
func NewInt32s(v []int32) Value { return Value{typ: TypeArray, elem: TypeInt32, arr: v} }

// NewArray returns an array value holding slice, which must be one of
// []uint8, []int8, []uint16, []int16, []uint32, []int32, []uint64, []int64,
// []float32, []float64, []bool, []string, or []Value whose elements are all
// arrays (GGUF's array of arrays). The slice is kept, not copied.
func NewArray(slice any) (Value, error) {
	var elem ValueType
	switch s := slice.(type) {
	case []uint8:
		elem = TypeUint8
	case []int8:
		elem = TypeInt8
	case []uint16:
		elem = TypeUint16
	case []int16:
		elem = TypeInt16
	case []uint32:
		elem = TypeUint32
	case []int32:
		elem = TypeInt32
	case []uint64:
		elem = TypeUint64
	case []int64:
		elem = TypeInt64
	case []float32:
		elem = TypeFloat32
	case []float64:
		elem = TypeFloat64
	case []bool:
		elem = TypeBool
	case []string:
		elem = TypeString
	case []Value:
		for i, v := range s {
			if v.typ != TypeArray {
				return Value{}, fmt.Errorf("gguf: array element %d is %s: an array of values must hold only arrays", i, v.typ)
			}
		}
		elem = TypeArray
	default:
		return Value{}, fmt.Errorf("gguf: cannot make an array of %T", slice)
	}
	return Value{typ: TypeArray, elem: elem, arr: slice}, nil
}

// Type is the value's type.
func (v Value) Type() ValueType { return v.typ }

// ElemType is an array's element type (meaningless for scalars).
func (v Value) ElemType() ValueType { return v.elem }

// Len is an array's number of elements, 0 for scalars.
func (v Value) Len() int {
	switch s := v.arr.(type) {
	case nil:
		return 0
	case []uint8:
		return len(s)
	case []int8:
		return len(s)
	case []uint16:
		return len(s)
	case []int16:
		return len(s)
	case []uint32:
		return len(s)
	case []int32:
		return len(s)
	case []uint64:
		return len(s)
	case []int64:
		return len(s)
	case []float32:
		return len(s)
	case []float64:
		return len(s)
	case []bool:
		return len(s)
	case []string:
		return len(s)
	case []Value:
		return len(s)
	}
	return 0
}

// Uint returns an integer value of any integer type when it is non-negative.
func (v Value) Uint() (uint64, bool) {
	if !v.typ.isInteger() || (v.typ.isSigned() && int64(v.bits) < 0) {
		return 0, false
	}
	return v.bits, true
}

// Int returns an integer value of any integer type when it fits an int64.
func (v Value) Int() (int64, bool) {
	if !v.typ.isInteger() || (v.typ == TypeUint64 && v.bits > math.MaxInt64) {
		return 0, false
	}
	return int64(v.bits), true
}

// Float returns a float32 or float64 value as a float64.
func (v Value) Float() (float64, bool) {
	switch v.typ {
	case TypeFloat32:
		return float64(math.Float32frombits(uint32(v.bits))), true
	case TypeFloat64:
		return math.Float64frombits(v.bits), true
	}
	return 0, false
}

// Bool returns a bool value.
func (v Value) Bool() (bool, bool) { return v.bits != 0, v.typ == TypeBool }

// Str returns a string value.
func (v Value) Str() (string, bool) { return v.str, v.typ == TypeString }

// Strings returns a string array's elements (shared: do not modify).
func (v Value) Strings() ([]string, bool) {
	s, ok := v.arr.([]string)
	return s, ok
}

// Float32s returns a float32 array's elements (shared: do not modify), or a
// float64 array's converted to float32 (a new slice).
func (v Value) Float32s() ([]float32, bool) {
	switch s := v.arr.(type) {
	case []float32:
		return s, true
	case []float64:
		out := make([]float32, len(s))
		for i, x := range s {
			out[i] = float32(x)
		}
		return out, true
	}
	return nil, false
}

// Int32s returns an int32 array's elements (shared: do not modify), or any
// other integer array's converted to int32 (a new slice) when every element
// fits.
func (v Value) Int32s() ([]int32, bool) {
	if s, ok := v.arr.([]int32); ok {
		return s, true
	}
	if v.typ != TypeArray || !v.elem.isInteger() {
		return nil, false
	}
	n := v.Len()
	out := make([]int32, n)
	for i := range n {
		x, ok := v.index(i).Int()
		if !ok || x < math.MinInt32 || x > math.MaxInt32 {
			return nil, false
		}
		out[i] = int32(x)
	}
	return out, true
}

// Array returns an array's elements as Values (a new slice for typed arrays).
func (v Value) Array() ([]Value, bool) {
	if v.typ != TypeArray {
		return nil, false
	}
	if s, ok := v.arr.([]Value); ok {
		return s, true
	}
	out := make([]Value, v.Len())
	for i := range out {
		out[i] = v.index(i)
	}
	return out, true
}

// Raw returns the value as a plain Go value: uint8 ... float64, bool, string,
// or for an array the typed slice NewArray accepts.
func (v Value) Raw() any {
	switch v.typ {
	case TypeUint8:
		return uint8(v.bits)
	case TypeInt8:
		return int8(v.bits)
	case TypeUint16:
		return uint16(v.bits)
	case TypeInt16:
		return int16(v.bits)
	case TypeUint32:
		return uint32(v.bits)
	case TypeInt32:
		return int32(v.bits)
	case TypeUint64:
		return v.bits
	case TypeInt64:
		return int64(v.bits)
	case TypeFloat32:
		return math.Float32frombits(uint32(v.bits))
	case TypeFloat64:
		return math.Float64frombits(v.bits)
	case TypeBool:
		return v.bits != 0
	case TypeString:
		return v.str
	}
	return v.arr
}

// index returns element i of an array as a Value; i must be in range.
func (v Value) index(i int) Value {
	switch s := v.arr.(type) {
	case []uint8:
		return NewUint8(s[i])
	case []int8:
		return NewInt8(s[i])
	case []uint16:
		return NewUint16(s[i])
	case []int16:
		return NewInt16(s[i])
	case []uint32:
		return NewUint32(s[i])
	case []int32:
		return NewInt32(s[i])
	case []uint64:
		return NewUint64(s[i])
	case []int64:
		return NewInt64(s[i])
	case []float32:
		return NewFloat32(s[i])
	case []float64:
		return NewFloat64(s[i])
	case []bool:
		return NewBool(s[i])
	case []string:
		return NewString(s[i])
	case []Value:
		return s[i]
	}
	return Value{}
}

// maxShown is how many array elements String prints before "...".
const maxShown = 6

// maxShownString is how many bytes of a string element String prints.
const maxShownString = 64

// String formats the value for people: scalars as themselves (strings
// quoted), arrays as "[N x type] [e0, e1, ...]" with the first few elements.
func (v Value) String() string {
	var b strings.Builder
	v.format(&b, false)
	return b.String()
}

func (v Value) format(b *strings.Builder, short bool) {
	switch v.typ {
	case TypeUint8, TypeUint16, TypeUint32, TypeUint64:
		b.WriteString(strconv.FormatUint(v.bits, 10))
	case TypeInt8, TypeInt16, TypeInt32, TypeInt64:
		b.WriteString(strconv.FormatInt(int64(v.bits), 10))
	case TypeFloat32:
		b.WriteString(strconv.FormatFloat(float64(math.Float32frombits(uint32(v.bits))), 'g', -1, 32))
	case TypeFloat64:
		b.WriteString(strconv.FormatFloat(math.Float64frombits(v.bits), 'g', -1, 64))
	case TypeBool:
		b.WriteString(strconv.FormatBool(v.bits != 0))
	case TypeString:
		s := v.str
		if short && len(s) > maxShownString {
			b.WriteString(strconv.Quote(s[:maxShownString]))
			b.WriteString("...")
			return
		}
		b.WriteString(strconv.Quote(s))
	case TypeArray:
		n := v.Len()
		fmt.Fprintf(b, "[%d x %s] [", n, v.elem)
		for i := range min(n, maxShown) {
			if i > 0 {
				b.WriteString(", ")
			}
			v.index(i).format(b, true)
		}
		if n > maxShown {
			b.WriteString(", ...")
		}
		b.WriteString("]")
	default:
		b.WriteString(v.typ.String())
	}
}

// Equal reports whether v and o have the same type and the same encoding
// (so NaNs with the same bits are equal). Use it rather than ==, which
// panics on Values that hold arrays.
func (v Value) Equal(o Value) bool {
	if v.typ != o.typ || v.elem != o.elem {
		return false
	}
	if v.typ != TypeArray {
		return v.bits == o.bits && v.str == o.str
	}
	return bytes.Equal(encodeValue(v), encodeValue(o))
}
