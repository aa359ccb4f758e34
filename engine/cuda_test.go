package engine

import (
	"strings"
	"testing"

	"github.com/edgellm/edgellm/internal/testmodel"
	"github.com/edgellm/edgellm/quant"
)

// The engine registers "cuda" itself, unless built with -tags nocuda; then
// asking for it says why it is missing and auto runs on the CPU.
func TestCUDARegistration(t *testing.T) {
	_, ok := lookupBackend("cuda")
	if ok != (cudaLeftOut == "") {
		t.Fatalf("cuda registered: %v, but cudaLeftOut is %q", ok, cudaLeftOut)
	}
	if ok {
		return
	}
	path := testmodel.Write(t, testmodel.Tiny("llama", quant.F32))
	if _, err := Load(path, Options{Backend: "cuda"}); err == nil || !strings.Contains(err.Error(), "nocuda") {
		t.Fatalf("backend cuda in a nocuda build: error %v", err)
	}
	m, err := Load(path, Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Backend().Name() != "cpu" {
		t.Fatalf("auto picked %s", m.Backend().Name())
	}
}
