package pull

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/edgellm/edgellm/store"
)

// registry pulls n from an Ollama-style registry (the Docker registry v2
// protocol): the manifest, then every blob it names (the model, and the
// template, params, system, license and config blobs that go with it).
func (p *puller) registry(ctx context.Context, n store.Name) (*store.Manifest, error) {
	scheme := "https"
	// Ollama's own registry is always https; others are plain http only
	// when the user says so.
	if p.opt.Insecure && !strings.EqualFold(n.Host, store.DefaultHost) {
		scheme = "http"
	}
	base := &url.URL{Scheme: scheme, Host: n.Host, Path: "/v2/" + n.Namespace + "/" + n.Model}

	p.progress(Progress{Status: "pulling manifest"})
	hdr := http.Header{"Accept": {store.MediaManifest}}
	resp, err := p.registryGet(ctx, base.JoinPath("manifests", n.Tag).String(), hdr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(resp, "manifest")
	}
	b, err := readCapped(resp.Body, maxManifest)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	m, err := parseManifest(b)
	if err != nil {
		return nil, err
	}

	layers := m.Layers
	if m.Config.Digest != "" {
		layers = append(layers[:len(layers):len(layers)], m.Config)
	}
	done := map[string]bool{}
	for _, l := range layers {
		if done[l.Digest] {
			continue
		}
		done[l.Digest] = true
		u := base.JoinPath("blobs", l.Digest).String()
		err := p.fetchBlob(ctx, l, ranged(p.registryGet, u))
		if err != nil {
			return nil, err
		}
	}
	// Each blob's sha256 was checked as its last byte arrived.
	p.progress(Progress{Status: "verifying sha256 digest"})
	return m, nil
}

// registryGet sends a GET to the registry and, when it answers 401 with a
// Bearer challenge, fetches an anonymous token and asks once more. A
// second 401 is returned to the caller (statusError makes it ErrUnauthorized).
func (p *puller) registryGet(ctx context.Context, u string, hdr http.Header) (*http.Response, error) {
	for try := 0; ; try++ {
		resp, err := p.get(ctx, u, hdr)
		if err != nil || resp.StatusCode != http.StatusUnauthorized || try > 0 {
			return resp, err
		}
		ch := resp.Header.Get("WWW-Authenticate")
		resp.Body.Close()
		if err := p.token(ctx, resp.Request.URL, ch); err != nil {
			return nil, fmt.Errorf("%w: %s asked for credentials: %w", ErrUnauthorized, resp.Request.URL.Host, err)
		}
	}
}

// token exchanges a registry's Bearer challenge for an anonymous token, as
// the Docker token protocol does for public images: GET realm?service=&scope=,
// answered with {"token": ...} (or {"access_token": ...}).
func (p *puller) token(ctx context.Context, reqURL *url.URL, header string) error {
	c, err := parseChallenge(header)
	if err != nil {
		return err
	}
	realm, err := url.Parse(c.realm)
	if err != nil || realm.Host == "" {
		return fmt.Errorf("bad token realm %q", trim(c.realm, 100))
	}
	// As Ollama: the realm must be on the host that asked, so a registry
	// cannot point the client at other servers, and https unless the
	// registry itself is plain http.
	if !strings.EqualFold(realm.Host, reqURL.Host) {
		return fmt.Errorf("token realm host %q is not the registry's %q", realm.Host, reqURL.Host)
	}
	if realm.Scheme != "https" && !(realm.Scheme == "http" && reqURL.Scheme == "http") {
		return fmt.Errorf("token realm %q: scheme %q not allowed", trim(c.realm, 100), realm.Scheme)
	}
	q := realm.Query()
	if c.service != "" {
		q.Set("service", c.service)
	}
	for _, s := range strings.Fields(c.scope) {
		q.Add("scope", s)
	}
	realm.RawQuery = q.Encode()
	resp, err := p.get(ctx, realm.String(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusError(resp, "token")
	}
	b, err := readCapped(resp.Body, 64<<10)
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	var t struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(b, &t); err != nil {
		return fmt.Errorf("token: %w", err)
	}
	tok := t.Token
	if tok == "" {
		tok = t.AccessToken
	}
	if tok == "" || strings.ContainsAny(tok, "\r\n") {
		return errors.New("token: the realm gave no usable token")
	}
	p.auth.set(reqURL.Host, tok)
	return nil
}
