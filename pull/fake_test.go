package pull

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Fakes of the two protocols, on httptest servers: a blob host ("CDN")
// that both redirect to, a Hugging Face hub and an Ollama-style registry.

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// cdn serves blobs by digest with Range support (http.ServeContent),
// recording each request's Range and Authorization headers.
type cdn struct {
	srv *httptest.Server

	mu       sync.Mutex
	blobs    map[string][]byte // "sha256:HEX" -> content
	ranges   []string          // Range header of each request, "" when none
	auths    []string          // Authorization header of each request
	cutAfter int               // >0: the next request's body stops after this many bytes, then the connection is cut
	hang     chan struct{}     // non-nil: the next request sends half the body, then waits for the client to go
	noRange  bool              // answer every request with the whole blob (200)
	extra    int               // bytes of junk appended to every blob
}

func newCDN(t *testing.T) *cdn {
	c := &cdn{blobs: map[string][]byte{}}
	c.srv = httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *cdn) add(b []byte) string {
	d := digestOf(b)
	c.mu.Lock()
	c.blobs[d] = b
	c.mu.Unlock()
	return d
}

func (c *cdn) url(digest string) string { return c.srv.URL + "/blob/" + digest }

func (c *cdn) requests() (ranges, auths []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.ranges...), append([]string(nil), c.auths...)
}

func (c *cdn) serve(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	b, ok := c.blobs[strings.TrimPrefix(r.URL.Path, "/blob/")]
	c.ranges = append(c.ranges, r.Header.Get("Range"))
	c.auths = append(c.auths, r.Header.Get("Authorization"))
	cut, hang, noRange := c.cutAfter, c.hang, c.noRange
	c.cutAfter, c.hang = 0, nil
	b = append(b[:len(b):len(b)], make([]byte, c.extra)...)
	c.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	switch {
	case cut > 0 || hang != nil:
		from := 0
		if rg := r.Header.Get("Range"); rg != "" {
			from, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"))
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, len(b)-1, len(b)))
			w.Header().Set("Content-Length", strconv.Itoa(len(b)-from))
			w.WriteHeader(http.StatusPartialContent)
		} else {
			w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		}
		n := cut
		if hang != nil {
			n = (len(b) - from) / 2
		}
		w.Write(b[from : from+n])
		w.(http.Flusher).Flush()
		if hang != nil {
			select {
			case <-r.Context().Done():
			case <-hang:
			}
		}
		panic(http.ErrAbortHandler) // cut the connection mid-body
	case noRange:
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Write(b)
	default:
		http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(b))
	}
}

// hub is a fake Hugging Face hub: a paginated tree listing and resolve
// links that redirect to the CDN.
type hub struct {
	srv     *httptest.Server
	cdn     *cdn
	files   []treeEntry // the listing of every repository
	perPage int
	repo    string // "owner/repo" that exists; others 404
	private bool   // answer 401 without "Bearer secret"

	mu    sync.Mutex
	auths []string // Authorization header of each request
	pages int
}

type treeEntry struct {
	Type string `json:"type"`
	Path string `json:"path"`
	Size int64  `json:"size"`
	LFS  *struct {
		Oid  string `json:"oid"`
		Size int64  `json:"size"`
	} `json:"lfs,omitempty"`
}

func lfsEntry(path string, content []byte) treeEntry {
	e := treeEntry{Type: "file", Path: path, Size: int64(len(content))}
	e.LFS = &struct {
		Oid  string `json:"oid"`
		Size int64  `json:"size"`
	}{digestOf(content)[7:], int64(len(content))}
	return e
}

