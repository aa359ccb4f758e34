package server

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"
)

// The guard is the middleware in front of every route (it wraps the mux,
// so routes added later are covered too). In order, a request:
//   - gets a request id (X-Request-Id), which internal errors quote;
//   - on a loopback listener, must name a loopback Host (DNS rebinding);
//   - with an Origin header, must come from an allowed origin (cross-site
//     requests from web pages), which then gets CORS headers; preflights
//     from allowed origins are answered here;
//   - with an API key configured, must carry it as a Bearer token (but
//     /health, and /metrics unless MetricsAuth);
//   - has its body read here, at most MaxBody bytes within BodyTimeout.
// Refusals carry the error shape of the API the path belongs to.

// DefaultMaxBody is Config.MaxBody's default: 20 MB.
const DefaultMaxBody = 20 << 20

// DefaultBodyTimeout is Config.BodyTimeout's default.
const DefaultBodyTimeout = 60 * time.Second

// requestIDHeader carries a request's id, in the response and the log.
const requestIDHeader = "X-Request-Id"

// defaultOrigins are the origins allowed without EDGELLM_ORIGINS, as
// Ollama's: pages served from this machine, and desktop apps' schemes.
var defaultOrigins = func() []string {
	var o []string
	for _, h := range []string{"localhost", "127.0.0.1", "[::1]", "0.0.0.0"} {
		o = append(o, "http://"+h, "https://"+h, "http://"+h+":*", "https://"+h+":*")
	}
	return append(o, "app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*")
}()

// OriginsFromEnv reads EDGELLM_ORIGINS: comma-separated origins, each
// possibly with one "*" wildcard ("*" alone allows every origin).
func OriginsFromEnv() []string {
	var out []string
	for _, o := range strings.Split(os.Getenv("EDGELLM_ORIGINS"), ",") {
		if o = strings.TrimSpace(o); o != "" {
			out = append(out, o)
		}
	}
	return out
}

// originAllowed matches an Origin against the allowed patterns; a pattern
// holds at most one "*", which matches any run of characters.
func originAllowed(origin string, patterns []string) bool {
	origin = strings.ToLower(origin)
	for _, p := range patterns {
		p = strings.ToLower(p)
		if p == "*" || p == origin {
			return true
		}
		if pre, suf, ok := strings.Cut(p, "*"); ok && len(origin) >= len(pre)+len(suf) &&
			strings.HasPrefix(origin, pre) && strings.HasSuffix(origin, suf) {
			return true
		}
	}
	return false
}

