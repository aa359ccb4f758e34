package server

import (
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"testing"
)

// paramCase is one value of one field: accepted (200) or refused (400
// with a message naming the field).
type paramCase struct {
	field string
	value any
	ok    bool
}

func cases(field string, ok []any, bad []any) []paramCase {
	var out []paramCase
	for _, v := range ok {
		out = append(out, paramCase{field, v, true})
	}
	for _, v := range bad {
		out = append(out, paramCase{field, v, false})
	}
	return out
}

func runParamCases(t *testing.T, path string, base map[string]any, put func(req map[string]any, c paramCase), cs []paramCase) {
	t.Helper()
	s := newTestServer(t, nil)
	h := s.Handler()
	for _, c := range cs {
		req := maps.Clone(base)
		put(req, c)
		body, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(fmt.Sprintf("%s=%v", c.field, c.value), func(t *testing.T) {
			w := do(t, h, "POST", path, string(body))
			if c.ok {
				if w.Code != 200 {
					t.Fatalf("%s: status %d, want 200: %s", body, w.Code, w.Body)
				}
				return
			}
			if w.Code != 400 {
				t.Fatalf("%s: status %d, want 400: %s", body, w.Code, w.Body)
			}
			if !strings.Contains(w.Body.String(), c.field) {
				t.Errorf("%s: error %s does not name %s", body, w.Body, c.field)
			}
		})
	}
}

// Every sampling and stopping option of Ollama's API, at and past its bounds.
func TestOllamaParamBounds(t *testing.T) {
	long := strings.Repeat("x", 257)
	many := make([]string, maxStops+1)
	for i := range many {
		many[i] = fmt.Sprint(i)
	}
	var cs []paramCase
	cs = append(cs, cases("temperature", []any{0, 0.8, 100}, []any{-0.1, 100.5})...)
	cs = append(cs, cases("top_p", []any{0, 0.5, 1}, []any{-0.1, 1.01})...)
	cs = append(cs, cases("min_p", []any{0, 1}, []any{-0.5, 2})...)
	cs = append(cs, cases("top_k", []any{0, 40}, []any{-1, 1<<24 + 1})...)
	cs = append(cs, cases("repeat_penalty", []any{0, 1.1, 100}, []any{-1, 101})...)
	cs = append(cs, cases("repeat_last_n", []any{-1, 0, 64}, []any{-2, maxNumCtx + 1})...)
	cs = append(cs, cases("presence_penalty", []any{0}, []any{0.5, -1})...)
	cs = append(cs, cases("frequency_penalty", []any{0}, []any{1})...)
	cs = append(cs, cases("seed", []any{-1, 0, 42}, []any{-2})...)
	cs = append(cs, cases("num_predict", []any{-2, -1, 0, 1, 5}, []any{-3})...)
	cs = append(cs, cases("num_ctx", []any{0, 64, 1024}, []any{-1, maxNumCtx + 1})...)
	cs = append(cs, cases("stop", []any{[]string{"a"}, []string{}}, []any{[]string{""}, many, []string{long}})...)
	// Fields outside "options".
	top := map[string]bool{"keep_alive": true, "format": true, "suffix": true, "think": true, "logprobs": true, "top_logprobs": true, "images": true}
	cs = append(cs, cases("keep_alive", []any{"5m", 30, -1}, []any{"soon", true})...)
	cs = append(cs, cases("format", []any{"", nil}, []any{"json", map[string]any{"type": "object"}})...)
	cs = append(cs, cases("suffix", []any{""}, []any{"the end"})...)
	cs = append(cs, cases("think", []any{false}, []any{true, "high"})...)
	cs = append(cs, cases("logprobs", []any{false}, []any{true})...)
	cs = append(cs, cases("top_logprobs", []any{0}, []any{3})...)
	cs = append(cs, cases("images", []any{[]string{}}, []any{[]string{"AAAA"}})...)
	base := map[string]any{"model": "stories", "prompt": "Once", "stream": false, "unknown_key": 1}
	runParamCases(t, "/api/generate", base, func(req map[string]any, c paramCase) {
		opts := map[string]any{"num_predict": 1, "some_option_we_ignore": 3}
		if top[c.field] {
			req[c.field] = c.value
		} else {
			opts[c.field] = c.value
		}
		if c.field == "num_predict" && c.ok {
			// Unlimited ones run to an end token or the context's end; a
			// small context keeps that quick.
			opts["num_ctx"] = 32
		}
		req["options"] = opts
	}, cs)
}

