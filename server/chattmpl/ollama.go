package chattmpl

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ollama/ollama/api"
	otmpl "github.com/ollama/ollama/template"
	"github.com/ollama/ollama/thinking"
)

// Ollama is the name of a template from an Ollama model's template layer.
const Ollama = "ollama"

// maxOllamaOutput bounds what one rendering may write: far more than any
// context holds, small enough that a runaway template fails rather than
// filling memory.
const maxOllamaOutput = 16 << 20

// ParseOllama compiles an Ollama template layer: Go text/template with
// Ollama's variables (.System, .Prompt, .Response, .Messages, .Tools,
// .Think...) and functions (json, currentDate, toTypeScriptType...).
//
// It is Ollama's own package (github.com/ollama/ollama/template) that parses
// and renders, so the prompt is Ollama's byte for byte: a template that
// ranges over .Messages gets the conversation (system messages also joined
// into .System); an older one that uses only .System/.Prompt/.Response is
// run once per exchange and cut after the last .Response. Such templates
// carry no stop strings (Ollama keeps them in the params layer), and write
// no BOS (the tokenizer adds it, as Ollama's runner does).
func ParseOllama(src string) (*Template, error) {
	ot, err := otmpl.Parse(src)
	if err != nil {
		return nil, fmt.Errorf("chattmpl: ollama template: %w", err)
	}
	// Ollama turns thinking on by default for a model whose template shows
	// a thinking block (thinking.InferTags, as its capability check does);
	// the template then sees Think and IsThinkSet true.
	opening, closing := thinking.InferTags(ot.Template)
	return &Template{name: Ollama, src: src, ollama: ot, think: opening != "" && closing != ""}, nil
}

// renderOllama renders as Ollama's /api/chat does (and /api/generate, which
// makes the same messages of its system and prompt): always for the next
// assistant turn, Ollama's templates having no add_generation_prompt.
func (t *Template) renderOllama(msgs []Message) (string, error) {
	am := make([]api.Message, len(msgs))
	for i, m := range msgs {
		am[i] = api.Message{Role: m.Role, Content: m.Content}
	}
	w := &cappedWriter{max: maxOllamaOutput}
	err := t.ollama.Execute(w, otmpl.Values{Messages: am, Think: t.think, IsThinkSet: t.think})
	if err != nil {
		return "", fmt.Errorf("chattmpl: render ollama template: %w", err)
	}
	return w.b.String(), nil
}

var errTooLong = errors.New("output longer than 16 MiB")

// cappedWriter keeps what a template writes, failing past max bytes (the
// template engine then stops).
type cappedWriter struct {
	b   strings.Builder
	max int
}

func (w *cappedWriter) Write(p []byte) (int, error) {
	if w.b.Len()+len(p) > w.max {
		return 0, errTooLong
	}
	return w.b.Write(p)
}
