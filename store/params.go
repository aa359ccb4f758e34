package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
)

// MaxNumCtx bounds num_ctx (and repeat_last_n), here and in a server
// request, so that neither a params layer nor a request can ask for a KV
// cache of any size.
const MaxNumCtx = 1 << 17

// MaxStops bounds the stop strings of a params layer or a request.
const MaxStops = 16

// maxParamsLayer bounds a params layer (Ollama's are a few hundred bytes).
const maxParamsLayer = 1 << 20

// Params are the options of a pulled model's params layer (Ollama's JSON of
// default options) that EdgeLLM implements; the server's request options
// are the same fields under the same rules (Check). A nil field is not given.
type Params struct {
	Temperature   *float64 `json:"temperature"`
	TopK          *int     `json:"top_k"`
	TopP          *float64 `json:"top_p"`
	MinP          *float64 `json:"min_p"`
	Seed          *int64   `json:"seed"`
	RepeatPenalty *float64 `json:"repeat_penalty"`
	RepeatLastN   *int     `json:"repeat_last_n"`
	NumPredict    *int     `json:"num_predict"`
	NumCtx        *int     `json:"num_ctx"`
	Stop          []string `json:"stop"`
	// Penalties EdgeLLM does not implement: only their neutral value is accepted.
	PresencePenalty  *float64 `json:"presence_penalty"`
	FrequencyPenalty *float64 `json:"frequency_penalty"`
}

// ParseParams reads a params layer: a JSON object of Ollama's options
// (empty or blank: none). A wrong type or a value out of range (Check) is an error; options EdgeLLM
// does not implement (num_gpu, mirostat, num_keep...) are returned, sorted,
// for the caller to log, as Ollama ignores options it does not know.
func ParseParams(js []byte) (p Params, ignored []string, err error) {
	if len(js) > maxParamsLayer {
		return Params{}, nil, fmt.Errorf("params layer: %d bytes, more than %d", len(js), maxParamsLayer)
	}
	if len(bytes.TrimSpace(js)) == 0 {
		return Params{}, nil, nil
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(js, &keys); err != nil {
		return Params{}, nil, fmt.Errorf("params layer: %w", err)
	}
	if err := json.Unmarshal(js, &p); err != nil {
		return Params{}, nil, fmt.Errorf("params layer: %w", err)
	}
	if err := p.Check(); err != nil {
		return Params{}, nil, fmt.Errorf("params layer: %w", err)
	}
	known := ParamNames()
	for k := range keys {
		if !slices.Contains(known, k) {
			ignored = append(ignored, k)
		}
	}
	slices.Sort(ignored)
	return p, ignored, nil
}

// ParamNames are Params' JSON names.
func ParamNames() []string {
	var out []string
	for _, f := range reflect.VisibleFields(reflect.TypeFor[Params]()) {
		if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != "" && name != "-" {
			out = append(out, name)
		}
	}
	return out
}

// Check reports the first option out of its range, naming it.
func (p *Params) Check() error {
	for _, f := range []struct {
		name   string
		v      *float64
		lo, hi float64
	}{
		{"temperature", p.Temperature, 0, 100},
		{"top_p", p.TopP, 0, 1},
		{"min_p", p.MinP, 0, 1},
		{"repeat_penalty", p.RepeatPenalty, 0, 100},
	} {
		if f.v != nil && (math.IsNaN(*f.v) || *f.v < f.lo || *f.v > f.hi) {
			return fmt.Errorf("option %s = %v out of range [%v, %v]", f.name, *f.v, f.lo, f.hi)
		}
	}
	if p.TopK != nil && (*p.TopK < 0 || *p.TopK > 1<<24) {
		return fmt.Errorf("option top_k = %d out of range [0, %d]", *p.TopK, 1<<24)
	}
	if p.NumCtx != nil && (*p.NumCtx < 0 || *p.NumCtx > MaxNumCtx) {
		return fmt.Errorf("option num_ctx = %d out of range [0, %d]", *p.NumCtx, MaxNumCtx)
	}
	if p.RepeatLastN != nil && (*p.RepeatLastN < -1 || *p.RepeatLastN > MaxNumCtx) {
		return fmt.Errorf("option repeat_last_n = %d out of range [-1, %d]", *p.RepeatLastN, MaxNumCtx)
	}
	for _, f := range []struct {
		name string
		v    *float64
	}{{"presence_penalty", p.PresencePenalty}, {"frequency_penalty", p.FrequencyPenalty}} {
		if f.v != nil && *f.v != 0 {
			return fmt.Errorf("option %s = %v is not supported (only 0; repeat_penalty is)", f.name, *f.v)
		}
	}
	// num_predict as Ollama's API: -1 until an end token, -2 until the
	// context is full, 0 no limit.
	if p.NumPredict != nil && *p.NumPredict < -2 {
		return fmt.Errorf("option num_predict = %d must be positive, -1 or -2", *p.NumPredict)
	}
	if p.Seed != nil && *p.Seed < -1 {
		return fmt.Errorf("option seed = %d must be >= -1 (-1: random)", *p.Seed)
	}
	if len(p.Stop) > MaxStops {
		return fmt.Errorf("at most %d stop strings", MaxStops)
	}
	for _, s := range p.Stop {
		if s == "" {
			return fmt.Errorf("empty stop string")
		}
		if len(s) > 256 {
			return fmt.Errorf("stop string longer than 256 bytes")
		}
	}
	return nil
}
