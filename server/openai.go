package server

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/edgellm/edgellm/server/chattmpl"
)

// OpenAI's API, translated onto the same internal request as Ollama's.

// oaiStop is a string or an array of strings.
type oaiStop []string

func (s *oaiStop) UnmarshalJSON(b []byte) error {
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		*s = nil // as absent
		return nil
	}
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = oaiStop{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("stop must be a string or an array of strings")
	}
	*s = many
	return nil
}

// oaiContent is a message's content: a string, or an array of parts of
// which only text parts are supported.
type oaiContent string

func (c *oaiContent) UnmarshalJSON(b []byte) error {
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		*c = ""
		return nil
	}
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*c = oaiContent(one)
		return nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(b, &parts); err != nil {
		return errors.New("content must be a string or an array of content parts")
	}
	var sb strings.Builder
	for _, p := range parts {
		if p.Type != "text" {
			return fmt.Errorf("content part of type %q is not supported", p.Type)
		}
		sb.WriteString(p.Text)
	}
	*c = oaiContent(sb.String())
	return nil
}

// oaiPrompt is a completion prompt: a string or an array of one string.
type oaiPrompt string

func (p *oaiPrompt) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*p = oaiPrompt(one)
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil || len(many) != 1 {
		return errors.New("prompt must be a string or an array of one string")
	}
	*p = oaiPrompt(many[0])
	return nil
}

// oaiCommon are the fields chat and completions share. TopK, MinP and
// RepeatPenalty are llama.cpp-style extensions.
type oaiCommon struct {
	Model               string   `json:"model"`
	Stream              bool     `json:"stream"`
	MaxTokens           *int     `json:"max_tokens"`
	MaxCompletionTokens *int     `json:"max_completion_tokens"`
	Temperature         *float64 `json:"temperature"`
	TopP                *float64 `json:"top_p"`
	TopK                *int     `json:"top_k"`
	MinP                *float64 `json:"min_p"`
	RepeatPenalty       *float64 `json:"repeat_penalty"`
	Seed                *int64   `json:"seed"`
	Stop                oaiStop  `json:"stop"`
	N                   *int     `json:"n"`
	StreamOptions       *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	PresencePenalty  *float64 `json:"presence_penalty"`
	FrequencyPenalty *float64 `json:"frequency_penalty"`
	// What we lack is refused unless it holds its neutral value; raw so
	// that any JSON type gets a 400 naming the field, not a parse error.
	Logprobs       json.RawMessage `json:"logprobs"` // chat: bool; completions: int
	TopLogprobs    json.RawMessage `json:"top_logprobs"`
	Tools          json.RawMessage `json:"tools"`
	ToolChoice     json.RawMessage `json:"tool_choice"`
	Functions      json.RawMessage `json:"functions"`
	FunctionCall   json.RawMessage `json:"function_call"`
	ResponseFormat json.RawMessage `json:"response_format"`
	LogitBias      json.RawMessage `json:"logit_bias"`
	Echo           json.RawMessage `json:"echo"`    // completions
	BestOf         json.RawMessage `json:"best_of"` // completions
	Suffix         json.RawMessage `json:"suffix"`  // completions
}

// oaiMaxStops is the most stop sequences OpenAI's API takes.
const oaiMaxStops = 4

// unsupported is each field we cannot honour and the JSON values that
// leave it at its neutral meaning (absent is always fine).
func (c *oaiCommon) unsupported() []struct {
	name    string
	v       json.RawMessage
	neutral []string
} {
	return []struct {
		name    string
		v       json.RawMessage
		neutral []string
	}{
		{"logprobs", c.Logprobs, []string{"false", "0"}},
		{"top_logprobs", c.TopLogprobs, []string{"0"}},
		{"tools", c.Tools, []string{"[]"}},
		{"tool_choice", c.ToolChoice, []string{`"none"`, `"auto"`}},
		{"functions", c.Functions, []string{"[]"}},
		{"function_call", c.FunctionCall, []string{`"none"`, `"auto"`}},
		{"response_format", c.ResponseFormat, []string{`{"type":"text"}`}},
		{"logit_bias", c.LogitBias, []string{"{}"}},
		{"echo", c.Echo, []string{"false"}},
		{"best_of", c.BestOf, []string{"1"}},
		{"suffix", c.Suffix, []string{`""`}},
	}
}

// compactJSON is v without insignificant spaces ("" for absent or null).
func compactJSON(v json.RawMessage) string {
	var b bytes.Buffer
	if len(v) == 0 || json.Compact(&b, v) != nil || b.String() == "null" {
		return ""
	}
	return b.String()
}

