package chattmpl

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ollama/ollama/api"
	otmpl "github.com/ollama/ollama/template"
	"github.com/ollama/ollama/thinking"
)

// ollamaTemplates reads testdata/ollama/*.gotmpl (their README says where
// each comes from), by file name.
func ollamaTemplates(t testing.TB) map[string]string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", "ollama", "*.gotmpl"))
	if err != nil || len(paths) < 10 {
		t.Fatalf("testdata/ollama: %d templates (%v)", len(paths), err)
	}
	out := make(map[string]string)
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(filepath.Base(p), ".gotmpl")] = string(b)
	}
	return out
}

// ollamaConversations are the message lists every template is rendered with.
var ollamaConversations = map[string][]Message{
	"empty":     nil,
	"user":      {{Role: "user", Content: "Hello"}},
	"system":    {{Role: "system", Content: "You are helpful."}, {Role: "user", Content: "Hello"}},
	"multiturn": convo,
	"multiturn-no-system": {{Role: "user", Content: "Hello"}, {Role: "assistant", Content: "Hi there"},
		{Role: "user", Content: "Who are you?"}},
	"prefill": {{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Tell a story."},
		{Role: "assistant", Content: "Once upon"}},
	// Consecutive turns of one role are merged, system messages collected.
	"repeated-roles": {{Role: "system", Content: "S1"}, {Role: "system", Content: "S2"},
		{Role: "user", Content: "U1"}, {Role: "user", Content: "U2"}},
	// Template syntax in a message is text, not template.
	"template-text": {{Role: "user", Content: "{{ .System }} {{ range .Messages }}<|im_end|>\n"}},
}

// oracle renders msgs as Ollama's server does: its template package, with
// thinking on where its capability check (thinking.InferTags) finds a
// thinking block in the template, as a request that does not say gets.
func oracle(t *testing.T, src string, msgs []Message) string {
	t.Helper()
	ot, err := otmpl.Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	var am []api.Message
	for _, m := range msgs {
		am = append(am, api.Message{Role: m.Role, Content: m.Content})
	}
	opening, closing := thinking.InferTags(ot.Template)
	think := opening != "" && closing != ""
	var b bytes.Buffer
	if err := ot.Execute(&b, otmpl.Values{Messages: am, Think: think, IsThinkSet: think}); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// Every real template × every conversation renders as Ollama's package does.
func TestOllamaTemplatesMatchOllama(t *testing.T) {
	for name, src := range ollamaTemplates(t) {
		tm, err := ParseOllama(src)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if tm.Name() != Ollama || tm.Source() != src || len(tm.Stops()) != 0 {
			t.Errorf("%s: name %q, stops %q", name, tm.Name(), tm.Stops())
		}
		for cname, msgs := range ollamaConversations {
			// Rendering must not change the caller's messages (Ollama's
			// collate merges into the slice it is given).
			before := append([]Message(nil), msgs...)
			got, err := tm.Render(msgs, true)
			if err != nil {
				t.Errorf("%s/%s: %v", name, cname, err)
				continue
			}
			if want := oracle(t, src, before); got != want {
				t.Errorf("%s/%s:\n got %q\nwant %q", name, cname, got, want)
			}
			for i := range msgs {
				if msgs[i] != before[i] {
					t.Errorf("%s/%s: message %d changed to %+v", name, cname, i, msgs[i])
				}
			}
		}
	}
}

// Renderings written out by hand from reading Ollama's template package:
// the .Messages path, the legacy path (one run per exchange, the last cut
// after .Response, so a trailing assistant message is a prefill), the
// system message, and thinking turned on for a thinking template.
func TestOllamaRenderingsByHand(t *testing.T) {
	tmpls := ollamaTemplates(t)
	cases := []struct {
		tmpl, conv, want string
	}{
		{"llama3.1", "system", "<|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>" +
			"<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{"llama3.1", "prefill", "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
			"<|start_header_id|>user<|end_header_id|>\n\nTell a story.<|eot_id|>" +
			"<|start_header_id|>assistant<|end_header_id|>\n\nOnce upon"},
		{"mistral-legacy", "multiturn", "[INST] You are helpful. Hello [/INST]Hi there[INST]  Who are you? [/INST]"},
		{"gemma-legacy", "prefill", "<start_of_turn>user\nBe brief. Tell a story.<end_of_turn>\n<start_of_turn>model\nOnce upon"},
		{"gemma-legacy", "user", "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n"},
		{"gemma3", "system", "<start_of_turn>user\nYou are helpful.<end_of_turn>\n<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n"},
		{"qwen3", "user", "<|im_start|>user\nHello /think<|im_end|>\n<|im_start|>assistant\n"},
		{"qwen2.5", "repeated-roles", "<|im_start|>system\nS1\n\nS2<|im_end|>\n<|im_start|>user\nU1\n\nU2<|im_end|>\n<|im_start|>assistant\n"},
		{"deepseek-coder", "system", "You are helpful.\n### Instruction:\nHello\n### Response:\n"},
	}
	for _, c := range cases {
		tm, err := ParseOllama(tmpls[c.tmpl])
		if err != nil {
			t.Fatal(err)
		}
		got, err := tm.Render(ollamaConversations[c.conv], true)
		if err != nil || got != c.want {
			t.Errorf("%s/%s:\n got %q (%v)\nwant %q", c.tmpl, c.conv, got, err, c.want)
		}
	}
}

// Ollama's default template, for a model with no template layer.
func TestOllamaDefaultTemplate(t *testing.T) {
	tm, err := ParseOllama("{{ .Prompt }}")
	if err != nil {
		t.Fatal(err)
	}
	got, err := tm.Render(convo, true)
	if want := "HelloHi thereWho are you?"; got != want || err != nil {
		t.Errorf("got %q (%v), want %q", got, err, want)
	}
}

// Bad templates are errors, at parse or at render, never a panic or a
// runaway allocation.
func TestOllamaTemplateErrors(t *testing.T) {
	for _, src := range []string{"{{ .Prompt ", "{{ nosuchfunc }}", "{{ end }}", "{{ template \"x\" }}"} {
		if _, err := ParseOllama(src); err == nil {
			t.Errorf("%q parsed", src)
		}
	}
	for _, src := range []string{
		// Ollama's legacy cut walks an else branch after .Response into a
		// nil list (a panic inside its package).
		"{{ if .Prompt }}{{ .Response }}{{ else }}x{{ end }}",
		"{{ index .Messages 99 }}",
		// 17 messages of 1 MiB, each written 2 times: past the 16 MiB cap.
		"{{ range .Messages }}{{ .Content }}{{ .Content }}{{ end }}",
	} {
		tm, err := ParseOllama(src)
		if err != nil {
			t.Fatalf("%q: %v", src, err)
		}
		var msgs []Message
		for range 17 {
			msgs = append(msgs, Message{Role: "user", Content: strings.Repeat("x", 1<<20)}, Message{Role: "assistant", Content: "y"})
		}
		if out, err := tm.Render(msgs, true); err == nil {
			t.Errorf("%q rendered %d bytes, no error", src, len(out))
		}
	}
}

// Templates that could run or allocate without bound are refused at
// parse; the loops real templates write are not.
func TestOllamaTemplateBounds(t *testing.T) {
	for _, src := range []string{
		"{{ range 1000000000000 }}x{{ end }}",
		"{{ $n := 100000000000 }}{{ range $n }}{{ end }}",
		"{{ $n := 0 }}{{ $n = 100000000000 }}{{ range $i := $n }}{{ end }}",
		"{{ range .Messages }}{{ range $.Messages }}{{ end }}{{ end }}",
		"{{ $m := .Messages }}{{ range .Messages }}{{ if true }}{{ range $m }}{{ end }}{{ end }}{{ end }}",
		"{{ range $i, $_ := .Messages }}{{ range slice $.Messages $i }}{{ end }}{{ end }}",
		`{{ define "a" }}{{ template "a" . }}{{ end }}{{ template "a" . }}`,
		`{{ printf "%0999999999d" 1 }}`,
		`{{ printf "%*d" 999999999 1 }}`,
		`{{ printf "%.99999f" 1.0 }}`,
		`{{ $f := "%099999s" }}{{ printf $f "x" }}`,
		"{{ range len .Messages }}{{ range len $.Messages }}{{ end }}{{ end }}",
		`{{ $n := len "xxxxxxxxxx" }}{{ range $n }}{{ end }}`,
		`{{ $n := .Prompt }}{{ $n = 100000000000 }}{{ range $n }}{{ end }}`,
	} {
		if _, err := ParseOllama(src); err == nil {
			t.Errorf("%q parsed", src)
		}
	}
	for _, src := range []string{
		"{{ range $i, $m := .Messages }}{{ range $m.ToolCalls }}{{ end }}{{ .Content }}{{ end }}",
		"{{ range .Messages }}{{ range .ToolCalls }}{{ range $k, $v := .Function.Arguments }}{{ $k }}{{ end }}{{ end }}{{ end }}",
		"{{ range .Messages }}{{ end }}{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}{{ end }}",
		`{{ printf "%05d %s" 3 .Prompt }}`,
		`{{ define "x" }}hi{{ end }}{{ template "x" . }}{{ .Prompt }}`,
		"{{ $m := .Messages }}{{ range $m }}{{ .Content }}{{ end }}{{ range slice $.Messages 1 }}{{ end }}",
	} {
		if _, err := ParseOllama(src); err != nil {
			t.Errorf("%q: %v", src, err)
		}
	}
}

// FuzzOllamaTemplate: any template text parses or fails cleanly; one that
// parses renders or fails cleanly, in bounded time and memory.
func FuzzOllamaTemplate(f *testing.F) {
	for _, src := range ollamaTemplates(f) {
		f.Add(src, "Hello")
	}
	f.Add("{{ if .Prompt }}{{ .Response }}{{ else }}x{{ end }}", "")
	f.Add("{{ with .System }}{{ .Response }}{{ end }}{{ json .Prompt }}{{ currentDate }}", "\x00")
	f.Fuzz(func(t *testing.T, src, user string) {
		tm, err := ParseOllama(src)
		if err != nil {
			return
		}
		msgs := []Message{{Role: "system", Content: "S"}, {Role: "user", Content: user},
			{Role: "assistant", Content: "A"}, {Role: "user", Content: user}}
		tm.Render(msgs, true) // an error is fine; a panic or hang is not
	})
}
