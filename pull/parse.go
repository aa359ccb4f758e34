package pull

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/edgellm/edgellm/store"
)

// Parsers of what a server sends: manifests, Link and WWW-Authenticate
// headers, Content-Range. Each is fuzzed (fuzz_test.go).

const (
	maxManifest = 4 << 20 // bytes of a manifest or a listing page
	maxLayers   = 256
	maxBlobSize = 1 << 40 // 1 TiB: more is a hostile or broken manifest
)

// parseManifest reads a registry's manifest and checks what the store will
// rely on: every digest names a blob path inside the store, sizes are sane,
// and there is exactly one GGUF model layer.
func parseManifest(b []byte) (*store.Manifest, error) {
	var m store.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if m.SchemaVersion != 2 {
		return nil, fmt.Errorf("manifest: schema version %d (want 2)", m.SchemaVersion)
	}
	if len(m.Layers) == 0 || len(m.Layers) > maxLayers {
		return nil, fmt.Errorf("manifest: %d layers (want 1 to %d)", len(m.Layers), maxLayers)
	}
	check := func(what string, l store.Layer) error {
		if _, err := store.BlobPath("", l.Digest); err != nil {
			return fmt.Errorf("manifest: %s: %w", what, err)
		}
		if l.Size < 0 || l.Size > maxBlobSize {
			return fmt.Errorf("manifest: %s %s: size %d out of range", what, l.Digest, l.Size)
		}
		return nil
	}
	if m.Config.Digest != "" {
		if err := check("config", m.Config); err != nil {
			return nil, err
		}
	}
	models := 0
	for i, l := range m.Layers {
		if err := check(fmt.Sprintf("layer %d", i), l); err != nil {
			return nil, err
		}
		switch l.MediaType {
		case store.MediaModel:
			if l.Size == 0 {
				return nil, fmt.Errorf("manifest: model layer %s is empty", l.Digest)
			}
			models++
		case "application/vnd.ollama.image.tensor":
			// Ollama's newer safetensors-style models: many tensor blobs, no GGUF.
			return nil, errors.New("manifest: the model is stored as tensor layers, not one GGUF file (not supported)")
		}
	}
	if models != 1 {
		return nil, fmt.Errorf("manifest: %d GGUF model layers (want exactly 1)", models)
	}
	return &m, nil
}

// linkNext returns the target of rel="next" among HTTP Link header values
// (RFC 8288: `<url>; rel="next", <url2>; rel="prev"`), as the Hugging Face
// API paginates.
func linkNext(values []string) (string, bool) {
	for _, v := range values {
		s := v
		for {
			s = strings.TrimLeft(s, " \t,")
			if s == "" || s[0] != '<' {
				break
			}
			end := strings.IndexByte(s, '>')
			if end < 0 {
				break
			}
			target := s[1:end]
			params, rest := splitParams(s[end+1:])
			for _, p := range params {
				if strings.EqualFold(p.key, "rel") {
					for _, r := range strings.Fields(p.value) {
						if strings.EqualFold(r, "next") {
							return target, true
						}
					}
				}
			}
			s = rest
		}
	}
	return "", false
}

type param struct{ key, value string }

// splitParams reads `; k=v; k2="v 2"` up to the next top-level comma and
// returns the parameters and what follows the comma.
func splitParams(s string) ([]param, string) {
	var out []param
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return out, ""
		}
		switch s[0] {
		case ',':
			return out, s[1:]
		case ';':
			s = s[1:]
			continue
		}
		var p param
		p.key, p.value, s = authParam(s)
		if p.key == "" {
			// Not a parameter: skip to the next separator.
			i := strings.IndexAny(s, ";,")
			if i < 0 {
				return out, ""
			}
			s = s[i:]
			continue
		}
		out = append(out, p)
	}
}

// authParam reads one `key=value` or `key="quoted \" value"` from the start
// of s and returns the rest. key is "" when s does not start with one.
func authParam(s string) (key, value, rest string) {
	i := 0
	for i < len(s) && isToken(s[i]) {
		i++
	}
	if i == 0 {
		return "", "", s
	}
	key = s[:i]
	j := i
	for j < len(s) && (s[j] == ' ' || s[j] == '\t') {
		j++
	}
	if j >= len(s) || s[j] != '=' {
		return key, "", s[i:]
	}
	j++
	for j < len(s) && (s[j] == ' ' || s[j] == '\t') {
		j++
	}
	if j < len(s) && s[j] == '"' {
		var b strings.Builder
		for k := j + 1; k < len(s); k++ {
			switch s[k] {
			case '\\':
				if k+1 < len(s) {
					k++
					b.WriteByte(s[k])
				}
			case '"':
				return key, b.String(), s[k+1:]
			default:
				b.WriteByte(s[k])
			}
		}
		return key, b.String(), "" // unterminated: take the rest
	}
	k := j
	for k < len(s) && s[k] != ',' && s[k] != ';' && s[k] != ' ' && s[k] != '\t' {
		k++
	}
	return key, s[j:k], s[k:]
}

func isToken(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// challenge is a registry's `WWW-Authenticate: Bearer realm=...,service=...,scope=...`.
type challenge struct {
	realm, service, scope string
}

// parseChallenge reads a Bearer challenge; any other scheme (Basic, ...) is
// an error, since anonymous pulls only know the token exchange.
func parseChallenge(h string) (challenge, error) {
	h = strings.TrimSpace(h)
	scheme, rest, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return challenge{}, fmt.Errorf("authentication scheme %q (only Bearer tokens are supported)", trim(scheme, 40))
	}
	var c challenge
	for rest != "" {
		rest = strings.TrimLeft(rest, " \t,")
		k, v, r := authParam(rest)
		if k == "" {
			break
		}
		rest = r
		switch strings.ToLower(k) {
		case "realm":
			c.realm = v
		case "service":
			c.service = v
		case "scope":
			c.scope = v
		}
	}
	if c.realm == "" {
		return challenge{}, errors.New("bearer challenge without a realm")
	}
	return c, nil
}

// contentRange reads `bytes START-END/TOTAL` (TOTAL may be `*`, then -1).
func contentRange(h string) (start, end, total int64, err error) {
	bad := func() (int64, int64, int64, error) {
		return 0, 0, 0, fmt.Errorf("bad Content-Range %q", trim(h, 80))
	}
	s, ok := strings.CutPrefix(strings.TrimSpace(h), "bytes ")
	if !ok {
		return bad()
	}
	rng, tot, ok := strings.Cut(s, "/")
	if !ok {
		return bad()
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return bad()
	}
	if start, err = strconv.ParseInt(a, 10, 64); err != nil || start < 0 {
		return bad()
	}
	if end, err = strconv.ParseInt(b, 10, 64); err != nil || end < start {
		return bad()
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total <= end {
			return bad()
		}
	}
	return start, end, total, nil
}

// trim shortens untrusted text quoted in an error.
func trim(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
