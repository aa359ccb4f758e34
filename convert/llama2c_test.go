package convert

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/edgellm/edgellm/internal/testfiles"
	"github.com/edgellm/edgellm/internal/testmodel"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/sample"
)

// greedy runs the reference forward pass from BOS (id 1) and returns n
// greedy ids and every step's logits.
func greedy(w *model.Weights, n int) ([]int32, [][]float32) {
	ref := model.NewReference(w, n+1)
	id := int32(1)
	var ids []int32
	var all [][]float32
	for pos := range n {
		l := ref.Forward(id, pos)
		all = append(all, append([]float32(nil), l...))
		id = sample.Argmax(l)
		ids = append(ids, id)
	}
	return ids, all
}

// TestLlama2CStories converts stories260K's llama2.c checkpoint and checks
// the file against the GGUF that llama.cpp's convert-llama2c-to-ggml made
// of it: the same greedy ids and the same logits, bit for bit.
func TestLlama2CStories(t *testing.T) {
	bin := testfiles.Path(t, "models/stories260K/stories260K.bin")
	want := testmodel.Weights(t, testfiles.Path(t, "models/stories260K/stories260K-f32.gguf"))
	out := filepath.Join(t.TempDir(), "stories.gguf")
	sum, err := Llama2C(bin, out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Tensors != 3+9*5 {
		t.Fatalf("%d tensors, want %d", sum.Tensors, 3+9*5)
	}
	f := openGGUF(t, out)
	for _, ti := range f.Tensors {
		if wt, ok := openGGUF(t, testfiles.Path(t, "models/stories260K/stories260K-f32.gguf")).Tensor(ti.Name); !ok || !slices.Equal(wt.Dims, ti.Dims) || wt.Type != ti.Type {
			t.Fatalf("tensor %s %v %s is not llama.cpp's", ti.Name, ti.Dims, ti.Type)
		}
	}
	got := testmodel.Weights(t, out)
	if got.Config.ContextLen != 512 {
		t.Errorf("context length %d, want the checkpoint's 512", got.Config.ContextLen)
	}
	gotIDs, gotLogits := greedy(got, 40)
	wantIDs, wantLogits := greedy(want, 40)
	if !slices.Equal(gotIDs, wantIDs) {
		t.Fatalf("greedy ids\n%v, want\n%v", gotIDs, wantIDs)
	}
	for p := range gotLogits {
		if !slices.Equal(gotLogits[p], wantLogits[p]) {
			t.Fatalf("position %d: logits differ from llama.cpp's converted file", p)
		}
	}
	// Other types go through the same per-tensor policy: W_down's rows
	// of 172 cannot be Q8_0 and fall back to F16.
	sum, err = Llama2C(bin, out, Options{Type: "q8_0"})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Fallbacks) != 5 {
		t.Fatalf("Q8_0 fallbacks %v, want the 5 ffn_down", sum.Fallbacks)
	}
	if q8IDs, _ := greedy(testmodel.Weights(t, out), 40); !slices.Equal(q8IDs[:10], wantIDs[:10]) {
		t.Errorf("Q8_0: greedy ids %v, want %v first", q8IDs, wantIDs[:10])
	}
}
