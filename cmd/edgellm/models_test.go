package main

import (
	"reflect"
	"testing"

	"github.com/edgellm/edgellm/store"
)

// run takes a params layer's options where no flag was given, and refuses a
// bad layer with the error the server gives (store.ParseParams).
func TestApplyParams(t *testing.T) {
	c := &runCmd{Temp: 0.8, TopK: 40, N: 128}
	stops, err := c.applyParams(nil, "m", []byte(`{"temperature":0,"top_k":5,"num_predict":20,"stop":["x"],"num_gpu":99}`))
	if err != nil || c.Temp != 0 || c.TopK != 5 || c.N != 20 || !reflect.DeepEqual(stops, []string{"x"}) {
		t.Errorf("applied: %+v, stops %q, %v", c, stops, err)
	}
	bad := []byte(`{"temperature":-1}`)
	_, _, want := store.ParseParams(bad)
	if _, err := (&runCmd{}).applyParams(nil, "m", bad); err == nil || want == nil || err.Error() != `model "m": `+want.Error() {
		t.Errorf("bad layer: %v, want model \"m\": %v", err, want)
	}
}
