package chattmpl

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"text/template"
	"text/template/parse"

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
// no BOS (the tokenizer adds it, as Ollama's runner does). A template that
// could run or allocate without bound is refused (checkBounded); a model's
// thinking is not parsed out of its reply, which holds it as text.
func ParseOllama(src string) (*Template, error) {
	ot, err := otmpl.Parse(src)
	if err == nil {
		err = checkBounded(ot.Template)
	}
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

// checkBounded refuses what would let a template run or allocate without
// bound whatever the conversation: a range over anything but a field or a
// variable holding one (.Messages, $.Tools, $m.ToolCalls) or a slice of
// it, so not over a number (Go templates range over integers); a range
// over the messages inside another (n² and worse); a call to a named
// template from a named template (recursion); printf widths or precisions
// of five digits or more, or taken from an argument ("%*d"). Real
// templates do none of these. What is left grows with the request, which
// the server bounds.
func checkBounded(root *template.Template) error {
	computed, messages := map[string]bool{}, map[string]bool{}
	// First the variables: which hold something computed (a number, a
	// string...), which the messages (or part of them). A range's own
	// variables are an index and one element: neither.
	ranges := map[*parse.PipeNode]bool{}
	var vars func(n parse.Node)
	vars = func(n parse.Node) {
		switch x := n.(type) {
		case *parse.RangeNode:
			ranges[x.Pipe] = true
		case *parse.PipeNode:
			for _, v := range x.Decl {
				if !ranges[x] {
					computed[v.Ident[0]] = computed[v.Ident[0]] || !collection(x)
					messages[v.Ident[0]] = messages[v.Ident[0]] || mentions(x, messages)
				}
			}
		}
		forEachChild(n, vars)
	}
	for _, t := range root.Templates() {
		vars(t.Root)
	}
	var check func(n parse.Node, named, inMessages bool) error
	check = func(n parse.Node, named, inMessages bool) error {
		switch x := n.(type) {
		case *parse.RangeNode:
			if !collection(x.Pipe) || computedVar(x.Pipe, computed) {
				return fmt.Errorf("range over %s: only fields and their slices", x.Pipe)
			}
			over := mentions(x.Pipe, messages)
			if over && inMessages {
				return errors.New("a range over the messages inside another")
			}
			inMessages = inMessages || over
		case *parse.TemplateNode:
			if named {
				return fmt.Errorf("template %q called from a named template (it could recurse)", x.Name)
			}
		case *parse.StringNode:
			if badVerb.MatchString(x.Text) {
				return fmt.Errorf("format %q: width or precision too large", x.Text)
			}
		}
		var err error
		forEachChild(n, func(c parse.Node) {
			if err == nil {
				err = check(c, named, inMessages)
			}
		})
		return err
	}
	for _, t := range root.Templates() {
		if err := check(t.Root, t.Name() != root.Name(), false); err != nil {
			return err
		}
	}
	return nil
}

// badVerb finds a printf verb with a width or precision of five digits or
// more, or one taken from an argument.
var badVerb = regexp.MustCompile(`%[-+# 0]*(\d{5,}|\*|\.\*|\d*\.\d{5,}|\[)`)

// collection says whether a pipeline is a field or a variable, or a slice
// of one (`slice $.Messages 1`): what a range may go over.
func collection(p *parse.PipeNode) bool {
	if p == nil || len(p.Cmds) != 1 || len(p.Cmds[0].Args) == 0 {
		return false
	}
	args := p.Cmds[0].Args
	if id, ok := args[0].(*parse.IdentifierNode); ok && id.Ident == "slice" && len(args) > 1 {
		args = args[1:2]
	}
	if len(args) != 1 {
		return false
	}
	switch args[0].(type) {
	case *parse.FieldNode, *parse.VariableNode, *parse.DotNode:
		return true
	}
	return false
}

// computedVar says whether a range goes over a variable that was set to
// something computed somewhere.
func computedVar(p *parse.PipeNode, computed map[string]bool) bool {
	args := p.Cmds[0].Args
	if id, ok := args[0].(*parse.IdentifierNode); ok && id.Ident == "slice" {
		args = args[1:]
	}
	v, ok := args[0].(*parse.VariableNode)
	return ok && computed[v.Ident[0]]
}

// mentions says whether a pipeline reads .Messages or a variable set to
// them.
func mentions(p *parse.PipeNode, vars map[string]bool) bool {
	found := false
	var walk func(n parse.Node)
	walk = func(n parse.Node) {
		switch x := n.(type) {
		case *parse.FieldNode:
			found = found || slices.Contains(x.Ident, "Messages")
		case *parse.VariableNode:
			found = found || slices.Contains(x.Ident, "Messages") || vars[x.Ident[0]]
		case *parse.ChainNode:
			found = found || slices.Contains(x.Field, "Messages")
		}
		forEachChild(n, walk)
	}
	for _, c := range p.Cmds {
		walk(c)
	}
	return found
}

// forEachChild calls fn on each node directly under n.
func forEachChild(n parse.Node, fn func(parse.Node)) {
	switch x := n.(type) {
	case *parse.ListNode:
		if x != nil {
			for _, c := range x.Nodes {
				fn(c)
			}
		}
	case *parse.ActionNode:
		fn(x.Pipe)
	case *parse.IfNode:
		branch(&x.BranchNode, fn)
	case *parse.WithNode:
		branch(&x.BranchNode, fn)
	case *parse.RangeNode:
		branch(&x.BranchNode, fn)
	case *parse.TemplateNode:
		if x.Pipe != nil {
			fn(x.Pipe)
		}
	case *parse.PipeNode:
		if x != nil {
			for _, c := range x.Cmds {
				fn(c)
			}
		}
	case *parse.CommandNode:
		for _, a := range x.Args {
			fn(a)
		}
	case *parse.ChainNode:
		fn(x.Node)
	}
}

func branch(b *parse.BranchNode, fn func(parse.Node)) {
	if b.Pipe != nil {
		fn(b.Pipe)
	}
	if b.List != nil {
		fn(b.List)
	}
	if b.ElseList != nil {
		fn(b.ElseList)
	}
}