func (c *oaiCommon) options() (genOptions, error) {
	if c.Model == "" {
		return genOptions{}, badRequest("model is required")
	}
	if c.N != nil && *c.N != 1 {
		return genOptions{}, badRequest("n = %d: only one choice per request is supported (n must be 1)", *c.N)
	}
	if c.Temperature != nil && (*c.Temperature < 0 || *c.Temperature > 2) {
		return genOptions{}, badRequest("temperature = %v out of range [0, 2]", *c.Temperature)
	}
	for _, p := range []struct {
		name string
		v    *float64
	}{{"presence_penalty", c.PresencePenalty}, {"frequency_penalty", c.FrequencyPenalty}} {
		if p.v == nil {
			continue
		}
		if *p.v < -2 || *p.v > 2 {
			return genOptions{}, badRequest("%s = %v out of range [-2, 2]", p.name, *p.v)
		}
		if *p.v != 0 {
			return genOptions{}, badRequest("%s = %v is not supported (only 0)", p.name, *p.v)
		}
	}
	for _, u := range c.unsupported() {
		v := compactJSON(u.v)
		if v == "" || slices.Contains(u.neutral, v) {
			continue
		}
		return genOptions{}, badRequest("%s = %s is not supported", u.name, v)
	}
	// OpenAI's API takes at least 1; 0 is not "unset".
	for _, p := range []struct {
		name string
		v    *int
	}{{"max_tokens", c.MaxTokens}, {"max_completion_tokens", c.MaxCompletionTokens}} {
		if p.v != nil && *p.v < 1 {
			return genOptions{}, badRequest("%s = %d must be at least 1", p.name, *p.v)
		}
	}
	maxTok := c.MaxCompletionTokens
	if maxTok == nil {
		maxTok = c.MaxTokens
	}
	if len(c.Stop) > oaiMaxStops {
		return genOptions{}, badRequest("stop: at most %d sequences", oaiMaxStops)
	}
	var seed *int64
	if c.Seed != nil {
		// Any integer is a seed in OpenAI's API, negative ones too.
		v := *c.Seed & math.MaxInt64
		seed = &v
	}
	in := samplingIn{Temperature: c.Temperature, TopP: c.TopP, TopK: c.TopK, MinP: c.MinP,
		RepeatPenalty: c.RepeatPenalty, Seed: seed, NumPredict: maxTok, Stop: c.Stop}
	return in.options(openaiDefaults)
}

type oaiChatRequest struct {
	oaiCommon
	Messages []struct {
		Role    string     `json:"role"`
		Content oaiContent `json:"content"`
	} `json:"messages"`
}

type oaiCompletionRequest struct {
	oaiCommon
	Prompt oaiPrompt `json:"prompt"`
}

type oaiUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func usageOf(res *genResult) *oaiUsage {
	return &oaiUsage{res.stats.PromptTokens, res.stats.GeneratedTokens, res.stats.PromptTokens + res.stats.GeneratedTokens}
}

type oaiDelta struct {
	Role    string `json:"role,omitempty"`
	Content string `json:"content,omitempty"`
}

