package chattmpl

import (
	"strings"
	"testing"
)

var convo = []Message{
	{Role: "system", Content: "You are helpful."},
	{Role: "user", Content: "Hello"},
	{Role: "assistant", Content: "Hi there"},
	{Role: "user", Content: "Who are you?"},
}

// Expected renderings written out by hand from each family's published format.
func TestBuiltinRenderings(t *testing.T) {
	cases := []struct{ name, bos, eos, want string }{
		{Llama3, "<|begin_of_text|>", "<|eot_id|>",
			"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>" +
				"<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>" +
				"<|start_header_id|>user<|end_header_id|>\n\nWho are you?<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\n"},
		{ChatML, "", "<|im_end|>",
			"<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n" +
				"<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"},
		{Llama2, "<s>", "</s>",
			"<s>[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\nHello [/INST] Hi there </s><s>[INST] Who are you? [/INST]"},
		{Phi3, "<s>", "<|endoftext|>",
			"<|system|>\nYou are helpful.<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\nHi there<|end|>\n" +
				"<|user|>\nWho are you?<|end|>\n<|assistant|>\n"},
		{Gemma, "<bos>", "<eos>",
			"<bos><start_of_turn>user\nYou are helpful.\n\nHello<end_of_turn>\n" +
				"<start_of_turn>model\nHi there<end_of_turn>\n<start_of_turn>user\nWho are you?<end_of_turn>\n<start_of_turn>model\n"},
		{Zephyr, "<s>", "</s>",
			"<|system|>\nYou are helpful.</s>\n<|user|>\nHello</s>\n<|assistant|>\nHi there</s>\n<|user|>\nWho are you?</s>\n<|assistant|>\n"},
		{Plain, "<s>", "</s>",
			"system: You are helpful.\nuser: Hello\nassistant: Hi there\nuser: Who are you?\nassistant: "},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tm, err := Builtin(c.name, c.bos, c.eos)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tm.Render(convo, true)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("render:\n got %q\nwant %q", got, c.want)
			}
			if len(tm.Stops()) == 0 {
				t.Errorf("no stop strings")
			}
		})
	}
	if _, err := Builtin("nope", "", ""); err == nil {
		t.Error("unknown built-in accepted")
	}
}

// Templates as published in model files render the same text as our
// built-ins for the same family.
func TestFileTemplatesMatchBuiltins(t *testing.T) {
	files := map[string]string{
		// Meta-Llama-3-8B-Instruct's tokenizer.chat_template.
		Llama3: "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
		// The common ChatML template (Qwen2, SmolLM2 without a default system prompt).
		ChatML: "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
	}
	for fam, src := range files {
		ft, err := ForModel(Model{ChatTemplate: src, BOS: "<|begin_of_text|>", EOS: "</s>"})
		if err != nil {
			t.Fatalf("%s: %v", fam, err)
		}
		if ft.Name() != GGUF {
			t.Errorf("%s: picked %q, want the file's template", fam, ft.Name())
		}
		bt, _ := Builtin(fam, "<|begin_of_text|>", "</s>")
		for _, gen := range []bool{false, true} {
			a, err1 := ft.Render(convo, gen)
			b, err2 := bt.Render(convo, gen)
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			if a != b {
				t.Errorf("%s (gen=%v): file template\n %q\nbuilt-in\n %q", fam, gen, a, b)
			}
		}
		if strings.Join(ft.Stops(), ",") != strings.Join(bt.Stops(), ",") {
			t.Errorf("%s: stops %q, want %q", fam, ft.Stops(), bt.Stops())
		}
	}
}

func TestDetect(t *testing.T) {
	cases := []struct {
		m    Model
		want string
	}{
		{Model{Tokens: []string{"<s>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"}}, Llama3},
		{Model{Tokens: []string{"<|im_start|>", "<|im_end|>", "hello"}}, ChatML},
		{Model{Tokens: []string{"<start_of_turn>", "<end_of_turn>"}}, Gemma},
		{Model{Tokens: []string{"<|user|>", "<|assistant|>", "<|end|>"}}, Phi3},
		{Model{Tokens: []string{"<|user|>", "<|assistant|>"}}, Zephyr},
		{Model{Tokens: []string{"<s>", "</s>"}, Name: "Llama-2-7b-chat"}, Llama2},
		{Model{Tokens: []string{"<s>", "</s>"}, Name: "llama"}, Plain},
		{Model{}, Plain},
	}
	for _, c := range cases {
		if got := Detect(c.m); got != c.want {
			t.Errorf("Detect(%v) = %q, want %q", c.m.Tokens, got, c.want)
		}
	}
}

