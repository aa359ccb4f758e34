package server

// A model pulled from an Ollama registry brings, beside its GGUF, up to three
// layers: a chat template (Go text/template), a system message and default
// options ("params", Ollama's JSON of options). This file turns them into
// what a request uses, as Ollama does: the template renders the prompt, the
// system message stands in for a request's missing one, and the params are
// the model's defaults, which a request's options override field by field.

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"

	"github.com/edgellm/edgellm/server/chattmpl"
	"github.com/edgellm/edgellm/store"
)

// modelDefaults are an Ollama model's template, system and params layers.
// The store sets them when it makes the model's entry (newModelDefaults);
// they do not change after, so they are read without a lock.
type modelDefaults struct {
	ollamaTemplate string     // the template layer; "": the GGUF's own template (or a built-in)
	system         string     // the system layer; "": none
	params         samplingIn // the params layer (parseParams); zero: none
}

// newModelDefaults checks and keeps a model's layers' texts ("" or nil for
// a layer the model does not have). A params layer that does not parse or
// holds a bad value is an error naming it: the model cannot be served with
// defaults other than its author's. A template layer is parsed when the
// model loads (modelTemplate).
func newModelDefaults(template, system string, params []byte, log *slog.Logger) (modelDefaults, error) {
	d := modelDefaults{ollamaTemplate: template, system: system}
	if len(bytes.TrimSpace(params)) == 0 {
		return d, nil
	}
	p, err := parseParams(params, log)
	if err != nil {
		return modelDefaults{}, err
	}
	d.params = p
	return d, nil
}

// parseParams reads a params layer (store.ParseParams: the rules a
// request's options follow too) and logs the options it ignores, as a
// request's unknown options are ignored. Its errors are plain: the model's
// fault, not a request's (no 400).
func parseParams(js []byte, log *slog.Logger) (samplingIn, error) {
	p, ignored, err := store.ParseParams(js)
	if err != nil {
		return samplingIn{}, err
	}
	if len(ignored) > 0 && log != nil {
		log.Debug("params layer: options not used", "options", strings.Join(ignored, ","))
	}
	return samplingIn(p), nil
}

// overlay returns base with each option that req gives (a non-nil pointer
// or slice: an empty stop list is given) in place of base's.
func (base samplingIn) overlay(req *samplingIn) samplingIn {
	out := base
	if req == nil {
		return out
	}
	ov, rv := reflect.ValueOf(&out).Elem(), reflect.ValueOf(req).Elem()
	for i := range rv.NumField() {
		if f := rv.Field(i); !f.IsZero() {
			ov.Field(i).Set(f)
		}
	}
	return out
}

// options gives a request's options under the model's params: the API's
// defaults, then the params layer, then what the request says. On the
// OpenAI endpoints the model's temperature and top_p do not apply: Ollama's
// OpenAI layer always sends both (1 where the request has none).
func (d *modelDefaults) options(o genOptions) (genOptions, error) {
	if reflect.ValueOf(d.params).IsZero() {
		return o, nil
	}
	merged := d.params.overlay(&o.in)
	if o.defaults == openaiDefaults {
		merged.Temperature, merged.TopP = o.in.Temperature, o.in.TopP
	}
	return merged.options(o.defaults)
}

// applySystem gives a request the model's system message where it has
// none, as Ollama does: a chat whose first message is not a system message
// gets it first; a templated generate without "system" gets it.
func (d *modelDefaults) applySystem(req *genRequest) {
	switch {
	case d.system == "":
	case req.chat:
		if len(req.messages) > 0 && req.messages[0].Role != "system" {
			req.messages = append([]chattmpl.Message{{Role: "system", Content: d.system}}, req.messages...)
		}
	case !req.raw && req.system == "":
		req.system = d.system
	}
}

// modelTemplate picks a loaded model's chat template: its Ollama template
// layer when it has one, else what fallback picks (the GGUF's own template
// or a built-in family). A layer that does not parse falls back too, and
// the error says so (the caller logs it), as a GGUF's broken template does.
func modelTemplate(ollamaTemplate string, fallback func() (*chattmpl.Template, error)) (*chattmpl.Template, error) {
	if ollamaTemplate == "" {
		return fallback()
	}
	tm, err := chattmpl.ParseOllama(ollamaTemplate)
	if err == nil {
		return tm, nil
	}
	fb, ferr := fallback()
	return fb, errors.Join(fmt.Errorf("template layer: %w", err), ferr)
}

// show puts the layers into what /api/show says of the model's file: the
// template layer for the file's template, the params' stop strings and
// num_ctx for the file's.
func (d *modelDefaults) show(desc description) description {
	if d.ollamaTemplate != "" {
		desc.template = d.ollamaTemplate
	}
	if d.params.Stop != nil {
		desc.stops = d.params.Stop
	}
	if d.params.NumCtx != nil && *d.params.NumCtx > 0 {
		desc.contextLen = *d.params.NumCtx
	}
	return desc
}
