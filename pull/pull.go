// Package pull downloads models into the store: GGUF files from Hugging Face
// repositories (hf.co/OWNER/REPO[:QUANT]) and models from Ollama-style
// registries (NAME[:TAG], HOST[:PORT]/NAMESPACE/NAME:TAG). Every blob is
// resumed with HTTP Range after an interruption, checked against its sha256
// and renamed into place only when it matches; the manifest comes last, so a
// name in the store always names complete, verified blobs.
package pull

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/edgellm/edgellm/store"
	"github.com/edgellm/edgellm/version"
)

// Options configure a pull. The zero value pulls from the public hubs.
type Options struct {
	HFEndpoint string         // "" = $HF_ENDPOINT, else https://huggingface.co
	HFToken    string         // "" = $HF_TOKEN (sent as Authorization: Bearer to the HF endpoint only)
	Insecure   bool           // allow http:// for registries (Ollama's --insecure)
	Client     *http.Client   // nil = a default client with connect/header timeouts (no overall timeout: files are GBs)
	Progress   func(Progress) // nil = silent; called from Pull's goroutine

	// Retries is how many times one blob's transfer is resumed after a
	// failure that may pass (a cut connection, a stall, a 5xx): 0 = 3,
	// negative = none (the partial file stays for the next Pull).
	Retries int

	retryWait time.Duration // first wait between retries, doubled each time (0 = 1s); tests shorten it
	stall     time.Duration // no byte for this long restarts the transfer (0 = 60s)
}

// Progress is one of Ollama's /api/pull progress objects.
type Progress struct {
	Status    string `json:"status"` // "pulling manifest", "pulling 0123456789ab" (a blob, as Ollama names it), "verifying sha256 digest", "writing manifest", "success"
	Digest    string `json:"digest,omitempty"`
	Total     int64  `json:"total,omitempty"`
	Completed int64  `json:"completed,omitempty"`
}

// Errors a caller may tell apart (errors.Is), e.g. to choose an HTTP status.
var (
	ErrNotFound     = errors.New("model not found")
	ErrUnauthorized = errors.New("unauthorized")
	ErrDigest       = errors.New("digest mismatch")
	ErrInsecure     = errors.New("insecure protocol http (use --insecure)")
)

const defaultHFEndpoint = "https://huggingface.co"

// Pull downloads the model called name into the store folder dir: each blob to
// dir/blobs/sha256-HEX (through dir/blobs/sha256-HEX-partial, resumed with Range when present),
// verified, then the manifest written (temp file + rename) to store.ManifestPath(dir, n).
// It returns the parsed name and the manifest written.
func Pull(ctx context.Context, dir, name string, opt Options) (store.Name, *store.Manifest, error) {
	n, err := store.ParseName(name)
	if err != nil {
		return store.Name{}, nil, fmt.Errorf("pull: %w", err)
	}
	p := newPuller(dir, opt)
	var m *store.Manifest
	if isHF(n.Host) {
		m, err = p.hf(ctx, n)
	} else {
		m, err = p.registry(ctx, n)
	}
	if err != nil {
		return n, nil, fmt.Errorf("pull %s: %w", n.Display(), err)
	}
	p.progress(Progress{Status: "writing manifest"})
	if err := store.WriteManifest(dir, n, m); err != nil {
		return n, nil, fmt.Errorf("pull %s: manifest: %w", n.Display(), err)
	}
	p.progress(Progress{Status: "success"})
	return n, m, nil
}

// isHF reports a Hugging Face name, which Ollama writes hf.co/OWNER/REPO.
func isHF(host string) bool {
	return strings.EqualFold(host, "hf.co") || strings.EqualFold(host, "huggingface.co")
}

type puller struct {
	dir    string
	opt    Options
	client *http.Client
	auth   *hostAuth
}

