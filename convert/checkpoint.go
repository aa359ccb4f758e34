package convert

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// maxJSONBytes bounds the JSON files of a checkpoint we read whole
// (config.json, the shard index): real ones are kilobytes to a few MB.
const maxJSONBytes = 64 << 20

// checkpoint is a Hugging Face checkpoint's tensors: one model.safetensors,
// or the shards that model.safetensors.index.json names.
type checkpoint struct {
	files   []*stFile
	tensors map[string]*stTensor
}

// names returns the tensor names, sorted (safetensors headers are
// unordered; sorting makes the output file deterministic).
func (c *checkpoint) names() []string {
	ns := make([]string, 0, len(c.tensors))
	for n := range c.tensors {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

func (c *checkpoint) Close() error {
	var first error
	for _, f := range c.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// readJSON decodes a JSON file of at most maxJSONBytes into v.
func readJSON(path string, v any) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxJSONBytes+1))
	if err != nil {
		return err
	}
	if len(b) > maxJSONBytes {
		return fmt.Errorf("%s: larger than %d bytes", path, maxJSONBytes)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// openCheckpoint opens dir's safetensors: the index's shards when
// model.safetensors.index.json exists, else model.safetensors. Every
// tensor the index names must be in its shard, and every shard tensor in
// the index.
func openCheckpoint(dir string) (*checkpoint, error) {
	c := &checkpoint{tensors: map[string]*stTensor{}}
	indexPath := filepath.Join(dir, "model.safetensors.index.json")
	if _, err := os.Stat(indexPath); err == nil {
		if err := c.openSharded(dir, indexPath); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	single := filepath.Join(dir, "model.safetensors")
	if _, err := os.Stat(single); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("convert: %s has neither model.safetensors nor model.safetensors.index.json (PyTorch .bin checkpoints are not supported)", dir)
	}
	f, err := openSafetensors(single)
	if err != nil {
		return nil, err
	}
	c.files = append(c.files, f)
	for n, t := range f.Tensors {
		c.tensors[n] = t
	}
	return c, nil
}

func (c *checkpoint) openSharded(dir, indexPath string) error {
	var index struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := readJSON(indexPath, &index); err != nil {
		return fmt.Errorf("convert: shard index: %w", err)
	}
	if len(index.WeightMap) == 0 {
		return fmt.Errorf("convert: %s: empty weight_map", indexPath)
	}
	shards := map[string]*stFile{}
	var order []string
	for _, shard := range index.WeightMap {
		// Shards live beside the index: a name with a path in it could
		// read any file on the machine.
		if shard == "" || shard != filepath.Base(shard) || shard == "." || shard == ".." || strings.ContainsRune(shard, '\\') {
			return fmt.Errorf("convert: %s: shard name %q is not a file name in the checkpoint's folder", indexPath, shard)
		}
		if _, ok := shards[shard]; !ok {
			shards[shard] = nil
			order = append(order, shard)
		}
	}
	sort.Strings(order)
	for _, shard := range order {
		f, err := openSafetensors(filepath.Join(dir, shard))
		if err != nil {
			return err
		}
		shards[shard] = f
		c.files = append(c.files, f)
	}
	for name, shard := range index.WeightMap {
		t, ok := shards[shard].Tensors[name]
		if !ok {
			return fmt.Errorf("convert: tensor %q: the index puts it in %s, which does not have it", name, shard)
		}
		c.tensors[name] = t
	}
	for _, shard := range order {
		for name := range shards[shard].Tensors {
			if index.WeightMap[name] != shard {
				return fmt.Errorf("convert: tensor %q of %s is not in the shard index", name, shard)
			}
		}
	}
	return nil
}
