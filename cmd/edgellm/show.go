package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"

	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/quant"
)

type showCmd struct {
	Model string `help:"GGUF file or store name; or give it as the argument." short:"m"`
	Name  string `arg:"" optional:"" name:"model" help:"The model, instead of -m."`
	JSON  bool   `help:"Print one JSON object."`
}

// showTensor is one row of the tensor table.
type showTensor struct {
	Name  string   `json:"name"`
	Type  string   `json:"type"`
	Shape []uint64 `json:"shape"`
	Bytes uint64   `json:"bytes"`
}

// showReport is what show prints.
type showReport struct {
	// A store model's name, and a pulled model's template, system and
	// params layers.
	Name           string `json:"name,omitempty"`
	OllamaTemplate string `json:"ollama_template,omitempty"`
	System         string `json:"system,omitempty"`
	Params         string `json:"params,omitempty"`

	File         string            `json:"file"`
	Version      uint32            `json:"gguf_version"`
	Architecture string            `json:"architecture"`
	Config       *model.Config     `json:"config,omitempty"`
	ConfigError  string            `json:"config_error,omitempty"`
	Metadata     map[string]string `json:"metadata"`
	Tensors      []showTensor      `json:"tensors"`
	TypeCounts   map[string]int    `json:"type_counts"`
	TensorBytes  uint64            `json:"tensor_bytes"`
	Tokenizer    map[string]string `json:"tokenizer"`
	LlamaCpp     bool              `json:"llama_cpp_can_read"`
	LlamaCppWhy  string            `json:"llama_cpp_note"`
	I2SLayout    string            `json:"i2s_layout,omitempty"` // how EdgeLLM reads the I2_S tensors, and why
}

// llamaCppArchs are architectures upstream llama.cpp knows (of those we run).
var llamaCppArchs = map[string]bool{"llama": true, "bitnet": true, "qwen2": true, "qwen3": true, "gemma3": true}

