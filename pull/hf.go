package pull

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/edgellm/edgellm/internal/atomicfile"
	"github.com/edgellm/edgellm/store"
)

// DefaultQuants is the order in which a Hugging Face pull without a :QUANT
// picks a file: ternary types first (what EdgeLLM runs fastest), then the
// common llama.cpp types from small to large.
var DefaultQuants = []string{
	"I2_S", "TQ2_0", "TQ1_0", "Q2_0",
	"Q4_K_M", "Q4_K_S", "Q4_0", "Q5_K_M", "Q6_K", "Q8_0",
	"F16", "BF16", "F32",
}

const (
	maxPages   = 200
	maxEntries = 100000
)

// hfFile is a GGUF file of a repository, as the tree listing gives it.
type hfFile struct {
	Path   string
	Size   int64
	SHA256 string // the LFS oid: lower-case hex
}

// hf pulls one GGUF file of a Hugging Face repository. The manifest written
// has one model layer (digest: the file's LFS sha256) and a small config
// blob saying where the file came from.
func (p *puller) hf(ctx context.Context, n store.Name) (*store.Manifest, error) {
	ep := p.opt.HFEndpoint
	if ep == "" {
		ep = os.Getenv("HF_ENDPOINT")
	}
	if ep == "" {
		ep = defaultHFEndpoint
	}
	endpoint, err := url.Parse(strings.TrimRight(ep, "/"))
	if err != nil || (endpoint.Scheme != "https" && endpoint.Scheme != "http") || endpoint.Host == "" {
		return nil, fmt.Errorf("bad Hugging Face endpoint %q (want http(s)://host)", ep)
	}
	tok := p.opt.HFToken
	if tok == "" {
		tok = os.Getenv("HF_TOKEN")
	}
	if tok != "" {
		p.auth.set(endpoint.Host, tok)
	}

	p.progress(Progress{Status: "pulling manifest"})
	repo := n.Namespace + "/" + n.Model
	files, err := p.hfList(ctx, endpoint, n.Namespace, n.Model)
	if err != nil {
		return nil, err
	}
	quant := n.Tag
	if quant == store.DefaultTag {
		quant = ""
	}
	f, err := pickGGUF(files, quant)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", repo, err)
	}

	model := store.Layer{MediaType: store.MediaModel, Digest: "sha256:" + f.SHA256, Size: f.Size}
	// JoinPath takes escaped segments: a file name's '%' or '?' must stay
	// part of the name.
	segs := []string{n.Namespace, n.Model, "resolve", "main"}
	for _, s := range strings.Split(f.Path, "/") {
		segs = append(segs, url.PathEscape(s))
	}
	src := endpoint.JoinPath(segs...).String()
	err = p.fetchBlob(ctx, model, ranged(p.get, src))
	if err != nil {
		return nil, err
	}
	p.progress(Progress{Status: "verifying sha256 digest"})

	cfg, err := json.Marshal(struct {
		Format   string `json:"model_format"`
		FileType string `json:"file_type,omitempty"`
		Repo     string `json:"hf_repo"`
		File     string `json:"hf_file"`
	}{"gguf", quantOf(f.Path), repo, f.Path})
	if err != nil {
		return nil, err
	}
	config, err := p.writeBlob(store.MediaConfig, cfg)
	if err != nil {
		return nil, err
	}
	return &store.Manifest{SchemaVersion: 2, MediaType: store.MediaManifest, Config: config, Layers: []store.Layer{model}}, nil
}

// writeBlob stores a blob made here (not downloaded) under its digest.
func (p *puller) writeBlob(mediaType string, b []byte) (store.Layer, error) {
	l := store.Layer{MediaType: mediaType, Digest: digestOf(b), Size: int64(len(b))}
	path, err := store.BlobPath(p.dir, l.Digest)
	if err != nil {
		return l, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return l, err
	}
	return l, atomicfile.WriteFile(path, b)
}