// Every field of OpenAI's chat and completions APIs we validate, at and
// past its bounds; defaults and unknown keys are accepted.
func TestOpenAIParamBounds(t *testing.T) {
	var cs []paramCase
	cs = append(cs, cases("max_tokens", []any{1, 3}, []any{0, -1})...)
	cs = append(cs, cases("max_completion_tokens", []any{1}, []any{0})...)
	cs = append(cs, cases("temperature", []any{0, 1, 2}, []any{-0.1, 2.1})...)
	cs = append(cs, cases("top_p", []any{0, 1}, []any{1.5, -1})...)
	cs = append(cs, cases("top_k", []any{0, 5}, []any{-1})...)
	cs = append(cs, cases("min_p", []any{0, 0.1}, []any{1.5})...)
	cs = append(cs, cases("repeat_penalty", []any{1, 1.2}, []any{-1})...)
	cs = append(cs, cases("n", []any{1}, []any{2, 0})...)
	cs = append(cs, cases("presence_penalty", []any{0}, []any{2.5, 1})...)
	cs = append(cs, cases("frequency_penalty", []any{0, -0.0}, []any{-3, -1})...)
	cs = append(cs, cases("seed", []any{-5, 0, 7}, nil)...)
	cs = append(cs, cases("stop", []any{"a", []string{"a", "b", "c", "d"}, nil}, []any{[]string{"a", "b", "c", "d", "e"}, ""})...)
	cs = append(cs, cases("logprobs", []any{false, nil}, []any{true})...)
	cs = append(cs, cases("top_logprobs", []any{0}, []any{5})...)
	cs = append(cs, cases("tools", []any{[]any{}}, []any{[]any{map[string]any{"type": "function", "function": map[string]any{"name": "f"}}}})...)
	cs = append(cs, cases("tool_choice", []any{"none", "auto"}, []any{"required"})...)
	cs = append(cs, cases("functions", []any{[]any{}}, []any{[]any{map[string]any{"name": "f"}}})...)
	cs = append(cs, cases("function_call", []any{"none"}, []any{map[string]any{"name": "f"}})...)
	cs = append(cs, cases("response_format", []any{map[string]any{"type": "text"}}, []any{map[string]any{"type": "json_object"}})...)
	cs = append(cs, cases("logit_bias", []any{map[string]any{}}, []any{map[string]any{"50": 1}})...)
	cs = append(cs, cases("stream_options", []any{map[string]any{"include_usage": true}}, nil)...)
	cs = append(cs, cases("user", []any{"someone"}, nil)...)
	base := map[string]any{"model": "stories", "messages": []any{map[string]any{"role": "user", "content": "Once"}},
		"max_tokens": 1, "store": false, "metadata": map[string]any{"k": "v"}, "parallel_tool_calls": true}
	put := func(req map[string]any, c paramCase) {
		if c.field == "max_completion_tokens" {
			delete(req, "max_tokens")
		}
		req[c.field] = c.value
	}
	runParamCases(t, "/v1/chat/completions", base, put, cs)

	cs = nil
	cs = append(cs, cases("max_tokens", []any{1}, []any{0})...)
	cs = append(cs, cases("logprobs", []any{0, nil}, []any{2})...)
	cs = append(cs, cases("echo", []any{false}, []any{true})...)
	cs = append(cs, cases("best_of", []any{1}, []any{2})...)
	cs = append(cs, cases("suffix", []any{""}, []any{"the end"})...)
	runParamCases(t, "/v1/completions", map[string]any{"model": "stories", "prompt": "Once", "max_tokens": 1}, put, cs)
}
