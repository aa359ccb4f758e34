// Package chattmpl turns a conversation into the prompt text a model was
// trained on. It renders the Jinja chat template a GGUF file carries
// (tokenizer.chat_template) as Hugging Face's Python jinja2 setup does, with
// the variables llama.cpp's server passes; falls back to built-in templates
// for common families (Llama 3, ChatML, Gemma and Phi-3 written as llama.cpp
// writes them) when the file has none but its vocabulary says which family
// it is, and to a documented plain format otherwise, so chat works on any
// model. A model pulled from an Ollama registry brings its own template
// layer instead, Go text/template rendered by Ollama's package (ParseOllama).
//
// It knows nothing of HTTP, tokenization or generation: it maps messages to
// a string and says which strings end an assistant turn.
package chattmpl

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ardanlabs/jinja"
	otmpl "github.com/ollama/ollama/template"
)

// Message is one turn of a conversation.
type Message struct {
	Role    string // "system", "user", "assistant" (others are passed through)
	Content string
}

// Template renders conversations for one model.
type Template struct {
	name  string // "gguf" for the file's own template, else a built-in name
	src   string
	tmpl  *jinja.Template
	bos   string
	eos   string
	stops []string
	now   func() time.Time // the day templates print (Llama 3's "Today Date")
	// ollama is set instead of tmpl for an Ollama template layer (ollama.go);
	// think says whether Ollama would turn thinking on for it.
	ollama *otmpl.Template
	think  bool
}

// Family names of the built-in templates.
const (
	Llama3 = "llama3"
	ChatML = "chatml"
	Llama2 = "llama2"
	Phi3   = "phi3"
	Gemma  = "gemma"
	Zephyr = "zephyr"
	Plain  = "plain"
	GGUF   = "gguf" // the file's own tokenizer.chat_template
)

// builtins are the family templates, written for the same Jinja engine as
// the files' templates so that both go through one renderer.
var builtins = map[string]struct {
	src   string
	stops []string
}{
	Llama3: {
		src: "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n" +
			"{{ m.content | trim }}<|eot_id|>{% endfor %}" +
			"{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}",
		stops: []string{"<|eot_id|>"},
	},
	ChatML: {
		src: "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}" +
			"{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
		stops: []string{"<|im_end|>"},
	},
	// Llama 2 chat folds the system prompt into the first user turn.
	Llama2: {
		src: "{% if messages and messages[0].role == 'system' %}" +
			"{% set sys = '<<SYS>>\n' + messages[0].content + '\n<</SYS>>\n\n' %}{% set msgs = messages[1:] %}" +
			"{% else %}{% set sys = '' %}{% set msgs = messages %}{% endif %}" +
			"{% for m in msgs %}{% if m.role == 'assistant' %} {{ m.content | trim }} {{ eos_token }}" +
			"{% else %}{{ bos_token }}[INST] {% if loop.first %}{{ sys }}{% endif %}{{ m.content | trim }} [/INST]{% endif %}{% endfor %}",
		stops: []string{"[INST]"},
	},
	Phi3: {
		src: "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endfor %}" +
			"{% if add_generation_prompt %}<|assistant|>\n{% endif %}",
		stops: []string{"<|end|>"},
	},
	// Gemma has no system role: as llama.cpp's built-in "gemma" does, system
	// texts are trimmed, joined and put before the next non-model turn's
	// text; its "model" is everyone else's "assistant". The "\n\n" after the
	// system text is an expression's output, not template text: jinja v1.8.0
	// strips a newline from the first text after a block tag even when an
	// expression stands between them (Python's trim_blocks does not).
	Gemma: {
		src: "{{ bos_token }}{% set ns = namespace(sys='') %}{% for m in messages %}" +
			"{% if m.role == 'system' %}{% set ns.sys = ns.sys + (m.content | trim) %}{% else %}" +
			"{% set r = 'model' if m.role == 'assistant' else m.role %}<start_of_turn>{{ r }}\n" +
			"{% if ns.sys and r != 'model' %}{{ ns.sys + '\\n\\n' }}{% set ns.sys = '' %}{% endif %}" +
			"{{ m.content | trim }}<end_of_turn>\n{% endif %}{% endfor %}" +
			"{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}",
		stops: []string{"<end_of_turn>"},
	},
	Zephyr: {
		src: "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}{{ eos_token }}\n{% endfor %}" +
			"{% if add_generation_prompt %}<|assistant|>\n{% endif %}",
		stops: []string{"</s>"},
	},
	// Plain is the fallback for models with no template and no recognisable
	// family: one "role: content" line per message, then "assistant: ". It
	// stops when the model starts writing the user's next line.
	Plain: {
		src: "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}" +
			"{% if add_generation_prompt %}assistant: {% endif %}",
		stops: []string{"\nuser:"},
	},
}

// Builtins lists the built-in template names.
func Builtins() []string { return []string{Llama3, ChatML, Llama2, Phi3, Gemma, Zephyr, Plain} }

// Builtin returns the built-in template of a family; bos and eos are the
// model's special token texts (used by templates that spell them out).
func Builtin(name, bos, eos string) (*Template, error) {
	b, ok := builtins[name]
	if !ok {
		return nil, fmt.Errorf("chattmpl: no built-in template %q", name)
	}
	t, err := compile(name, b.src, bos, eos)
	if err != nil {
		return nil, err
	}
	t.stops = b.stops
	return t, nil
}

