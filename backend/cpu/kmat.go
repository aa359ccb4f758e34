package cpu

import (
	"github.com/edgellm/edgellm/backend/cpu/kernels"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/quant"
)

// kernelMat is a matrix repacked by package kernels (ternary types into
// 2-bit or lookup-table rows, Q8_0/Q5_0/Q6_K into int8 rows, Q4_0 into 4-bit
// rows, F16). Its
// products read the activations quantized once per operation to int8 by
// per-token absmax (BitNet's scheme), held in a kernels.Acts.
type kernelMat struct {
	k kernels.Matrix
}

func (m *kernelMat) rows() int { return m.k.Rows() }
func (m *kernelMat) cols() int { return m.k.Cols() }

func (m *kernelMat) mulRows(out []float32, _ int, _ []float32, nb, r0, r1 int, _ []float32, a *kernels.Acts) {
	if nb == 1 {
		m.k.MatVec(out, a, r0, r1)
	} else {
		m.k.MatMat(out, a, r0, r1)
	}
}

func (m *kernelMat) acts() bool { return true }

func (m *kernelMat) memory(fn func([]byte)) { m.k.Memory(fn) }

// newKernelMat repacks t (into arena, or the heap when nil) when the
// kernels cover its type and shape, or returns nil so the caller keeps
// the plain path.
func newKernelMat(t *model.Tensor, arena *kernels.Arena) matmul {
	data, ok := kernelData(t)
	if !ok {
		return nil
	}
	k, err := kernels.FromQuant(t.Type, t.Rows, t.Cols, data, t.Scale, kernels.TernaryOptions{Arena: arena})
	if err != nil {
		return nil
	}
	return &kernelMat{k: k}
}

// kernelFootprint is the arena space newKernelMat's matrix of t takes: 0
// where it would keep the plain path.
func kernelFootprint(t *model.Tensor) int {
	if _, ok := kernelData(t); !ok {
		return 0
	}
	return kernels.Footprint(t.Type, t.Rows, t.Cols, t.Scale, kernels.TernaryOptions{})
}

// kernelData returns t's rows' bytes when the kernels cover its type and
// shape.
func kernelData(t *model.Tensor) ([]byte, bool) {
	if t.Cols%64 != 0 {
		return nil, false
	}
	switch t.Type {
	case quant.F16, quant.Q8_0, quant.Q5_0, quant.Q4_0, quant.Q6_K, quant.TQ2_0, quant.TQ1_0, quant.Q2_0, quant.I2_S, quant.I2_S_ARM:
	default:
		return nil, false
	}
	rb, err := t.Type.RowBytes(t.Cols)
	if err != nil || len(t.Data) < rb*t.Rows {
		return nil, false
	}
	return t.Data[:rb*t.Rows], true
}
