package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/internal/testfiles"
	"github.com/edgellm/edgellm/internal/testmodel"
	"github.com/edgellm/edgellm/store"
)

// TestStoreCommands: list, cp, rm, and store names wherever a model is taken,
// with a pulled model's params as run's defaults.
func TestStoreCommands(t *testing.T) {
	stories := testfiles.Path(t, "models/stories260K/stories260K-f32.gguf")
	bin := binary(t)
	dir := t.TempDir()
	t.Setenv("EDGELLM_MODELS", dir)
	b, _ := os.ReadFile(stories)
	os.WriteFile(filepath.Join(dir, "stories.gguf"), b, 0o644)
	testmodel.AddPulled(t, dir, "hf.co/Someone/Stories-GGUF:F32", stories, map[string]string{
		store.MediaParams: `{"temperature": 0, "stop": [" named"], "num_predict": 20, "num_ctx": 64}`,
		store.MediaSystem: "You tell stories."})

	out, _ := edgellm(t, bin, "", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || strings.Fields(lines[0])[0] != "NAME" ||
		strings.Join(strings.Fields(lines[1])[:5], " ") != "hf.co/Someone/Stories-GGUF:F32 1.2 MB F32 llama" ||
		strings.Join(strings.Fields(lines[2])[:5], " ") != "stories 1.2 MB F32 llama" {
		t.Fatalf("list:\n%s", out)
	}

	// Greedy with its stop string, both from the params layer.
	const want = ", there was a little girl\n"
	for _, args := range [][]string{
		{"run", "hf.co/Someone/Stories-GGUF:F32", "Once", "upon", "a", "time", "--backend", "cpu"},
		{"run", "-m", "hf.co/Someone/Stories-GGUF:F32", "-p", "Once upon a time", "--backend", "cpu"},
	} {
		if out, _ := edgellm(t, bin, "", args...); out != want {
			t.Errorf("%v: %q, want %q", args, out, want)
		}
	}
	// A flag beats the params layer: -n 3 (params: 20) stops before the stop string.
	if out, _ := edgellm(t, bin, "", "run", "hf.co/Someone/Stories-GGUF:F32", "Once upon a time", "-n", "3", "--backend", "cpu"); out != ", there was\n" {
		t.Errorf("run -n 3: %q", out)
	}
	if out, _ := edgellm(t, bin, "", "run", "stories:latest", "Once upon a time", "--temp", "0", "-n", "3", "--backend", "cpu"); out != ", there was\n" {
		t.Errorf("run stories:latest -n 3: %q", out)
	}
	if out, _ := edgellm(t, bin, "Once upon a time", "tokenize", "-m", "hf.co/Someone/Stories-GGUF:F32"); out != "1 403 407 261 378\n" {
		t.Errorf("tokenize by name: %q", out)
	}
	out, _ = edgellm(t, bin, "", "show", "--json", "hf.co/Someone/Stories-GGUF:F32")
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil || r["name"] != "hf.co/Someone/Stories-GGUF:F32" ||
		r["system"] != "You tell stories." || r["architecture"] != "llama" {
		t.Errorf("show by name: %v %v", r, err)
	}

	if out, _ := edgellm(t, bin, "", "cp", "stories", "mine"); out != "copied 'stories' to 'mine:latest'\n" {
		t.Errorf("cp: %q", out)
	}
	if out, _ := edgellm(t, bin, "", "rm", "stories", "hf.co/Someone/Stories-GGUF:F32"); out != "deleted 'stories'\ndeleted 'hf.co/Someone/Stories-GGUF:F32'\n" {
		t.Errorf("rm: %q", out)
	}
	out, _ = edgellm(t, bin, "", "list", "--json")
	var es []map[string]any
	if err := json.Unmarshal([]byte(out), &es); err != nil || len(es) != 1 || es[0]["name"] != "mine:latest" {
		t.Fatalf("list --json after cp and rm: %s", out)
	}
	// The copy outlives its source: it kept the file's bytes.
	if out, _ := edgellm(t, bin, "", "run", "mine", "Once upon a time", "--temp", "0", "-n", "3", "--backend", "cpu"); out != ", there was\n" {
		t.Errorf("run the copy: %q", out)
	}

	// pull from a registry on loopback (--insecure: plain http), then run
	// the model by the name pulled.
	reg := testmodel.Registry(t, b, map[string]string{store.MediaParams: `{"temperature": 0, "num_predict": 3}`})
	name := strings.TrimPrefix(reg.URL, "http://") + "/library/stories"
	cmd := exec.Command(bin, "pull", name)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "insecure") {
		t.Errorf("pull over http without --insecure: %v\n%s", err, out)
	}
	if _, errOut := edgellm(t, bin, "", "pull", name, "--insecure"); !strings.Contains(errOut, "pulled "+name+":latest") {
		t.Errorf("pull said: %s", errOut)
	}
	if out, _ := edgellm(t, bin, "", "run", name, "Once upon a time", "--backend", "cpu"); out != ", there was\n" {
		t.Errorf("run the pulled model: %q", out)
	}

	// A name that is nowhere says where it looked.
	cmd = exec.Command(bin, "run", "nope", "--backend", "cpu")
	errb, _ := cmd.CombinedOutput()
	for _, s := range []string{filepath.Join(dir, "nope.gguf"), "registry.ollama.ai/library/nope:latest"} {
		if !strings.Contains(string(errb), s) {
			t.Errorf("error %q does not name %s", errb, s)
		}
	}
}
