package server

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/server/chattmpl"
	"github.com/edgellm/edgellm/store"
)

// description is what /api/show, /api/tags and /api/ps say about a file,
// read from its metadata without loading the model.
type description struct {
	details    modelDetails
	info       map[string]any
	template   string
	stops      []string
	contextLen int
}

func statFile(path string) (fileInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileInfo{}, err
	}
	return fileInfo{name: strings.TrimSuffix(filepath.Base(path), ".gguf"), path: path, size: fi.Size(), modTime: fi.ModTime()}, nil
}

// descCache keeps descriptions by path, valid while the file's size and
// modification time stay the same: listing models should not re-read
// every file's metadata (a 128k-token vocabulary) on each call.
var descCache = struct {
	sync.Mutex
	m map[string]cachedDesc
}{m: map[string]cachedDesc{}}

type cachedDesc struct {
	size  int64
	mtime time.Time
	d     description
}

func describe(path string) (description, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return description{}, err
	}
	descCache.Lock()
	c, ok := descCache.m[path]
	descCache.Unlock()
	if ok && c.size == fi.Size() && c.mtime.Equal(fi.ModTime()) {
		return c.d, nil
	}
	d, err := readDescription(path)
	if err == nil {
		descCache.Lock()
		if len(descCache.m) > 1024 { // bound it; models dirs are small
			clear(descCache.m)
		}
		descCache.m[path] = cachedDesc{fi.Size(), fi.ModTime(), d}
		descCache.Unlock()
	}
	return d, err
}

func readDescription(path string) (description, error) {
	d := description{details: modelDetails{Format: "gguf", Families: []string{}}, info: map[string]any{}}
	f, err := gguf.Open(path)
	if err != nil {
		return d, fmt.Errorf("reading %s: %w", filepath.Base(path), err)
	}
	defer f.Close()
	arch, _ := f.String("general.architecture")
	d.details.Family = arch
	if arch != "" {
		d.details.Families = []string{arch}
	}
	if n, err := f.Uint(arch + ".context_length"); err == nil && n < 1<<31 {
		d.contextLen = int(n)
	}
	// Scalars only: arrays such as the vocabulary are large and say little.
	for _, kv := range f.KVs {
		if strings.HasPrefix(kv.Key, "tokenizer.chat_template") {
			continue
		}
		if v, ok := scalar(kv.Value); ok {
			d.info[kv.Key] = v
		}
	}
	var params uint64
	for _, t := range f.Tensors {
		params += t.Elements()
	}
	d.info["general.parameter_count"] = params
	d.details.ParameterSize = humanCount(params)
	d.details.QuantizationLevel = store.FileType(f) // as edgellm list says

	cm := chattmpl.Model{}
	cm.ChatTemplate, _ = f.String("tokenizer.chat_template")
	cm.Name, _ = f.String("general.name")
	cm.Tokens, _ = f.Strings("tokenizer.ggml.tokens")
	if tm, _ := chattmpl.ForModel(cm); tm != nil {
		d.template = tm.Source()
		d.stops = tm.Stops()
	}
	return d, nil
}

func scalar(v gguf.Value) (any, bool) {
	switch v.Type() {
	case gguf.TypeString:
		s, _ := v.Str()
		return s, true
	case gguf.TypeBool:
		b, _ := v.Bool()
		return b, true
	case gguf.TypeFloat32, gguf.TypeFloat64:
		f, _ := v.Float()
		return f, true
	case gguf.TypeInt8, gguf.TypeInt16, gguf.TypeInt32, gguf.TypeInt64:
		i, _ := v.Int()
		return i, true
	case gguf.TypeUint8, gguf.TypeUint16, gguf.TypeUint32, gguf.TypeUint64:
		u, _ := v.Uint()
		return u, true
	}
	return nil, false
}

// humanCount writes a parameter count as Ollama does: "260.1K", "134.5M", "2.4B".
func humanCount(n uint64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.1fB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1fK", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}
