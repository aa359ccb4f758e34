package pull

import (
	"path"
	"strings"
	"testing"

	"github.com/edgellm/edgellm/store"
)

// Fuzz targets for everything read from a server.

func FuzzParseManifest(f *testing.F) {
	d := digestOf([]byte("x"))
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"` + store.MediaManifest + `","config":{"digest":"` + d + `","size":1},"layers":[{"mediaType":"` + store.MediaModel + `","digest":"` + d + `","size":1}]}`))
	f.Add([]byte(`{"schemaVersion":2,"layers":[{"mediaType":"` + store.MediaModel + `","digest":"sha256:../x","size":1}]}`))
	f.Add([]byte(`{"schemaVersion":2,"layers":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseManifest(b)
		if err != nil {
			return
		}
		models := 0
		for _, l := range append(m.Layers, m.Config) {
			if l.Digest == "" && l == m.Config {
				continue
			}
			p, err := store.BlobPath("store", l.Digest)
			if err != nil || !strings.HasPrefix(p, "store") || l.Size < 0 {
				t.Fatalf("accepted layer %+v: %q, %v", l, p, err)
			}
			if l.MediaType == store.MediaModel {
				models++
			}
		}
		if models != 1 {
			t.Fatalf("accepted %d model layers", models)
		}
	})
}

func FuzzLinkNext(f *testing.F) {
	f.Add(`<https://huggingface.co/api/models/a/b/tree/main?cursor=xyz>; rel="next"`)
	f.Add(`<a>; rel=prev, <b,c>; title="x;y,z"; rel="last next"`)
	f.Add(`<unterminated; rel=next`)
	f.Fuzz(func(t *testing.T, h string) {
		u, ok := linkNext([]string{h, h})
		if ok && strings.ContainsRune(u, '>') {
			t.Fatalf("linkNext(%q) = %q", h, u)
		}
	})
}

func FuzzParseChallenge(f *testing.F) {
	f.Add(`Bearer realm="https://registry.ollama.ai/v2/token",service="registry.ollama.ai",scope="repository:library/x:pull"`)
	f.Add(`Basic realm="x"`)
	f.Add(`bearer realm=unquoted, scope="a \"b\" c"`)
	f.Fuzz(func(t *testing.T, h string) {
		c, err := parseChallenge(h)
		if err == nil && c.realm == "" {
			t.Fatalf("parseChallenge(%q) accepted no realm", h)
		}
	})
}

func FuzzContentRange(f *testing.F) {
	f.Add("bytes 100-199/200")
	f.Add("bytes 0-0/*")
	f.Add("bytes -1-5/3")
	f.Fuzz(func(t *testing.T, h string) {
		s, e, n, err := contentRange(h)
		if err == nil && (s < 0 || e < s || n != -1 && n <= e) {
			t.Fatalf("contentRange(%q) = %d, %d, %d", h, s, e, n)
		}
	})
}

// FuzzPickGGUF: a listing and a tag from a server and a user; what is
// picked is one of the listed GGUF files, never a projector or a split part.
func FuzzPickGGUF(f *testing.F) {
	oid := strings.Repeat("a", 64)
	f.Add([]byte(`[{"type":"file","path":"m-Q4_K_M.gguf","size":1,"lfs":{"oid":"`+oid+`","size":1}},{"type":"file","path":"mmproj-f16.gguf","size":1,"lfs":{"oid":"`+oid+`","size":1}}]`), "q4_k")
	f.Add([]byte(`[{"type":"file","path":"m-Q8_0-00001-of-00002.gguf","size":1,"lfs":{"oid":"`+oid+`","size":1}}]`), "")
	f.Fuzz(func(t *testing.T, b []byte, quant string) {
		files, _, err := parseTree(b)
		if err != nil {
			return
		}
		got, err := pickGGUF(files, quant)
		if err != nil {
			return
		}
		base := strings.ToLower(path.Base(got.Path))
		if strings.Contains(base, "mmproj") || splitRE.MatchString(got.Path) || !strings.HasSuffix(base, ".gguf") || !validRepoPath(got.Path) {
			t.Fatalf("picked %q", got.Path)
		}
	})
}