type oaiChoice struct {
	Index        int       `json:"index"`
	Message      *oaiDelta `json:"message,omitempty"` // chat, not streamed
	Delta        *oaiDelta `json:"delta,omitempty"`   // chat, streamed
	Text         *string   `json:"text,omitempty"`    // completions
	Logprobs     any       `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

type oaiResponse struct {
	ID                string      `json:"id"`
	Object            string      `json:"object"`
	Created           int64       `json:"created"`
	Model             string      `json:"model"`
	SystemFingerprint string      `json:"system_fingerprint"`
	Choices           []oaiChoice `json:"choices"`
	Usage             *oaiUsage   `json:"usage,omitempty"`
}

// writeOAIError sends OpenAI's error shape.
func writeOAIError(w http.ResponseWriter, err error) {
	status := statusOf(err)
	typ, code := "invalid_request_error", any(nil)
	switch {
	case status == http.StatusNotFound:
		code = "model_not_found"
	case status == http.StatusUnauthorized:
		code = "invalid_api_key"
	case status >= 500:
		typ = "server_error"
	}
	writeJSON(w, status, map[string]any{"error": map[string]any{
		"message": publicMessage(w, err), "type": typ, "param": nil, "code": code,
	}})
}

func newID(prefix string) string {
	var b [12]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func (s *Server) handleOAIChat(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	var in oaiChatRequest
	if err := decodeBody(r, &in); err != nil {
		writeOAIError(w, err)
		return
	}
	o, err := in.options()
	if err == nil && len(in.Messages) == 0 {
		err = badRequest("messages must not be empty")
	}
	msgs := make([]chattmpl.Message, len(in.Messages))
	for i, m := range in.Messages {
		if m.Role == "" && err == nil {
			err = badRequest("message %d has no role", i)
		}
		role := m.Role
		if role == "developer" { // OpenAI's newer name for system
			role = "system"
		}
		msgs[i] = chattmpl.Message{Role: role, Content: string(m.Content)}
	}
	if err != nil {
		writeOAIError(w, err)
		return
	}
	g := &genRequest{model: in.Model, chat: true, messages: msgs, opts: o, keepAlive: s.cfg.KeepAlive, arrived: arrived}
	s.oaiRun(w, r, g, &in.oaiCommon, true)
}

func (s *Server) handleOAICompletions(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	var in oaiCompletionRequest
	if err := decodeBody(r, &in); err != nil {
		writeOAIError(w, err)
		return
	}
	o, err := in.options()
	if err != nil {
		writeOAIError(w, err)
		return
	}
	// Completions continue text as it is, like edgellm run (no template).
	g := &genRequest{model: in.Model, prompt: string(in.Prompt), raw: true, opts: o, keepAlive: s.cfg.KeepAlive, arrived: arrived}
	s.oaiRun(w, r, g, &in.oaiCommon, false)
}

// oaiRun runs g, streaming Server-Sent Events ending in "data: [DONE]" or
// answering one object.
func (s *Server) oaiRun(w http.ResponseWriter, r *http.Request, g *genRequest, c *oaiCommon, chat bool) {
	id, object := newID("cmpl-"), "text_completion"
	if chat {
		id, object = newID("chatcmpl-"), "chat.completion"
	}
	created := time.Now().Unix()
	base := func() oaiResponse {
		return oaiResponse{ID: id, Object: object, Created: created, Model: c.Model, SystemFingerprint: "edgellm"}
	}
	choice := func(text string, finish *string) oaiChoice {
		ch := oaiChoice{FinishReason: finish}
		if chat {
			if c.Stream {
				ch.Delta = &oaiDelta{Content: text}
			} else {
				ch.Message = &oaiDelta{Role: "assistant", Content: text}
			}
		} else {
			ch.Text = &text
		}
		return ch
	}
	if !c.Stream {
		var full strings.Builder
		res, err := s.generate(r.Context(), g, func(t string) error { full.WriteString(t); return nil })
		if err != nil {
			if r.Context().Err() == nil {
				writeOAIError(w, err)
			}
			return
		}
		reason := res.doneReason()
		resp := base()
		resp.Choices = []oaiChoice{choice(full.String(), &reason)}
		resp.Usage = usageOf(res)
		writeJSON(w, http.StatusOK, resp)
		return
	}

	if chat {
		object = "chat.completion.chunk"
	}
	started := false
	fl, _ := w.(http.Flusher)
	send := func(v any) error {
		if !started {
			started = true
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Cache-Control", "no-cache")
			w.WriteHeader(http.StatusOK)
		}
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return err
		}
		if fl != nil {
			fl.Flush()
		}
		return nil
	}
	first := true
	res, err := s.generate(r.Context(), g, func(t string) error {
		resp := base()
		ch := choice(t, nil)
		if chat && first {
			ch.Delta.Role = "assistant"
		}
		first = false
		resp.Choices = []oaiChoice{ch}
		return send(resp)
	})
	if err != nil {
		if r.Context().Err() != nil {
			return
		}
		if !started {
			writeOAIError(w, err)
			return
		}
		send(map[string]any{"error": map[string]any{"message": publicMessage(w, err), "type": "server_error"}})
		fmt.Fprint(w, "data: [DONE]\n\n")
		return
	}
	reason := res.doneReason()
	resp := base()
	resp.Choices = []oaiChoice{choice("", &reason)}
	if chat && first {
		resp.Choices[0].Delta.Role = "assistant"
	}
	send(resp)
	if c.StreamOptions != nil && c.StreamOptions.IncludeUsage {
		u := base()
		u.Choices = []oaiChoice{}
		u.Usage = usageOf(res)
		send(u)
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	if fl != nil {
		fl.Flush()
	}
}

func (s *Server) handleOAIModels(w http.ResponseWriter, r *http.Request) {
	files, err := s.reg.list()
	if err != nil {
		writeOAIError(w, err)
		return
	}
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	out := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{Object: "list", Data: []model{}}
	for _, fi := range files {
		out.Data = append(out.Data, model{ID: fi.name, Object: "model", Created: fi.modTime.Unix(), OwnedBy: "edgellm"})
	}
	writeJSON(w, http.StatusOK, out)
}