func (c *showCmd) Run(log *slog.Logger) error {
	arg := c.Model
	if arg == "" {
		arg = c.Name
	} else if c.Name != "" {
		return fmt.Errorf("give the model as -m or as the argument, not both")
	}
	src, err := resolveModel(arg)
	if err != nil {
		return err
	}
	f, err := gguf.Open(src.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := showReport{File: src.Path, Version: f.Version, Metadata: map[string]string{},
		TypeCounts: map[string]int{}, Tokenizer: map[string]string{},
		OllamaTemplate: src.Template, System: src.System, Params: string(src.Params)}
	if src.Dir != "" {
		r.Name = src.Name
	}
	r.Architecture, _ = f.String("general.architecture")
	for _, kv := range f.KVs {
		if strings.HasPrefix(kv.Key, "tokenizer.") {
			continue
		}
		r.Metadata[kv.Key] = kv.Value.String()
	}
	for _, ti := range f.Tensors {
		r.Tensors = append(r.Tensors, showTensor{ti.Name, ti.Type.String(), ti.Dims, ti.Size})
		r.TypeCounts[ti.Type.String()]++
		r.TensorBytes += ti.Size
	}
	if w, err := model.FromGGUF(f); err != nil {
		r.ConfigError = err.Error()
	} else {
		r.Config = &w.Config
	}
	tokModel, _ := f.String("tokenizer.ggml.model")
	r.Tokenizer["model"] = tokModel
	if pre, err := f.String("tokenizer.ggml.pre"); err == nil {
		r.Tokenizer["pre"] = pre
	}
	if toks, err := f.Strings("tokenizer.ggml.tokens"); err == nil {
		r.Tokenizer["tokens"] = fmt.Sprint(len(toks))
	}
	if m, ok := f.Lookup("tokenizer.ggml.merges"); ok {
		r.Tokenizer["merges"] = m.String()
	}
	for _, k := range []string{"bos_token_id", "eos_token_id", "eot_token_id", "unknown_token_id", "add_bos_token", "add_eos_token"} {
		if v, ok := f.Lookup("tokenizer.ggml." + k); ok {
			r.Tokenizer[k] = v.String()
		}
	}
	if _, ok := f.Lookup("tokenizer.chat_template"); ok {
		r.Tokenizer["chat_template"] = "yes"
	}
	r.LlamaCpp, r.LlamaCppWhy = llamaCppReadable(f, r.Architecture)
	if r.TypeCounts[quant.I2_S.String()] > 0 {
		if l, why, err := model.ChooseI2SLayout(f, model.I2SAuto); err != nil {
			r.I2SLayout = err.Error()
		} else {
			r.I2SLayout = fmt.Sprintf("%s (%s)", l, why)
		}
	}

	if c.JSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	printShow(&r)
	return nil
}

// llamaCppReadable says whether upstream llama.cpp (mid-2026) can load the
// file: its architecture and every tensor type must be ones it knows.
func llamaCppReadable(f *gguf.File, arch string) (bool, string) {
	if arch == "" {
		return false, "no general.architecture"
	}
	if !llamaCppArchs[arch] {
		return false, fmt.Sprintf("architecture %q is not upstream llama.cpp's (bitnet.cpp's fork reads bitnet-b1.58)", arch)
	}
	for _, ti := range f.Tensors {
		if ti.Type == quant.I2_S {
			return false, fmt.Sprintf("tensor %q is I2_S (type 36), which only bitnet.cpp reads (x86 builds the x86 layout, ARM builds the arm one)", ti.Name)
		}
	}
	return true, "architecture and all tensor types are upstream llama.cpp's"
}

func printShow(r *showReport) {
	if r.Name != "" {
		fmt.Printf("name:          %s\n", r.Name)
	}
	fmt.Printf("file:          %s (GGUF v%d)\n", r.File, r.Version)
	fmt.Printf("architecture:  %s\n", r.Architecture)
	if c := r.Config; c != nil {
		fmt.Printf("shape:         dim %d, ffn %d, layers %d, heads %d (kv %d, head dim %d), vocab %d, context %d\n",
			c.Dim, c.FFNDim, c.Layers, c.Heads, c.KVHeads, c.HeadDim, c.Vocab, c.ContextLen)
		fmt.Printf("rope:          base %g, scale %g, style %v; rms eps %g; act %v\n",
			c.RopeBase, c.RopeScale, c.RopeStyle, c.NormEps, c.Act)
		feats := make([]string, 0, 4)
		for _, f := range c.Features() {
			feats = append(feats, string(f))
		}
		if len(feats) == 0 {
			feats = append(feats, "none (the plain Llama block)")
		}
		fmt.Printf("features:      %s\n", strings.Join(feats, ", "))
		if c.Local != nil {
			n := 0
			for l := range c.Layers {
				if c.IsLocal(l) {
					n++
				}
			}
			fmt.Printf("window:        %d positions on %d of %d layers (RoPE base %g there)\n", c.Window, n, c.Layers, c.LocalRopeBase)
		}
	} else if len(r.Tensors) == 0 {
		fmt.Println("model:         vocabulary only (no tensors): tokenize works, run does not")
	} else if r.ConfigError != "" {
		fmt.Printf("model:         not runnable: %s\n", r.ConfigError)
	}
	keys := make([]string, 0, len(r.Tokenizer))
	for k := range r.Tokenizer {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Print("tokenizer:    ")
	for _, k := range keys {
		fmt.Printf(" %s=%s", k, r.Tokenizer[k])
	}
	fmt.Println()
	fmt.Printf("llama.cpp:     %v (%s)\n", r.LlamaCpp, r.LlamaCppWhy)
	if r.I2SLayout != "" {
		fmt.Printf("i2_s layout:   %s\n", r.I2SLayout)
	}
	types := make([]string, 0, len(r.TypeCounts))
	for t, n := range r.TypeCounts {
		types = append(types, fmt.Sprintf("%s x%d", t, n))
	}
	sort.Strings(types)
	fmt.Printf("tensors:       %d, %.1f MB (%s)\n", len(r.Tensors), float64(r.TensorBytes)/1e6, strings.Join(types, ", "))
	if v, ok := r.Metadata["edgellm.synth.fallbacks"]; ok {
		fmt.Printf("fallbacks:     %s\n", v)
	}
	for _, l := range []struct{ what, text string }{{"template", r.OllamaTemplate}, {"system", r.System}, {"params", r.Params}} {
		if l.text != "" {
			fmt.Printf("%-15s%q\n", l.what+" layer:", l.text)
		}
	}
	fmt.Println("metadata:")
	mk := make([]string, 0, len(r.Metadata))
	for k := range r.Metadata {
		mk = append(mk, k)
	}
	sort.Strings(mk)
	for _, k := range mk {
		fmt.Printf("  %-45s %s\n", k, r.Metadata[k])
	}
	fmt.Println("tensors:")
	for _, t := range r.Tensors {
		fmt.Printf("  %-32s %-6s %-18v %10d\n", t.Name, t.Type, t.Shape, t.Bytes)
	}
}