// hfList lists the repository's files at main, following the API's
// pagination (Link: <...>; rel="next") on the endpoint's host only.
func (p *puller) hfList(ctx context.Context, endpoint *url.URL, owner, repo string) ([]hfFile, error) {
	u := endpoint.JoinPath("api", "models", owner, repo, "tree", "main")
	u.RawQuery = "recursive=true"
	next := u.String()
	var files []hfFile
	entries := 0
	for page := 0; next != ""; page++ {
		if page == maxPages {
			return nil, fmt.Errorf("file listing: more than %d pages", maxPages)
		}
		resp, err := p.get(ctx, next, http.Header{"Accept": {"application/json"}})
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			err := statusError(resp, "file listing")
			resp.Body.Close()
			if errors.Is(err, ErrUnauthorized) {
				// The hub answers 401 for a repository that does not exist
				// as well as for a gated or private one.
				err = fmt.Errorf("%w (no such repository, or it is gated or private: set HF_TOKEN)", err)
			}
			return nil, err
		}
		b, err := readCapped(resp.Body, maxManifest)
		link := resp.Header.Values("Link")
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("file listing: %w", err)
		}
		fs, n, err := parseTree(b)
		if err != nil {
			return nil, err
		}
		files = append(files, fs...)
		if entries += n; entries > maxEntries {
			return nil, fmt.Errorf("file listing: more than %d entries", maxEntries)
		}
		next = ""
		if l, ok := linkNext(link); ok {
			nu, err := resp.Request.URL.Parse(l)
			if err != nil || nu.Scheme != endpoint.Scheme || !strings.EqualFold(nu.Host, endpoint.Host) {
				return nil, fmt.Errorf("file listing: next page %q is not on %s", trim(l, 100), endpoint.Host)
			}
			next = nu.String()
		}
	}
	return files, nil
}

// parseTree reads one page of /api/models/OWNER/REPO/tree/REV and returns
// its GGUF files (with their LFS sha256) and how many entries it had.
func parseTree(b []byte) ([]hfFile, int, error) {
	var entries []struct {
		Type string `json:"type"`
		Path string `json:"path"`
		Size int64  `json:"size"`
		LFS  *struct {
			Oid  string `json:"oid"`
			Size int64  `json:"size"`
		} `json:"lfs"`
	}
	if err := json.Unmarshal(b, &entries); err != nil {
		return nil, 0, fmt.Errorf("file listing: %w", err)
	}
	var out []hfFile
	for _, e := range entries {
		if e.Type == "directory" || !strings.HasSuffix(strings.ToLower(e.Path), ".gguf") {
			continue
		}
		if !validRepoPath(e.Path) {
			return nil, 0, fmt.Errorf("file listing: bad path %q", trim(e.Path, 100))
		}
		if e.LFS == nil {
			return nil, 0, fmt.Errorf("file listing: %s is not stored with LFS, so the hub gives no sha256 to check it against", e.Path)
		}
		if len(e.LFS.Oid) != 64 || strings.Trim(e.LFS.Oid, "0123456789abcdef") != "" {
			return nil, 0, fmt.Errorf("file listing: %s: bad LFS oid %q", e.Path, trim(e.LFS.Oid, 80))
		}
		if e.LFS.Size <= 0 || e.LFS.Size > maxBlobSize || e.Size != e.LFS.Size {
			return nil, 0, fmt.Errorf("file listing: %s: size %d, LFS size %d", e.Path, e.Size, e.LFS.Size)
		}
		out = append(out, hfFile{Path: e.Path, Size: e.LFS.Size, SHA256: e.LFS.Oid})
	}
	return out, len(entries), nil
}

// validRepoPath allows a relative slash-separated path with no empty, "."
// or ".." part and no control characters or backslashes.
func validRepoPath(p string) bool {
	if p == "" || len(p) > 1024 || strings.ContainsAny(p, "\\") {
		return false
	}
	for _, c := range p {
		if c < 0x20 || c == 0x7f {
			return false
		}
	}
	for _, part := range strings.Split(p, "/") {
		if part == "" || part == "." || part == ".." {
			return false
		}
	}
	return true
}

var splitRE = regexp.MustCompile(`(?i)-(\d{5})-of-(\d{5})\.gguf$`)

// ErrSplit reports a model stored as several GGUF files.
var ErrSplit = errors.New("split GGUF files (-00001-of-0000N.gguf) are not supported yet")

