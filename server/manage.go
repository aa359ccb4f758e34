package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/edgellm/edgellm/pull"
	"github.com/edgellm/edgellm/store"
)

// Ollama's model management: DELETE /api/delete and POST /api/copy, on the
// store (package store) that edgellm list, rm and cp manage too.

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Model string `json:"model"`
		Name  string `json:"name"` // older clients
	}
	if err := decodeBody(r, &in); err != nil {
		writeErr(w, err)
		return
	}
	if in.Model == "" {
		in.Model = in.Name
	}
	if in.Model == "" {
		writeErr(w, badRequest("model is required"))
		return
	}
	name, err := s.reg.remove(in.Model)
	if err != nil {
		writeErr(w, err)
		return
	}
	s.log.Info("model deleted", "model", name)
	w.WriteHeader(http.StatusOK)
}

func (s *Server) handleCopy(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Source      string `json:"source"`
		Destination string `json:"destination"`
	}
	if err := decodeBody(r, &in); err != nil {
		writeErr(w, err)
		return
	}
	if in.Source == "" || in.Destination == "" {
		writeErr(w, badRequest("source and destination are required"))
		return
	}
	if _, err := store.ParseName(in.Destination); err != nil {
		writeErr(w, badRequest("destination %q is not a valid model name", in.Destination))
		return
	}
	from, to, err := store.Copy(s.cfg.ModelsDir, in.Source, in.Destination)
	switch {
	case err == nil:
		s.log.Info("model copied", "from", from, "to", to)
		w.WriteHeader(http.StatusOK)
	case errors.Is(err, store.ErrNameTaken):
		writeErr(w, badRequest("destination %q is the name of a model file; pick another", in.Destination))
	default:
		writeErr(w, s.reg.storeError(in.Source, err))
	}
}

// handlePull is Ollama's POST /api/pull: progress objects as NDJSON, then
// {"status":"success"}; an error after the stream began is an {"error"}
// object, as Ollama sends it. With "stream": false, only the last object.
func (s *Server) handlePull(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Model    string `json:"model"`
		Name     string `json:"name"` // older clients
		Insecure bool   `json:"insecure"`
		Stream   *bool  `json:"stream"`
	}
	if err := decodeBody(r, &in); err != nil {
		writeErr(w, err)
		return
	}
	if in.Model == "" {
		in.Model = in.Name
	}
	if _, err := store.ParseName(in.Model); err != nil {
		writeErr(w, badRequest("invalid model name %q", in.Model))
		return
	}
	if s.cfg.Pull == nil {
		writeError(w, http.StatusNotImplemented, "this server cannot pull models")
		return
	}
	stream := in.Stream == nil || *in.Stream
	enc := json.NewEncoder(w)
	fl, _ := w.(http.Flusher)
	started := false
	var last pull.Progress
	progress := func(p pull.Progress) {
		last = p
		if !stream || r.Context().Err() != nil {
			return
		}
		if !started {
			started = true
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.WriteHeader(http.StatusOK)
		}
		enc.Encode(p)
		if fl != nil {
			fl.Flush()
		}
	}
	_, _, err := s.cfg.Pull(r.Context(), s.cfg.ModelsDir, in.Model, pull.Options{Insecure: in.Insecure, Progress: progress})
	if err != nil {
		s.log.Warn("pull failed", "model", in.Model, "err", err)
		if r.Context().Err() != nil {
			return // nobody to tell
		}
		// The pull's own words, less the models directory's path.
		msg := strings.ReplaceAll(err.Error(), s.cfg.ModelsDir, "<models>")
		if started {
			enc.Encode(map[string]string{"error": msg})
			return
		}
		writeError(w, pullStatus(err), msg)
		return
	}
	s.log.Info("model pulled", "model", in.Model)
	done := pull.Progress{Status: "success"}
	switch {
	case !started:
		writeJSON(w, http.StatusOK, done)
	case last.Status != done.Status: // pull.Pull ends with it; a fake may not
		enc.Encode(done)
	}
}

// pullStatus is a failed pull's HTTP status before any progress was sent:
// an unknown model is a 404, as Ollama answers it.
func pullStatus(err error) int {
	switch {
	case errors.Is(err, pull.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, pull.ErrInsecure):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}