// Parse compiles a Jinja chat template such as a GGUF file's.
func Parse(src, bos, eos string) (*Template, error) {
	t, err := compile(GGUF, src, bos, eos)
	if err != nil {
		return nil, err
	}
	// Stop at the end-of-turn marker of the family the template looks like;
	// most of these are also end-of-generation tokens, so this is a safety net.
	if fam := familyOf(src); fam != "" {
		t.stops = builtins[fam].stops
	}
	return t, nil
}

func compile(name, src, bos, eos string) (*Template, error) {
	jt, err := jinja.Compile(src)
	if err != nil {
		return nil, fmt.Errorf("chattmpl: %s template: %w", name, err)
	}
	return &Template{name: name, src: src, tmpl: jt, bos: bos, eos: eos, now: time.Now}, nil
}

// Model describes what a model file says about its chat format.
type Model struct {
	ChatTemplate string   // tokenizer.chat_template, "" when absent
	Tokens       []string // the vocabulary, to recognise a family by its special tokens
	BOS, EOS     string   // texts of the BOS and EOS tokens ("" when none)
	Name         string   // general.name, a weak hint (Llama 2)
}

// ForModel picks the template for a model: its own when it has one that
// compiles, else a built-in family recognised from its special tokens, else
// Plain. The error reports a file template that failed to compile (the
// returned template is then the fallback, still usable).
func ForModel(m Model) (*Template, error) {
	var ferr error
	if strings.TrimSpace(m.ChatTemplate) != "" {
		t, err := Parse(m.ChatTemplate, m.BOS, m.EOS)
		if err == nil {
			return t, nil
		}
		ferr = err
	}
	t, err := Builtin(Detect(m), m.BOS, m.EOS)
	if err != nil {
		return nil, errors.Join(ferr, err)
	}
	return t, ferr
}

// Detect names the built-in family that fits a model with no usable template.
func Detect(m Model) string {
	has := make(map[string]bool)
	for _, tok := range m.Tokens {
		if len(tok) > 2 && len(tok) < 24 && (tok[0] == '<' || tok[0] == '[') {
			has[tok] = true
		}
	}
	switch {
	case has["<|start_header_id|>"] && has["<|eot_id|>"]:
		return Llama3
	case has["<|im_start|>"] && has["<|im_end|>"]:
		return ChatML
	case has["<start_of_turn>"] && has["<end_of_turn>"]:
		return Gemma
	case has["<|user|>"] && has["<|end|>"]:
		return Phi3
	case has["<|user|>"] && has["<|assistant|>"]:
		return Zephyr
	}
	name := strings.ToLower(m.Name)
	if (strings.Contains(name, "llama-2") || strings.Contains(name, "llama2")) && strings.Contains(name, "chat") {
		return Llama2
	}
	return Plain
}

// familyOf guesses which family a Jinja template source writes.
func familyOf(src string) string {
	switch {
	case strings.Contains(src, "<|start_header_id|>"):
		return Llama3
	case strings.Contains(src, "<|im_start|>"):
		return ChatML
	case strings.Contains(src, "<start_of_turn>"):
		return Gemma
	case strings.Contains(src, "<|end|>"):
		return Phi3
	case strings.Contains(src, "[INST]"):
		return Llama2
	}
	return ""
}

// Name is "gguf" for a file's own template, "ollama" for an Ollama
// template layer, else the built-in family.
func (t *Template) Name() string { return t.name }

// Source is the template's source (Jinja, or Go template for "ollama").
func (t *Template) Source() string { return t.src }

// Stops are strings that end an assistant turn in this format.
func (t *Template) Stops() []string { return t.stops }

// Render writes the conversation; with addGenerationPrompt it ends with the
// header of an assistant turn, ready for the model to continue. Templates see
// the variables llama.cpp's server gives them: messages, bos_token,
// eos_token, add_generation_prompt, enable_thinking (true, its default) and
// today's date as date_string ("06 Dec 2026") and datetime ("Dec 06 2026").
// An Ollama template renders as Ollama does (see ParseOllama), always ready
// for the assistant's turn.
func (t *Template) Render(msgs []Message, addGenerationPrompt bool) (out string, err error) {
	// The template engines are third-party code running a model's template:
	// turn a panic inside them into an error rather than a crashed request.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("chattmpl: %s template panicked: %v", t.name, r)
		}
	}()
	if t.ollama != nil {
		return t.renderOllama(msgs)
	}
	list := make([]any, len(msgs))
	for i, m := range msgs {
		list[i] = map[string]any{"role": m.Role, "content": m.Content}
	}
	day := t.now()
	out, err = t.tmpl.Render(map[string]any{
		"messages":              list,
		"add_generation_prompt": addGenerationPrompt,
		"bos_token":             t.bos,
		"eos_token":             t.eos,
		"enable_thinking":       true,
		"date_string":           day.Format("02 Jan 2006"),
		"datetime":              day.Format("Jan 02 2006"),
	})
	if err != nil {
		return "", fmt.Errorf("chattmpl: render %s template: %w", t.name, err)
	}
	return out, nil
}
