package testfiles

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// LlamaCppEnv names a list of folders (separated as PATH is) holding
// llama.cpp's built tools and docs/peer's llamacpp_logits.
const LlamaCppEnv = "EDGELLM_LLAMACPP_BIN"

// llamaCppDirs are the folders searched for a llama.cpp tool: those of
// $EDGELLM_LLAMACPP_BIN, then ../peer/build/bin and ../peer/tools beside the
// repository (where docs/peer/README.md builds them).
func llamaCppDirs() []string {
	var ds []string
	if v := os.Getenv(LlamaCppEnv); v != "" {
		ds = append(ds, filepath.SplitList(v)...)
	}
	if r := Root(); r != "" {
		peer := filepath.Join(r, "..", "peer")
		ds = append(ds, filepath.Join(peer, "build", "bin"), filepath.Join(peer, "tools"))
	}
	return ds
}

// LlamaCppTool returns the path of a built llama.cpp program (llama-quantize,
// llamacpp_logits, ...), skipping t, naming the tool and where it was
// looked for, when none is found: CI and a fresh clone have no llama.cpp.
func LlamaCppTool(t testing.TB, name string) string {
	t.Helper()
	ds := llamaCppDirs()
	for _, d := range ds {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	t.Skipf("skipped: llama.cpp's %s is not built (looked in %s; set %s)", name, strings.Join(ds, ", "), LlamaCppEnv)
	return ""
}