func TestForModelFallbacks(t *testing.T) {
	// A template that does not compile: the fallback is returned with the error.
	tm, err := ForModel(Model{ChatTemplate: "{% for m in messages %}", Tokens: []string{"<|im_start|>", "<|im_end|>"}})
	if err == nil {
		t.Error("broken template: no error")
	}
	if tm == nil || tm.Name() != ChatML {
		t.Fatalf("broken template: fallback %v, want chatml", tm)
	}
	// No template at all: plain, and it renders any roles.
	tm, err = ForModel(Model{})
	if err != nil || tm.Name() != Plain {
		t.Fatalf("no template: %v %v", tm, err)
	}
	got, err := tm.Render([]Message{{Role: "tool", Content: "42"}}, false)
	if err != nil || got != "tool: 42\n" {
		t.Errorf("plain without generation prompt: %q %v", got, err)
	}
	// A template that raises: an error, not a panic.
	tm, err = Parse("{{ raise_exception('only user and assistant roles') }}", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tm.Render(convo, true); err == nil {
		t.Error("raise_exception: no error")
	}
}

// A template in the style of Qwen2.5's: undefined variables (tools,
// message.tool_calls) are falsy, whitespace control and a default system
// prompt work.
func TestQwenStyleTemplate(t *testing.T) {
	src := "{%- if tools %}{{- 'TOOLS' }}{%- else %}{%- if messages[0]['role'] == 'system' %}" +
		"{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}" +
		"{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}{%- endif %}\n" +
		"{%- for message in messages %}\n" +
		"    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == \"assistant\" and not message.tool_calls) %}\n" +
		"        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n" +
		"    {%- endif %}\n{%- endfor %}\n" +
		"{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"
	tm, err := Parse(src, "", "<|im_end|>")
	if err != nil {
		t.Fatal(err)
	}
	bt, _ := Builtin(ChatML, "", "<|im_end|>")
	want, _ := bt.Render(convo, true)
	got, err := tm.Render(convo, true)
	if err != nil || got != want {
		t.Errorf("with system:\n got %q (%v)\nwant %q", got, err, want)
	}
	got, err = tm.Render(convo[1:2], true)
	want = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
	if err != nil || got != want {
		t.Errorf("default system:\n got %q (%v)\nwant %q", got, err, want)
	}
}

// The built-ins write what llama.cpp's llm_chat_apply_template writes for the
// same family (expected outputs from its tests/test-chat-template.cpp, on its
// conversation). llama.cpp leaves BOS to the tokenizer, so BOS is "" here.
func TestBuiltinsMatchLlamaCpp(t *testing.T) {
	conv := []Message{
		{Role: "system", Content: "You are a helpful assistant"},
		{Role: "user", Content: "Hello"},
		{Role: "assistant", Content: "Hi there"},
		{Role: "user", Content: "Who are you"},
		{Role: "assistant", Content: "   I am an assistant   "},
		{Role: "user", Content: "Another question"},
	}
	cases := map[string]string{
		ChatML: "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n   I am an assistant   <|im_end|>\n<|im_start|>user\nAnother question<|im_end|>\n<|im_start|>assistant\n",
		Gemma:  "<start_of_turn>user\nYou are a helpful assistant\n\nHello<end_of_turn>\n<start_of_turn>model\nHi there<end_of_turn>\n<start_of_turn>user\nWho are you<end_of_turn>\n<start_of_turn>model\nI am an assistant<end_of_turn>\n<start_of_turn>user\nAnother question<end_of_turn>\n<start_of_turn>model\n",
		Llama3: "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWho are you<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nI am an assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnother question<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
		Phi3:   "<|system|>\nYou are a helpful assistant<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\nHi there<|end|>\n<|user|>\nWho are you<|end|>\n<|assistant|>\n   I am an assistant   <|end|>\n<|user|>\nAnother question<|end|>\n<|assistant|>\n",
	}
	for name, want := range cases {
		tm, err := Builtin(name, "", "</s>")
		if err != nil {
			t.Fatal(err)
		}
		if got, err := tm.Render(conv, true); err != nil || got != want {
			t.Errorf("%s:\n got %q (%v)\nwant %q", name, got, err, want)
		}
	}
}

// Gemma's built-in follows llama.cpp's rules for system texts: trimmed,
// concatenated, and written before the next turn that is not the model's;
// other roles keep their name.
func TestGemmaBuiltinSystem(t *testing.T) {
	tm, err := Builtin(Gemma, "<bos>", "<eos>")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		msgs []Message
		want string
	}{
		{[]Message{{"system", " A \n"}, {"system", "B"}, {"user", " hi "}},
			"<bos><start_of_turn>user\nAB\n\nhi<end_of_turn>\n"},
		{[]Message{{"user", "q"}, {"assistant", "a"}, {"system", "S"}, {"assistant", "b"}, {"tool", "t"}},
			"<bos><start_of_turn>user\nq<end_of_turn>\n<start_of_turn>model\na<end_of_turn>\n" +
				"<start_of_turn>model\nb<end_of_turn>\n<start_of_turn>tool\nS\n\nt<end_of_turn>\n"},
		{[]Message{{"system", "  "}, {"user", "x"}}, "<bos><start_of_turn>user\nx<end_of_turn>\n"},
		{[]Message{{"system", "only"}}, "<bos>"},
	}
	for _, c := range cases {
		if got, err := tm.Render(c.msgs, false); err != nil || got != c.want {
			t.Errorf("%v:\n got %q (%v)\nwant %q", c.msgs, got, err, c.want)
		}
	}
}
