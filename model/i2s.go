package model

import (
	"fmt"
	"os"

	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/quant"
)

// I2SLayout names the byte layout of a file's I2_S tensors (type id 36):
// bitnet.cpp's x86 builds write 128-weight blocks, its ARM builds (since
// November 2025) 64-weight blocks, and the file does not record which.
type I2SLayout string

const (
	I2SAuto I2SLayout = ""    // choose by the rule of ChooseI2SLayout
	I2SX86  I2SLayout = "x86" // quant.I2_S
	I2SARM  I2SLayout = "arm" // quant.I2_S_ARM
)

// KeyI2SLayout is the metadata key `edgellm quantize` writes beside I2_S
// tensors ("x86" or "arm"); bitnet.cpp ignores it.
const KeyI2SLayout = "edgellm.i2_s.layout"

// EnvI2SLayout names the environment variable that sets the layout when
// the load options leave it to the rule.
const EnvI2SLayout = "EDGELLM_I2S_LAYOUT"

// LoadOptions change how FromGGUFWith reads a file.
type LoadOptions struct {
	// I2SLayout says how to read I2_S tensors; I2SAuto applies the rule of
	// ChooseI2SLayout.
	I2SLayout I2SLayout
}

// ParseI2SLayout reads "x86", "arm" or "" (auto).
func ParseI2SLayout(s string) (I2SLayout, error) {
	switch l := I2SLayout(s); l {
	case I2SAuto, I2SX86, I2SARM:
		return l, nil
	}
	return "", fmt.Errorf("unknown I2_S layout %q (want x86 or arm)", s)
}

// Type is the in-memory quant type of I2_S tensors in layout l (x86 for
// auto).
func (l I2SLayout) Type() quant.Type {
	if l == I2SARM {
		return quant.I2_S_ARM
	}
	return quant.I2_S
}

// ChooseI2SLayout decides how f's I2_S tensors are read, and says why. The
// rule, first match wins:
//
//  1. opt, when not I2SAuto;
//  2. $EDGELLM_I2S_LAYOUT, when set;
//  3. the file's edgellm.i2_s.layout key (files `edgellm quantize` wrote);
//  4. arm when some I2_S tensor's rows are not whole 128-weight blocks
//     (only the ARM layout can hold them);
//  5. x86, the layout of microsoft/bitnet-b1.58-2B-4T-gguf.
//
// No check on the bytes can do better: the two layouts permute the codes
// within each 128 weights the same way in every row, so a tensor read in
// the wrong layout is the right one with its input columns permuted, with
// the same codes, counts and scale (quant.TestI2SLayoutsPermuteColumns).
// A file from an ARM build of bitnet.cpp whose rows are whole 128-weight
// blocks (all of BitNet b1.58 2B's) is therefore read as x86 unless the
// option or the variable says arm.
func ChooseI2SLayout(f *gguf.File, opt I2SLayout) (I2SLayout, string, error) {
	if opt != I2SAuto {
		if _, err := ParseI2SLayout(string(opt)); err != nil {
			return "", "", err
		}
		return opt, "load option", nil
	}
	if s, ok := os.LookupEnv(EnvI2SLayout); ok && s != "" {
		l, err := ParseI2SLayout(s)
		if err != nil {
			return "", "", fmt.Errorf("$%s: %w", EnvI2SLayout, err)
		}
		return l, "$" + EnvI2SLayout, nil
	}
	if f.Has(KeyI2SLayout) {
		s, err := f.String(KeyI2SLayout)
		if err != nil {
			return "", "", err
		}
		l, err := ParseI2SLayout(s)
		if err != nil || l == I2SAuto {
			return "", "", fmt.Errorf("%s: unknown I2_S layout %q (want x86 or arm)", KeyI2SLayout, s)
		}
		return l, KeyI2SLayout, nil
	}
	for i := range f.Tensors {
		t := &f.Tensors[i]
		if t.Type == quant.I2_S && len(t.Dims) > 0 && t.Dims[0]%128 != 0 {
			return I2SARM, fmt.Sprintf("tensor %q has rows of %d weights, which only the ARM layout's 64-weight blocks hold", t.Name, t.Dims[0]), nil
		}
	}
	return I2SX86, "default", nil
}