// loopbackHost reports whether a Host header names this machine's loopback
// interface: localhost (or a name under .localhost), a 127.x.x.x or ::1
// address, any port. An empty Host (HTTP/1.0) has no name to rebind.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if host == "" || host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// listenerIsLoopback reports whether addr is a loopback address only.
func listenerIsLoopback(addr net.Addr) bool {
	ap, err := netip.ParseAddrPort(addr.String())
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// corsAllowHeaders are the request headers browsers may send: the APIs'
// and the official JavaScript clients' (OpenAI's x-stainless-*), as Ollama.
const corsAllowHeaders = "Authorization, Content-Type, User-Agent, Accept, X-Requested-With, OpenAI-Beta, " +
	"X-Stainless-Arch, X-Stainless-Async, X-Stainless-Custom-Poll-Interval, X-Stainless-Helper-Method, " +
	"X-Stainless-Lang, X-Stainless-OS, X-Stainless-Package-Version, X-Stainless-Poll-Helper, " +
	"X-Stainless-Retry-Count, X-Stainless-Runtime, X-Stainless-Runtime-Version, X-Stainless-Timeout"

// isOpenAIPath says which API's error shape a path gets.
func isOpenAIPath(p string) bool { return strings.HasPrefix(p, "/v1/") || p == "/v1" }

// writeAPIError sends err in the shape of the API path belongs to.
func writeAPIError(w http.ResponseWriter, r *http.Request, err error) {
	if isOpenAIPath(r.URL.Path) {
		writeOAIError(w, err)
		return
	}
	writeErr(w, err)
}

// bufferedBody is a request body the guard has read in full; decodeBody
// parses it in place rather than through another buffer.
type bufferedBody struct {
	*bytes.Reader
	b []byte
}

func (bufferedBody) Close() error { return nil }

func newRequestID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// guard wraps next with the checks above.
func (s *Server) guard(next http.Handler) http.Handler {
	origins := append(append([]string(nil), defaultOrigins...), s.cfg.Origins...)
	var keySum [sha256.Size]byte
	if s.cfg.APIKey != "" {
		keySum = sha256.Sum256([]byte(s.cfg.APIKey))
	}
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w := &reqWriter{ResponseWriter: rw, id: newRequestID(), log: s.log}
		w.Header().Set(requestIDHeader, w.id)
		if s.loopbackOnly.Load() && !loopbackHost(r.Host) {
			s.metrics.refused.WithLabelValues("host").Inc()
			writeAPIError(w, r, &apiError{http.StatusForbidden, "host not allowed: this server listens on loopback only; set --addr to serve other names"})
			return
		}
		if origin := r.Header.Get("Origin"); origin != "" {
			if !originAllowed(origin, origins) {
				s.metrics.refused.WithLabelValues("origin").Inc()
				writeAPIError(w, r, &apiError{http.StatusForbidden, "origin not allowed (EDGELLM_ORIGINS adds origins)"})
				return
			}
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", origin)
			h.Add("Vary", "Origin")
			if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
				h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS")
				h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
				h.Set("Access-Control-Max-Age", "43200")
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		if s.cfg.APIKey != "" && s.needsKey(r.URL.Path) {
			// Hashing both sides makes the comparison constant-time in the
			// key's length too.
			tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
			if !ok || subtle.ConstantTimeCompare(got[:], keySum[:]) != 1 {
				s.metrics.refused.WithLabelValues("auth").Inc()
				w.Header().Set("WWW-Authenticate", `Bearer realm="edgellm"`)
				writeAPIError(w, r, &apiError{http.StatusUnauthorized, "missing or invalid API key (Authorization: Bearer KEY)"})
				return
			}
		}
		if r.Body != nil && r.Body != http.NoBody {
			if err := s.readBody(w, r); err != nil {
				s.metrics.refused.WithLabelValues("body").Inc()
				writeAPIError(w, r, err)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// needsKey says whether a path requires the API key.
func (s *Server) needsKey(path string) bool {
	switch path {
	case "/health":
		return false
	case "/metrics":
		return s.cfg.MetricsAuth
	}
	return true
}

// readBody reads the whole body, at most MaxBody bytes and within
// BodyTimeout (a slow client cannot hold a handler), and replaces r.Body
// with the bytes read.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) error {
	limit := s.cfg.MaxBody
	tooLarge := &apiError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes (serve --max-body)", limit)}
	if r.ContentLength > limit {
		return tooLarge
	}
	rc := http.NewResponseController(w)
	// Not every ResponseWriter supports deadlines (httptest's does not);
	// there the body is only size-bounded.
	deadline := rc.SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout)) == nil
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		// MinRead spare: ReadFrom would otherwise double a full buffer to
		// look for the end.
		buf.Grow(int(r.ContentLength) + bytes.MinRead)
	}
	_, err := buf.ReadFrom(io.LimitReader(r.Body, limit+1))
	r.Body.Close()
	if deadline {
		// Cleared so that the rest of a long generation is not cut off.
		_ = rc.SetReadDeadline(time.Time{})
	}
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return &apiError{http.StatusRequestTimeout, fmt.Sprintf("request body not received within %v", s.cfg.BodyTimeout)}
		}
		return badRequest("reading the request body: %v", err)
	}
	if int64(buf.Len()) > limit {
		return tooLarge
	}
	b := buf.Bytes()
	r.Body = bufferedBody{bytes.NewReader(b), b}
	return nil
}

// reqWriter carries a request's id and the server's log to the error
// writers (writeErr, writeOAIError), which are reached from many handlers
// with only the ResponseWriter in hand.
type reqWriter struct {
	http.ResponseWriter
	id  string
	log *slog.Logger
}

func (w *reqWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *reqWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// loadError is a model that failed to load: the client learns which, the
// log why (the reason names files).
type loadError struct {
	name string
	err  error
}

func (e *loadError) Error() string { return fmt.Sprintf("loading model %q: %v", e.name, e.err) }
func (e *loadError) Unwrap() error { return e.err }

// publicMessage is what a client is told of err: its own message for a
// 4xx, and for anything internal only a generic line and the request id;
// the detail (paths, backend errors) goes to the log.
func publicMessage(w http.ResponseWriter, err error) string {
	status := statusOf(err)
	if status < 500 {
		return err.Error()
	}
	var ae *apiError
	if errors.As(err, &ae) {
		return err.Error() // written for the client (a 503's reason)
	}
	id := ""
	for w != nil {
		if rw, ok := w.(*reqWriter); ok {
			rw.log.Error("request failed", "request_id", rw.id, "status", status, "err", err)
			id = " (request id " + rw.id + "; the server's log has the detail)"
			break
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			break
		}
		w = u.Unwrap()
	}
	var le *loadError
	if errors.As(err, &le) {
		return fmt.Sprintf("model %q could not be loaded%s", le.name, id)
	}
	return "internal error" + id
}
