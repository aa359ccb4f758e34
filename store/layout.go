package store

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Media types of a manifest's layers, as Ollama's registry names them.
const (
	MediaModel    = "application/vnd.ollama.image.model"
	MediaTemplate = "application/vnd.ollama.image.template"
	MediaParams   = "application/vnd.ollama.image.params"
	MediaSystem   = "application/vnd.ollama.image.system"
	MediaLicense  = "application/vnd.ollama.image.license"
	MediaConfig   = "application/vnd.docker.container.image.v1+json"
	MediaManifest = "application/vnd.docker.distribution.manifest.v2+json"
)

// Manifest is an Ollama (Docker v2) manifest: a pulled model's layers. The
// store keeps it as the registry sent it; a Hugging Face pull writes one of
// its own with a single model layer.
type Manifest struct {
	SchemaVersion int     `json:"schemaVersion"`
	MediaType     string  `json:"mediaType"`
	Config        Layer   `json:"config"`
	Layers        []Layer `json:"layers"`
}

// Layer is one blob of a manifest.
type Layer struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"` // "sha256:HEX"
	Size      int64  `json:"size"`
}

// BlobPath is where the blob of a digest ("sha256:" and 64 lower-case hex
// digits) lives below the store folder dir: blobs/sha256-HEX.
func BlobPath(dir, digest string) (string, error) {
	hex, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(hex) != 64 || strings.Trim(hex, "0123456789abcdef") != "" {
		return "", fmt.Errorf("store: bad digest %q (want sha256: and 64 lower-case hex digits)", digest)
	}
	return filepath.Join(dir, "blobs", "sha256-"+hex), nil
}

// ManifestPath is where the manifest of n lives below the store folder dir.
func ManifestPath(dir string, n Name) string {
	return filepath.Join(dir, "manifests", n.Path())
}
