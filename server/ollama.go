package server

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/edgellm/edgellm/server/chattmpl"
	"github.com/edgellm/edgellm/version"
)

// Ollama's API: NDJSON streaming by default, one object with "stream": false.

type ollamaGenerateRequest struct {
	Model     string          `json:"model"`
	Prompt    string          `json:"prompt"`
	System    string          `json:"system"`
	Template  string          `json:"template"`
	Context   []int32         `json:"context"`
	Stream    *bool           `json:"stream"`
	Raw       bool            `json:"raw"`
	Format    json.RawMessage `json:"format"`
	Images    []string        `json:"images"`
	KeepAlive any             `json:"keep_alive"`
	Options   *samplingIn     `json:"options"`
	ollamaLacks
}

// ollamaLacks are Ollama request fields we cannot honour: refused unless
// neutral (absent, null, false, 0, "").
type ollamaLacks struct {
	Suffix      json.RawMessage `json:"suffix"` // generate: fill-in-the-middle
	Think       json.RawMessage `json:"think"`
	Logprobs    json.RawMessage `json:"logprobs"`
	TopLogprobs json.RawMessage `json:"top_logprobs"`
}

func (l *ollamaLacks) check() error {
	for _, f := range []struct {
		name string
		v    json.RawMessage
	}{{"suffix", l.Suffix}, {"think", l.Think}, {"logprobs", l.Logprobs}, {"top_logprobs", l.TopLogprobs}} {
		if v := compactJSON(f.v); v != "" && v != "false" && v != "0" && v != `""` {
			return badRequest("%s = %s is not supported", f.name, v)
		}
	}
	return nil
}

type ollamaMessage struct {
	Role    string   `json:"role"`
	Content string   `json:"content"`
	Images  []string `json:"images,omitempty"`
}

type ollamaChatRequest struct {
	Model     string          `json:"model"`
	Messages  []ollamaMessage `json:"messages"`
	Stream    *bool           `json:"stream"`
	Format    json.RawMessage `json:"format"`
	Tools     json.RawMessage `json:"tools"`
	KeepAlive any             `json:"keep_alive"`
	Options   *samplingIn     `json:"options"`
	ollamaLacks
}

// ollamaMetrics are the final object's figures, in nanoseconds.
type ollamaMetrics struct {
	TotalDuration      int64 `json:"total_duration,omitempty"`
	LoadDuration       int64 `json:"load_duration,omitempty"`
	PromptEvalCount    int   `json:"prompt_eval_count,omitempty"`
	PromptEvalDuration int64 `json:"prompt_eval_duration,omitempty"`
	EvalCount          int   `json:"eval_count,omitempty"`
	EvalDuration       int64 `json:"eval_duration,omitempty"`
}

type ollamaGenerateResponse struct {
	Model      string    `json:"model"`
	CreatedAt  time.Time `json:"created_at"`
	Response   string    `json:"response"`
	Done       bool      `json:"done"`
	DoneReason string    `json:"done_reason,omitempty"`
	Context    []int32   `json:"context,omitempty"`
	ollamaMetrics
}

type ollamaChatResponse struct {
	Model      string         `json:"model"`
	CreatedAt  time.Time      `json:"created_at"`
	Message    *ollamaMessage `json:"message,omitempty"`
	Done       bool           `json:"done"`
	DoneReason string         `json:"done_reason,omitempty"`
	ollamaMetrics
}

func metricsOf(res *genResult) ollamaMetrics {
	return ollamaMetrics{
		TotalDuration:      int64(res.total),
		LoadDuration:       int64(res.loadDur),
		PromptEvalCount:    res.stats.PromptTokens,
		PromptEvalDuration: int64(res.stats.PromptDuration),
		EvalCount:          res.stats.GeneratedTokens,
		EvalDuration:       int64(res.stats.GenDuration),
	}
}

// writeErr sends an error with the status it deserves.
func writeErr(w http.ResponseWriter, err error) {
	writeError(w, statusOf(err), publicMessage(w, err))
}

// commonOllama validates what generate and chat share.
func (s *Server) commonOllama(model string, format json.RawMessage, opts *samplingIn, keepAlive any) (genOptions, time.Duration, error) {
	if model == "" {
		return genOptions{}, 0, badRequest("model is required")
	}
	if f := strings.TrimSpace(string(format)); f != "" && f != "null" && f != `""` {
		return genOptions{}, 0, badRequest("format (structured output) is not supported")
	}
	if opts == nil {
		opts = &samplingIn{}
	}
	o, err := opts.options(ollamaDefaults)
	if err != nil {
		return o, 0, err
	}
	ka, err := parseKeepAlive(keepAlive, s.cfg.KeepAlive)
	return o, ka, err
}

