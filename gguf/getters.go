package gguf

import "fmt"

// Typed getters: each returns an error naming the key when it is missing or
// holds another type, so loaders can pass the error on as it is.

func (f *File) get(key string) (Value, error) {
	v, ok := f.Lookup(key)
	if !ok {
		return Value{}, fmt.Errorf("gguf: key %q: missing", key)
	}
	return v, nil
}

func wrongType(key string, v Value, want string) error {
	if v.Type() == TypeArray {
		return fmt.Errorf("gguf: key %q: is an array of %s, want %s", key, v.ElemType(), want)
	}
	return fmt.Errorf("gguf: key %q: is %s %v, want %s", key, v.Type(), v, want)
}

// String returns a string value.
func (f *File) String(key string) (string, error) {
	v, err := f.get(key)
	if err != nil {
		return "", err
	}
	s, ok := v.Str()
	if !ok {
		return "", wrongType(key, v, "a string")
	}
	return s, nil
}

// Uint returns a non-negative value of any integer type.
func (f *File) Uint(key string) (uint64, error) {
	v, err := f.get(key)
	if err != nil {
		return 0, err
	}
	u, ok := v.Uint()
	if !ok {
		return 0, wrongType(key, v, "a non-negative integer")
	}
	return u, nil
}

// Int returns a value of any integer type that fits an int64.
func (f *File) Int(key string) (int64, error) {
	v, err := f.get(key)
	if err != nil {
		return 0, err
	}
	i, ok := v.Int()
	if !ok {
		return 0, wrongType(key, v, "an integer that fits int64")
	}
	return i, nil
}

// Float returns a float32 or float64 value.
func (f *File) Float(key string) (float64, error) {
	v, err := f.get(key)
	if err != nil {
		return 0, err
	}
	x, ok := v.Float()
	if !ok {
		return 0, wrongType(key, v, "a float")
	}
	return x, nil
}

// Bool returns a bool value.
func (f *File) Bool(key string) (bool, error) {
	v, err := f.get(key)
	if err != nil {
		return false, err
	}
	b, ok := v.Bool()
	if !ok {
		return false, wrongType(key, v, "a bool")
	}
	return b, nil
}

// Strings returns a string array (shared with the File: do not modify).
func (f *File) Strings(key string) ([]string, error) {
	v, err := f.get(key)
	if err != nil {
		return nil, err
	}
	s, ok := v.Strings()
	if !ok {
		return nil, wrongType(key, v, "an array of strings")
	}
	return s, nil
}

// Float32s returns a float32 array (shared with the File: do not modify), or
// a float64 array converted.
func (f *File) Float32s(key string) ([]float32, error) {
	v, err := f.get(key)
	if err != nil {
		return nil, err
	}
	s, ok := v.Float32s()
	if !ok {
		return nil, wrongType(key, v, "an array of floats")
	}
	return s, nil
}

// Int32s returns an integer array of any integer type as int32s (an int32
// array is shared with the File: do not modify).
func (f *File) Int32s(key string) ([]int32, error) {
	v, err := f.get(key)
	if err != nil {
		return nil, err
	}
	s, ok := v.Int32s()
	if !ok {
		if v.Type() == TypeArray && v.ElemType().isInteger() {
			return nil, fmt.Errorf("gguf: key %q: %s array holds values outside int32", key, v.ElemType())
		}
		return nil, wrongType(key, v, "an array of integers")
	}
	return s, nil
}