func newPuller(dir string, opt Options) *puller {
	base := opt.Client
	if base == nil {
		base = &http.Client{}
		if t, ok := http.DefaultTransport.(*http.Transport); ok {
			t = t.Clone()
			// Connecting has the default transport's limits (30s dial, 10s
			// TLS); a server that accepts and then says nothing is given a
			// minute. No overall timeout: a file may take hours.
			t.ResponseHeaderTimeout = time.Minute
			base.Transport = t
		}
	}
	c := *base
	rt := c.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	auth := &hostAuth{base: rt, tokens: map[string]string{}}
	c.Transport = auth
	if opt.Retries == 0 {
		opt.Retries = 3
	}
	if opt.retryWait == 0 {
		opt.retryWait = time.Second
	}
	if opt.stall == 0 {
		opt.stall = time.Minute
	}
	return &puller{dir: dir, opt: opt, client: &c, auth: auth}
}

func (p *puller) progress(pr Progress) {
	if p.opt.Progress != nil {
		p.opt.Progress(pr)
	}
}

// hostAuth adds a bearer token to requests for the one host it was given
// for, and to no other: a token never follows a redirect to a CDN or
// anywhere else, whatever the http.Client's own redirect rules are.
type hostAuth struct {
	base   http.RoundTripper
	mu     sync.Mutex
	tokens map[string]string // URL host (lower case) -> "Bearer TOKEN"
}

func (a *hostAuth) set(host, token string) {
	a.mu.Lock()
	a.tokens[strings.ToLower(host)] = "Bearer " + token
	a.mu.Unlock()
}

func (a *hostAuth) RoundTrip(r *http.Request) (*http.Response, error) {
	a.mu.Lock()
	v := a.tokens[strings.ToLower(r.URL.Host)]
	a.mu.Unlock()
	if v == "" {
		return a.base.RoundTrip(r)
	}
	r2 := r.Clone(r.Context())
	r2.Header.Set("Authorization", v)
	return a.base.RoundTrip(r2)
}

// get sends a GET with EdgeLLM's User-Agent and the headers given.
func (p *puller) get(ctx context.Context, u string, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", fmt.Sprintf("edgellm/%s (%s %s)", version.Version, runtime.GOARCH, runtime.GOOS))
	resp, err := p.client.Do(req)
	if err != nil && !p.opt.Insecure && strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return nil, fmt.Errorf("%w: %w", ErrInsecure, err)
	}
	return resp, err
}

// readCapped reads a body of at most max bytes; more is an error, never a
// huge allocation.
func readCapped(r io.Reader, max int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("response larger than %d bytes", max)
	}
	return b, nil
}

// statusError turns a failed response into an error wrapping ErrNotFound
// or ErrUnauthorized where it means that, with the server's own message
// (Hugging Face's {"error": ...}, a registry's {"errors": [{"message": ...}]}).
func statusError(resp *http.Response, what string) error {
	b, _ := readCapped(resp.Body, 4<<10)
	msg := serverMessage(b)
	var kind error
	switch resp.StatusCode {
	case http.StatusNotFound:
		kind = ErrNotFound
	case http.StatusUnauthorized, http.StatusForbidden:
		kind = ErrUnauthorized
	}
	err := fmt.Errorf("%s: %s", what, resp.Status)
	if msg != "" {
		err = fmt.Errorf("%s: %s: %s", what, resp.Status, msg)
	}
	if kind != nil {
		return fmt.Errorf("%w: %w", kind, err)
	}
	if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout {
		return retryable{err}
	}
	return err
}

func serverMessage(b []byte) string {
	var e struct {
		Error  any `json:"error"`
		Errors []struct {
			Code, Message string
		} `json:"errors"`
	}
	if json.Unmarshal(b, &e) == nil {
		if s, ok := e.Error.(string); ok && s != "" {
			return trim(s, 300)
		}
		if len(e.Errors) > 0 {
			return trim(strings.TrimSpace(e.Errors[0].Code+" "+e.Errors[0].Message), 300)
		}
	}
	return ""
}

// retryable marks a failure that a later attempt may not meet.
type retryable struct{ error }

func (r retryable) Unwrap() error { return r.error }

// isRetryable tells a transfer that broke on the way (a cut or reset
// connection, a timeout, a marked server error) from one that will fail
// the same way again (a refused connection, a bad certificate, a 404).
func isRetryable(err error) bool {
	var r retryable
	if errors.As(err, &r) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
