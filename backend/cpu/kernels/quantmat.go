package kernels

import (
	"fmt"
	"math"

	"github.com/edgellm/edgellm/internal/par"
	"github.com/edgellm/edgellm/quant"
)

// Footprint is the size of an Arena that holds FromQuant's matrix of typ
// (rows x cols, with scale and opts) exactly: the sum of its pieces, each
// rounded up to the arena's alignment, with one scale a row for the
// ternary types (BitNet's; a matrix with per-block scales takes more,
// which its arena takes from the heap). It is 0 for a type FromQuant does
// not repack.
func Footprint(typ quant.Type, rows, cols int, scale float32, opts TernaryOptions) int {
	if rows <= 0 || cols <= 0 || tooLarge(rows, cols) {
		return 0
	}
	switch {
	case quant.IsTernary(typ):
		stride := cols / 4
		data := rows * stride
		if opts.Layout == LayoutTL {
			data = (rows + 31) / 32 * 32 * stride
		}
		return alignUp(4*rows) + alignUp(data) // rowScale, then the codes
	case typ == quant.Q4_0 && scale == 1:
		return alignUp(rows*cols/2) + alignUp(2*(rows*cols/32)) // nibbles, float16 scales
	case typ == quant.Q8_0 || typ == quant.Q5_0 || typ == quant.Q4_0:
		n := alignUp(rows*cols) + alignUp(2*(rows*cols/32)) // values, float16 scales
		if scale != 1 {
			n += alignUp(4 * (rows * cols / 32)) // float32 scales (toFloatScales)
		}
		return n
	case typ == quant.Q6_K:
		return alignUp(rows*cols) + alignUp(4*(rows*cols/16))
	case typ == quant.F16:
		return alignUp(2 * rows * cols)
	}
	return 0
}

// FromQuant repacks a rows x cols GGML tensor into the kernels' layout for
// its type: the ternary types (TQ2_0, TQ1_0, Q2_0, I2_S) into a Ternary,
// Q8_0/Q5_0/Q4_0/Q6_K into an Int8Mat (Q4_0 in 4 bits unless scale folds in),
// F16 into an F16Mat. data holds the rows'
// packed bytes (for I2_S, without the trailing per-tensor scale); scale
// multiplies every weight (I2_S's per-tensor scale, a BitNet ".scale"
// tensor; 1 for none). opts.Arena applies to every type, the rest of
// opts to ternary types only.
func FromQuant(typ quant.Type, rows, cols int, data []byte, scale float32, opts TernaryOptions) (Matrix, error) {
	if math.IsNaN(float64(scale)) || math.IsInf(float64(scale), 0) {
		return nil, fmt.Errorf("kernels: %s matrix: scale %v", typ, scale)
	}
	if err := checkShape(typ.String(), rows, cols); err != nil {
		return nil, err
	}
	rb, err := typ.RowBytes(cols)
	if err != nil {
		return nil, fmt.Errorf("kernels: %w", err)
	}
	if len(data) != rb*rows {
		return nil, fmt.Errorf("kernels: %s matrix %dx%d: %d bytes, want %d", typ, rows, cols, len(data), rb*rows)
	}
	switch {
	case quant.IsTernary(typ):
		codes := scratchCodes(opts.Arena, rows*cols)
		group := typ.BlockSize()
		var scales []float32
		if quant.IsI2S(typ) {
			group, scales = rows*cols, []float32{scale}
		} else {
			scales = make([]float32, rows*cols/group)
		}
		// Rows decode in parallel (a 2B model's decode took 7 s on one core).
		perRow := cols / group // block scales per row (rows hold whole blocks)
		err := par.Rows(rows, func(r0, r1 int) error {
			for r := r0; r < r1; r++ {
				s, err := quant.TernaryCodes(typ, data[r*rb:(r+1)*rb], codes[r*cols:(r+1)*cols])
				if err != nil {
					return fmt.Errorf("kernels: row %d: %w", r, err)
				}
				for i, v := range s {
					scales[r*perRow+i] = v * scale
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		return NewTernary(rows, cols, codes, scales, group, opts)
	case typ == quant.Q8_0 || typ == quant.Q5_0 || typ == quant.Q4_0 || typ == quant.Q6_K:
		var m *Int8Mat
		switch typ {
		case quant.Q8_0:
			m, err = FromQ8_0(rows, cols, data, opts.Arena)
		case quant.Q5_0:
			m, err = FromQ5_0(rows, cols, data, opts.Arena)
		case quant.Q4_0:
			if scale == 1 {
				m, err = FromQ4_0(rows, cols, data, opts.Arena)
			} else {
				m, err = fromQ4_0Int8(rows, cols, data, opts.Arena)
			}
		default:
			m, err = FromQ6_K(rows, cols, data, opts.Arena)
		}
		if err != nil {
			return nil, err
		}
		if scale != 1 {
			m.toFloatScales(scale, opts.Arena)
		}
		return m, nil
	case typ == quant.F16:
		m, err := FromF16(rows, cols, data, opts.Arena)
		if err != nil {
			return nil, err
		}
		m.scale = scale
		return m, nil
	}
	return nil, fmt.Errorf("kernels: no kernel for %s", typ)
}