// pickGGUF chooses the file of a :QUANT tag (quant "" = the first type of
// DefaultQuants the repository has). A tag matches a file whose name holds
// it case-insensitively between non-alphanumeric characters; a match that
// ends the quant name ("Q4_K_M" in "x-Q4_K_M.gguf") beats one followed by
// more of a longer name ("Q4_K" in "x-Q4_K_M.gguf"). mmproj (vision
// projector) files are never chosen.
func pickGGUF(files []hfFile, quant string) (hfFile, error) {
	var cands []hfFile
	for _, f := range files {
		if !strings.Contains(strings.ToLower(path.Base(f.Path)), "mmproj") {
			cands = append(cands, f)
		}
	}
	if len(cands) == 0 {
		return hfFile{}, fmt.Errorf("%w: the repository has no GGUF model file", ErrNotFound)
	}
	if quant != "" {
		var exact, prefix []hfFile
		for _, f := range cands {
			switch matchQuant(f.Path, quant) {
			case 2:
				exact = append(exact, f)
			case 1:
				prefix = append(prefix, f)
			}
		}
		if len(exact) == 0 {
			exact = prefix
		}
		if len(exact) == 0 {
			return hfFile{}, fmt.Errorf("%w: no GGUF file matches %q; files: %s", ErrNotFound, quant, names(cands))
		}
		return one(exact, quant)
	}
	sawSplit := false
	for _, q := range DefaultQuants {
		var m []hfFile
		for _, f := range cands {
			if matchQuant(f.Path, q) == 2 {
				m = append(m, f)
			}
		}
		whole := slices.DeleteFunc(slices.Clone(m), func(f hfFile) bool { return splitRE.MatchString(f.Path) })
		if len(m) > len(whole) {
			sawSplit = true
		}
		if len(whole) > 0 {
			return one(whole, q)
		}
	}
	if len(cands) == 1 {
		return one(cands, "")
	}
	if sawSplit {
		return hfFile{}, fmt.Errorf("%w; other files: %s", ErrSplit, names(cands))
	}
	return hfFile{}, fmt.Errorf("no file of a default type (%s); choose one with :QUANT from: %s", strings.Join(DefaultQuants, ", "), names(cands))
}

// one returns the single file of a match, or says why there is none.
func one(m []hfFile, quant string) (hfFile, error) {
	if len(m) > 1 {
		// The parts of one split model are one candidate, not several.
		sets := map[string]bool{}
		for _, f := range m {
			sets[splitRE.ReplaceAllString(f.Path, "")] = true
		}
		if len(sets) > 1 || !splitRE.MatchString(m[0].Path) {
			return hfFile{}, fmt.Errorf("%q matches %d files, name one more precisely: %s", quant, len(m), names(m))
		}
	}
	if splitRE.MatchString(m[0].Path) {
		return hfFile{}, fmt.Errorf("%s: %w", m[0].Path, ErrSplit)
	}
	return m[0], nil
}

func names(fs []hfFile) string {
	var s []string
	for i, f := range fs {
		if i == 20 {
			s = append(s, fmt.Sprintf("and %d more", len(fs)-20))
			break
		}
		s = append(s, f.Path)
	}
	return strings.Join(s, ", ")
}

// matchQuant says how the file name at p holds quant: 0 not at all, 1 as
// the start of a longer quant name (followed by '_'), 2 as a whole name.
func matchQuant(p, quant string) int {
	name := strings.ToLower(strings.TrimSuffix(path.Base(p), path.Ext(p)))
	q := strings.ToLower(quant)
	if q == "" {
		return 0
	}
	best := 0
	for i := 0; ; {
		j := strings.Index(name[i:], q)
		if j < 0 {
			return best
		}
		at := i + j
		end := at + len(q)
		if at == 0 || !isAlnum(name[at-1]) {
			switch {
			case end == len(name) || !isAlnum(name[end]) && name[end] != '_':
				return 2
			case name[end] == '_':
				best = 1
			}
		}
		i = at + 1
	}
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// quantOf names the type of a GGUF file from its name, if it is one of
// DefaultQuants.
func quantOf(p string) string {
	for _, q := range DefaultQuants {
		if matchQuant(p, q) == 2 {
			return q
		}
	}
	return ""
}
