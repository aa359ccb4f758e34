package backend

import "testing"

// model stubs: what Batches looks at is only which interfaces a model has.
type plainModel struct{ Model }

type batchModel struct{ Model }

func (batchModel) DecodeBatch([]Session, []int32, [][]float32) error { return nil }

type switchedModel struct {
	batchModel
	on bool
}

func (m switchedModel) Batching() bool { return m.on }

func TestBatches(t *testing.T) {
	for _, c := range []struct {
		name string
		m    Model
		want bool
	}{
		{"no batched step", plainModel{}, false},
		{"batched step", batchModel{}, true},
		{"batched step switched off", switchedModel{on: false}, false},
		{"batched step switched on", switchedModel{on: true}, true},
	} {
		bd, ok := Batches(c.m)
		if ok != c.want || (bd != nil) != c.want {
			t.Errorf("%s: Batches = (%v, %v), want ok %v", c.name, bd, ok, c.want)
		}
	}
}