func (s *Server) handleGenerate(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	var in ollamaGenerateRequest
	if err := decodeBody(r, &in); err != nil {
		writeErr(w, err)
		return
	}
	o, ka, err := s.commonOllama(in.Model, in.Format, in.Options, in.KeepAlive)
	if err == nil {
		err = in.check()
	}
	if err == nil && len(in.Images) > 0 {
		err = badRequest("images are not supported")
	}
	if err == nil && in.Template != "" {
		err = badRequest("a per-request template is not supported")
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	if in.Prompt == "" && len(in.Context) == 0 {
		s.loadOrUnload(w, r, in.Model, o, ka, false)
		return
	}
	g := &genRequest{model: in.Model, prompt: in.Prompt, system: in.System, raw: in.Raw, context: in.Context,
		opts: o, keepAlive: ka, arrived: arrived, wantIDs: true}
	stream := in.Stream == nil || *in.Stream
	var full strings.Builder
	s.ollamaStream(w, r, g, stream, func(text string, res *genResult) any {
		resp := ollamaGenerateResponse{Model: in.Model, CreatedAt: time.Now().UTC(), Response: text}
		if res == nil {
			return resp
		}
		resp.Done = true
		resp.DoneReason = res.doneReason()
		resp.Context = res.ids
		resp.ollamaMetrics = metricsOf(res)
		return resp
	}, &full)
}

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	var in ollamaChatRequest
	if err := decodeBody(r, &in); err != nil {
		writeErr(w, err)
		return
	}
	o, ka, err := s.commonOllama(in.Model, in.Format, in.Options, in.KeepAlive)
	if err == nil {
		err = in.check()
	}
	if err == nil {
		if t := strings.TrimSpace(string(in.Tools)); t != "" && t != "null" && t != "[]" {
			err = badRequest("tools are not supported")
		}
	}
	msgs := make([]chattmpl.Message, 0, len(in.Messages))
	for i, m := range in.Messages {
		if err != nil {
			break
		}
		switch {
		case m.Role == "":
			err = badRequest("message %d has no role", i)
		case len(m.Images) > 0:
			err = badRequest("images are not supported")
		}
		msgs = append(msgs, chattmpl.Message{Role: m.Role, Content: m.Content})
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	if len(msgs) == 0 {
		s.loadOrUnload(w, r, in.Model, o, ka, true)
		return
	}
	g := &genRequest{model: in.Model, chat: true, messages: msgs, opts: o, keepAlive: ka, arrived: arrived}
	stream := in.Stream == nil || *in.Stream
	var full strings.Builder
	s.ollamaStream(w, r, g, stream, func(text string, res *genResult) any {
		resp := ollamaChatResponse{Model: in.Model, CreatedAt: time.Now().UTC(),
			Message: &ollamaMessage{Role: "assistant", Content: text}}
		if res == nil {
			return resp
		}
		resp.Done = true
		resp.DoneReason = res.doneReason()
		resp.ollamaMetrics = metricsOf(res)
		return resp
	}, &full)
}

// ollamaStream runs g and writes its output: one NDJSON object per piece of
// text then a final one, or (stream false) only the final one with all the
// text. chunk makes an object; res is nil except for the final one.
func (s *Server) ollamaStream(w http.ResponseWriter, r *http.Request, g *genRequest, stream bool,
	chunk func(text string, res *genResult) any, full *strings.Builder) {
	started := false
	enc := json.NewEncoder(w)
	fl, _ := w.(http.Flusher)
	emit := func(text string) error {
		if !stream {
			full.WriteString(text)
			return nil
		}
		if !started {
			started = true
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.WriteHeader(http.StatusOK)
		}
		if err := enc.Encode(chunk(text, nil)); err != nil {
			return err
		}
		if fl != nil {
			fl.Flush()
		}
		return nil
	}
	res, err := s.generate(r.Context(), g, emit)
	if err != nil {
		if r.Context().Err() != nil {
			return // nobody to tell
		}
		if statusOf(err) >= 500 {
			s.log.Warn("generation failed", "model", g.model, "err", err)
		}
		if started {
			enc.Encode(map[string]string{"error": publicMessage(w, err)})
			return
		}
		writeErr(w, err)
		return
	}
	if !stream {
		writeJSON(w, http.StatusOK, chunk(full.String(), res))
		return
	}
	if !started {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
	}
	enc.Encode(chunk("", res))
}

// loadOrUnload answers a request with no prompt as Ollama does: it loads
// the model (done_reason "load"), or with keep_alive 0 unloads it ("unload").
func (s *Server) loadOrUnload(w http.ResponseWriter, r *http.Request, model string, o genOptions, ka time.Duration, chat bool) {
	e, err := s.reg.lookup(model)
	if err == nil {
		o, err = e.options(o) // the params layer's num_ctx
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	reason := "unload"
	if ka == 0 {
		s.reg.unload(e)
	} else {
		l, err := s.reg.acquire(r.Context(), e, o.numCtx)
		if err != nil {
			if r.Context().Err() == nil {
				writeErr(w, err)
			}
			return
		}
		l.release(ka)
		reason = "load"
	}
	now := time.Now().UTC()
	if chat {
		writeJSON(w, http.StatusOK, ollamaChatResponse{Model: model, CreatedAt: now,
			Message: &ollamaMessage{Role: "assistant"}, Done: true, DoneReason: reason})
		return
	}
	writeJSON(w, http.StatusOK, ollamaGenerateResponse{Model: model, CreatedAt: now, Done: true, DoneReason: reason})
}

type modelDetails struct {
	ParentModel       string   `json:"parent_model"`
	Format            string   `json:"format"`
	Family            string   `json:"family"`
	Families          []string `json:"families"`
	ParameterSize     string   `json:"parameter_size"`
	QuantizationLevel string   `json:"quantization_level"`
}

type tagsModel struct {
	Name       string       `json:"name"`
	Model      string       `json:"model"`
	ModifiedAt time.Time    `json:"modified_at"`
	Size       int64        `json:"size"`
	Digest     string       `json:"digest"`
	Details    modelDetails `json:"details"`
}

// digestOf identifies a file version cheaply (name, size, modification
// time); it is not a hash of the content, which would mean reading
// gigabytes to list models.
func digestOf(fi fileInfo) string {
	if fi.digest != "" {
		return fi.digest // a pulled model's: its manifest's, as Ollama's
	}
	h := sha256.Sum256(fmt.Appendf(nil, "%s\x00%d\x00%d", fi.name, fi.size, fi.modTime.UnixNano()))
	return hex.EncodeToString(h[:])
}

func (s *Server) handleTags(w http.ResponseWriter, r *http.Request) {
	files, err := s.reg.list()
	if err != nil {
		writeErr(w, err)
		return
	}
	out := struct {
		Models []tagsModel `json:"models"`
	}{Models: []tagsModel{}}
	for _, fi := range files {
		d, _ := describe(fi.path)
		out.Models = append(out.Models, tagsModel{Name: fi.name, Model: fi.name, ModifiedAt: fi.modTime,
			Size: fi.size, Digest: digestOf(fi), Details: d.details})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleShow(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Model   string `json:"model"`
		Name    string `json:"name"` // older clients
		Verbose bool   `json:"verbose"`
	}
	if err := decodeBody(r, &in); err != nil {
		writeErr(w, err)
		return
	}
	if in.Model == "" {
		in.Model = in.Name
	}
	e, err := s.reg.lookup(in.Model)
	if err != nil {
		writeErr(w, err)
		return
	}
	d, err := describe(e.path)
	if err != nil {
		writeErr(w, err)
		return
	}
	d = e.show(d)
	var params strings.Builder
	fmt.Fprintf(&params, "num_ctx %d\n", d.contextLen)
	for _, st := range d.stops {
		fmt.Fprintf(&params, "stop %q\n", st)
	}
	fi, _ := statFile(e.path)
	writeJSON(w, http.StatusOK, map[string]any{
		"details":      d.details,
		"model_info":   d.info,
		"template":     d.template,
		"system":       e.system,
		"parameters":   strings.TrimSuffix(params.String(), "\n"),
		"capabilities": []string{"completion"},
		"modified_at":  fi.modTime,
	})
}

type psModel struct {
	Name          string       `json:"name"`
	Model         string       `json:"model"`
	Size          int64        `json:"size"`
	Digest        string       `json:"digest"`
	Details       modelDetails `json:"details"`
	ExpiresAt     time.Time    `json:"expires_at"`
	SizeVRAM      int64        `json:"size_vram"`
	ContextLength int          `json:"context_length"`
}

func (s *Server) handlePs(w http.ResponseWriter, r *http.Request) {
	out := struct {
		Models []psModel `json:"models"`
	}{Models: []psModel{}}
	for _, lm := range s.reg.loaded() {
		d, _ := describe(lm.path)
		fi, _ := statFile(lm.path)
		fi.digest = lm.digest // as /api/tags: a pulled model's manifest's, not its blob's
		exp := lm.expires
		if exp.IsZero() {
			exp = time.Now().Add(100 * 365 * 24 * time.Hour) // "forever", as Ollama shows it
		}
		out.Models = append(out.Models, psModel{Name: lm.name, Model: lm.name, Size: lm.size, Digest: digestOf(fi),
			Details: d.details, ExpiresAt: exp, ContextLength: lm.ctx})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleVersion(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"version": version.Version})
}