func newHub(t *testing.T, c *cdn, repo string) *hub {
	h := &hub{cdn: c, repo: repo, perPage: 2}
	// Two muxes: the hub's two path shapes overlap in ServeMux's eyes.
	api, files := http.NewServeMux(), http.NewServeMux()
	api.HandleFunc("GET /api/models/{owner}/{repo}/tree/main", h.tree)
	files.HandleFunc("GET /{owner}/{repo}/resolve/main/{path...}", h.resolve)
	h.srv = httptest.NewServer(h.record(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/") {
			api.ServeHTTP(w, r)
		} else {
			files.ServeHTTP(w, r)
		}
	})))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hub) record(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.auths = append(h.auths, r.Header.Get("Authorization"))
		h.mu.Unlock()
		if h.private && r.Header.Get("Authorization") != "Bearer secret" {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"Invalid username or password."}`))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (h *hub) tree(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("owner")+"/"+r.PathValue("repo") != h.repo {
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"error":"Repository not found"}`))
		return
	}
	h.mu.Lock()
	h.pages++
	h.mu.Unlock()
	from, _ := strconv.Atoi(r.URL.Query().Get("cursor"))
	to := min(from+h.perPage, len(h.files))
	if to < len(h.files) {
		next := *r.URL
		q := next.Query()
		q.Set("cursor", strconv.Itoa(to))
		next.RawQuery = q.Encode()
		w.Header().Set("Link", fmt.Sprintf(`<%s%s>; rel="next"`, h.srv.URL, next.RequestURI()))
	}
	json.NewEncoder(w).Encode(h.files[from:to])
}

func (h *hub) resolve(w http.ResponseWriter, r *http.Request) {
	for _, f := range h.files {
		if f.Path == r.PathValue("path") && f.LFS != nil {
			http.Redirect(w, r, h.cdn.url("sha256:"+f.LFS.Oid), http.StatusFound)
			return
		}
	}
	http.NotFound(w, r)
}

func (h *hub) seenAuth() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.auths...)
}

// registry is a fake Ollama-style registry: manifests by tag, blobs that
// redirect to the CDN, and optionally the anonymous Bearer token dance.
type registry struct {
	srv       *httptest.Server
	cdn       *cdn
	manifests map[string][]byte // "ns/model:tag" -> manifest body
	auth      bool              // require "Bearer tok-1" on /v2/ requests
	token     string            // what /token hands out
	realm     string            // the challenge's realm ("" = this server's /token)

	mu       sync.Mutex
	auths    []string
	tokenReq []string // query of each /token request
}

func newRegistry(t *testing.T, c *cdn, tls bool) *registry {
	g := &registry{cdn: c, manifests: map[string][]byte{}, token: "tok-1"}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v2/{ns}/{model}/manifests/{tag}", g.manifest)
	mux.HandleFunc("GET /v2/{ns}/{model}/blobs/{digest}", g.blob)
	mux.HandleFunc("GET /token", func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		g.tokenReq = append(g.tokenReq, r.URL.RawQuery)
		g.mu.Unlock()
		fmt.Fprintf(w, `{"token":%q}`, g.token)
	})
	if tls {
		g.srv = httptest.NewTLSServer(mux)
	} else {
		g.srv = httptest.NewServer(mux)
	}
	t.Cleanup(g.srv.Close)
	return g
}

func (g *registry) host() string {
	return strings.TrimPrefix(strings.TrimPrefix(g.srv.URL, "http://"), "https://")
}

func (g *registry) check(w http.ResponseWriter, r *http.Request) bool {
	g.mu.Lock()
	g.auths = append(g.auths, r.Header.Get("Authorization"))
	g.mu.Unlock()
	if g.auth && r.Header.Get("Authorization") != "Bearer tok-1" {
		realm := g.realm
		if realm == "" {
			realm = g.srv.URL + "/token"
		}
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service="fake",scope="repository:%s/%s:pull"`, realm, r.PathValue("ns"), r.PathValue("model")))
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`))
		return false
	}
	return true
}

func (g *registry) manifest(w http.ResponseWriter, r *http.Request) {
	if !g.check(w, r) {
		return
	}
	b, ok := g.manifests[r.PathValue("ns")+"/"+r.PathValue("model")+":"+r.PathValue("tag")]
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`))
		return
	}
	w.Header().Set("Content-Type", r.Header.Get("Accept"))
	w.Write(b)
}

func (g *registry) blob(w http.ResponseWriter, r *http.Request) {
	if !g.check(w, r) {
		return
	}
	http.Redirect(w, r, g.cdn.url(r.PathValue("digest")), http.StatusTemporaryRedirect)
}

func (g *registry) seenAuth() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.auths...)
}
