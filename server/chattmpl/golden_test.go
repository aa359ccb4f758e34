package chattmpl

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// goldenCase is one rendering in testdata/golden.json.
type goldenCase struct {
	Template     string    `json:"template"`
	Conversation string    `json:"conversation"`
	Gen          bool      `json:"add_generation_prompt"`
	BOS          string    `json:"bos"`
	EOS          string    `json:"eos"`
	Messages     []Message `json:"messages"`
	Want         *string   `json:"want"`
	Error        string    `json:"error"`
}

// TestRealTemplatesMatchJinja2 renders the chat templates of Gemma 3,
// Qwen2.5, Qwen3 and Llama 3.2 (their files' text, in testdata/) through our
// Jinja path and compares each result byte for byte with Python's jinja2 as
// Hugging Face runs it (testdata/golden.py wrote golden.json). A template
// that raises in jinja2 must give an error here too.
func TestRealTemplatesMatchJinja2(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var golden struct {
		Day   string       `json:"day"`
		Cases []goldenCase `json:"cases"`
	}
	if err := json.Unmarshal(raw, &golden); err != nil {
		t.Fatal(err)
	}
	day, err := time.Parse(time.DateOnly, golden.Day)
	if err != nil {
		t.Fatal(err)
	}
	if len(golden.Cases) < 80 {
		t.Fatalf("golden.json has %d cases", len(golden.Cases))
	}
	srcs := map[string]string{}
	for _, c := range golden.Cases {
		src, ok := srcs[c.Template]
		if !ok {
			b, err := os.ReadFile(filepath.Join("testdata", c.Template))
			if err != nil {
				t.Fatal(err)
			}
			src = string(b)
			srcs[c.Template] = src
		}
		name := strings.TrimSuffix(c.Template, ".jinja") + "/" + c.Conversation
		if c.Gen {
			name += "+gen"
		}
		t.Run(name, func(t *testing.T) {
			tm, err := ForModel(Model{ChatTemplate: src, BOS: c.BOS, EOS: c.EOS})
			if err != nil {
				t.Fatal(err)
			}
			if tm.Name() != GGUF {
				t.Fatalf("picked %q, want the file's template", tm.Name())
			}
			tm.now = func() time.Time { return day }
			got, err := tm.Render(c.Messages, c.Gen)
			switch {
			case c.Want == nil && err == nil:
				t.Fatalf("rendered %q; jinja2 raised %q", got, c.Error)
			case c.Want == nil:
				if !strings.Contains(err.Error(), c.Error) {
					t.Errorf("error %q does not carry the template's message %q", err, c.Error)
				}
			case err != nil:
				t.Fatalf("render: %v", err)
			case got != *c.Want:
				t.Errorf("render:\n got %q\nwant %q", got, *c.Want)
			}
		})
	}
}

// Templates print today's date as llama.cpp gives it (date_string).
func TestDateString(t *testing.T) {
	tm, err := Parse("{{ date_string }}|{{ datetime }}|{{ enable_thinking }}", "", "")
	if err != nil {
		t.Fatal(err)
	}
	tm.now = func() time.Time { return time.Date(2025, 3, 7, 23, 59, 0, 0, time.UTC) }
	got, err := tm.Render(nil, true)
	if want := "07 Mar 2025|Mar 07 2025|True"; err != nil || got != want {
		t.Errorf("got %q (%v), want %q", got, err, want)
	}
}

// FuzzRealTemplates: any user text renders through the real templates
// without error, hang or panic, and the ChatML ones (no trimming) carry it
// verbatim.
func FuzzRealTemplates(f *testing.F) {
	f.Add("Hello", "You are helpful.")
	f.Add("{{ x }} {% if %} <|im_end|> </think>", "")
	f.Add("<think>\n", "\x00\xff")
	var tms []*Template
	for _, name := range []string{"gemma-3-it.jinja", "qwen2.5-instruct.jinja", "qwen3.jinja", "llama-3.2-instruct.jinja"} {
		src, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		tm, err := Parse(string(src), "<bos>", "<eos>")
		if err != nil {
			f.Fatal(err)
		}
		tms = append(tms, tm)
	}
	f.Fuzz(func(t *testing.T, user, system string) {
		msgs := []Message{{Role: "user", Content: user}}
		if system != "" {
			msgs = append([]Message{{Role: "system", Content: system}}, msgs...)
		}
		for i, tm := range tms {
			out, err := tm.Render(msgs, true)
			if err != nil {
				t.Fatalf("template %d: %v", i, err)
			}
			if (i == 1 || i == 2) && !strings.Contains(out, "<|im_start|>user\n"+user+"<|im_end|>") {
				t.Fatalf("template %d lost the user's text %q:\n%q", i, user, out)
			}
		}
	})
}
