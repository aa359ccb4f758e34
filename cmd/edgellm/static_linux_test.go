package main

import (
	"bytes"
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/edgellm/edgellm/internal/testmodel"
	"github.com/edgellm/edgellm/quant"
)

// The default build links the CUDA backend (purego); -tags nocuda leaves
// both out, which is what lets the binary be static.
func TestNoCUDADeps(t *testing.T) {
	deps := func(tags ...string) string {
		out, err := exec.Command("go", append(append([]string{"list", "-deps"}, tags...), ".")...).CombinedOutput()
		if err != nil {
			t.Fatalf("go list: %v\n%s", err, out)
		}
		return string(out)
	}
	if d := deps(); !strings.Contains(d, "github.com/ebitengine/purego\n") || !strings.Contains(d, "/backend/cuda\n") {
		t.Error("the default build lacks the CUDA backend or purego")
	}
	if d := deps("-tags", "nocuda"); strings.Contains(d, "purego") || strings.Contains(d, "/backend/cuda") {
		t.Error("-tags nocuda still links the CUDA backend or purego")
	}
}

// CGO_ENABLED=0 -tags nocuda builds a static ELF (no interpreter, no shared
// libraries; the default build has both), and it runs in an empty root with
// no dynamic loader: version (set by one -ldflags -X), help, and logits on
// the CPU that match the reference.
func TestStaticBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	root := t.TempDir()
	bin := filepath.Join(root, "edgellm")
	const ver = "9.8.7-static-test"
	build(t, bin, "-tags", "nocuda", "-ldflags", "-X github.com/edgellm/edgellm/version.Version="+ver)

	if interp, libs := dynamicParts(t, bin); interp || len(libs) > 0 {
		t.Fatalf("not static: interpreter %v, shared libraries %v", interp, libs)
	}

	modelPath := testmodel.Write(t, testmodel.Tiny("llama", quant.F32))
	data, err := os.ReadFile(modelPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "tiny.gguf"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	run, where := emptyRoot(t, root)
	if run == nil {
		t.Logf("cannot make an empty root here (%s): running the binary in place", where)
		run = func(name string, args ...string) (string, string, error) {
			return capture(exec.Command(filepath.Join(root, name), args...))
		}
		modelPath = filepath.Join(root, "tiny.gguf")
	} else {
		t.Logf("running in an empty root (%s)", where)
		modelPath = "/tiny.gguf"
		// The same root stops a dynamically linked program: it has no loader.
		if dyn := dynamicProgram(t); dyn != "" {
			b, err := os.ReadFile(dyn)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, "dynamic"), b, 0o755); err != nil {
				t.Fatal(err)
			}
			if _, _, err := run("dynamic"); err == nil {
				t.Fatalf("%s (dynamically linked) ran in the empty root", dyn)
			}
		}
	}

	out, errOut, err := run("edgellm", "version")
	if err != nil || !strings.HasPrefix(out, "edgellm "+ver+"\ncpu kernels: ") {
		t.Fatalf("version: %q, %v\n%s", out, err, errOut)
	}
	out, errOut, err = run("edgellm", "bench", "--help")
	if err != nil || !strings.Contains(out, "Usage: edgellm bench") {
		t.Fatalf("bench --help: %v\n%s%s", err, out, errOut)
	}
	ids := []int32{5, 42, 79, 116, 153, 190}
	out, errOut, err = run("edgellm", "logits", "-m", modelPath, "--ids", "5 42 79 116 153 190", "--threads", "1")
	if err != nil {
		t.Fatalf("logits: %v\n%s", err, errOut)
	}
	w := testmodel.Weights(t, filepath.Join(root, "tiny.gguf"))
	if rms := testmodel.RefRMS(t, w, ids, parseLogits(t, out, len(ids), w.Vocab)); rms > 1e-5 {
		t.Fatalf("logits: relative RMS %.3g from the reference", rms)
	}
	if strings.Contains(errOut, "cuda") {
		t.Errorf("auto looked for CUDA in a nocuda build:\n%s", errOut)
	}
	_, errOut, err = run("edgellm", "logits", "-m", modelPath, "--ids", "5", "--backend", "cuda")
	if err == nil || !strings.Contains(errOut, "nocuda") {
		t.Fatalf("--backend cuda in a nocuda build: %v\n%s", err, errOut)
	}
}

// dynamicParts reads an ELF file's interpreter (PT_INTERP) and the shared
// libraries it needs (DT_NEEDED).
func dynamicParts(t *testing.T, path string) (interp bool, libs []string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			interp = true
		}
	}
	libs, err = f.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	return interp, libs
}

// dynamicProgram finds a dynamically linked program on this system (""
// when there is none).
func dynamicProgram(t *testing.T) string {
	for _, name := range []string{"true", "env", "sh"} {
		p, err := exec.LookPath(name)
		if err != nil {
			continue
		}
		if p, err = filepath.EvalSymlinks(p); err != nil {
			continue
		}
		if interp, _ := dynamicParts(t, p); interp {
			return p
		}
	}
	return ""
}

// runner runs the program name of the root folder with args and returns its
// stdout and stderr.
type runner func(name string, args ...string) (stdout, stderr string, err error)

// emptyRoot returns a runner that starts programs with root as "/" (a
// chroot, as root or in a user namespace), checked by running root's
// edgellm in it, and says how; nil and why not when neither is allowed here.
func emptyRoot(t *testing.T, root string) (runner, string) {
	t.Helper()
	ways := []struct {
		name string
		attr func() *syscall.SysProcAttr
	}{
		{"chroot", func() *syscall.SysProcAttr { return &syscall.SysProcAttr{Chroot: root} }},
		{"user namespace and chroot", func() *syscall.SysProcAttr {
			return &syscall.SysProcAttr{Chroot: root, Cloneflags: syscall.CLONE_NEWUSER,
				UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
				GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}}}
		}},
	}
	var why []string
	for _, w := range ways {
		r := func(name string, args ...string) (string, string, error) {
			cmd := exec.Command("/"+name, args...)
			cmd.SysProcAttr, cmd.Dir, cmd.Env = w.attr(), "/", []string{}
			return capture(cmd)
		}
		_, _, err := r("edgellm", "version")
		if err == nil {
			return r, w.name
		}
		// Not allowed here; any other failure is the binary's.
		if !errors.Is(err, syscall.EPERM) && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOSYS) {
			t.Fatalf("edgellm in an empty root (%s): %v", w.name, err)
		}
		why = append(why, w.name+": "+err.Error())
	}
	return nil, strings.Join(why, "; ")
}

// capture runs cmd and returns its stdout and stderr.
func capture(cmd *exec.Cmd) (string, string, error) {
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}
