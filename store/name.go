// Package store is the local model store: GGUF files in one folder
// ($EDGELLM_MODELS, else ~/.edgellm/models) named by their file names, and
// pulled models named as the user typed them, kept in Ollama's layout
// (manifests/HOST/NAMESPACE/MODEL/TAG naming content-addressed blobs/sha256-HEX).
package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// Name is a pulled model's name in Ollama's four parts. Case is kept as the
// user typed it.
type Name struct {
	Host      string // "registry.ollama.ai", "hf.co", "localhost:5000", ...
	Namespace string // "library" for Ollama's official models; the owner on hf.co
	Model     string
	Tag       string // "latest" when none was given
}

// Defaults of Ollama's name syntax: "NAME[:TAG]" is
// registry.ollama.ai/library/NAME:TAG.
const (
	DefaultHost      = "registry.ollama.ai"
	DefaultNamespace = "library"
	DefaultTag       = "latest"
)

// ErrName reports a string that is not a model name.
var ErrName = errors.New("invalid model name")

// ParseName reads "[HOST/][NAMESPACE/]MODEL[:TAG]" as Ollama does. A first
// part is a host when two more follow it (so "hf.co/owner/repo" is on
// hf.co and "owner/repo" on the default registry).
func ParseName(s string) (Name, error) {
	bad := func(why string) (Name, error) {
		return Name{}, fmt.Errorf("%w %q: %s", ErrName, s, why)
	}
	if s == "" {
		return bad("empty")
	}
	if len(s) > 350 {
		return bad("longer than 350 bytes")
	}
	rest, tag := s, ""
	// The tag follows the last colon after the last slash (a host's port
	// comes before a slash).
	if i := strings.LastIndexByte(s, ':'); i > strings.LastIndexByte(s, '/') {
		rest, tag = s[:i], s[i+1:]
		if tag == "" {
			return bad("empty tag")
		}
	}
	parts := strings.Split(rest, "/")
	n := Name{Host: DefaultHost, Namespace: DefaultNamespace, Tag: DefaultTag}
	switch len(parts) {
	case 1:
		n.Model = parts[0]
	case 2:
		n.Namespace, n.Model = parts[0], parts[1]
	case 3:
		n.Host, n.Namespace, n.Model = parts[0], parts[1], parts[2]
	default:
		return bad("more than three parts before the tag")
	}
	if tag != "" {
		n.Tag = tag
	}
	if err := checkHost(n.Host); err != nil {
		return bad(err.Error())
	}
	for _, p := range []struct{ what, v string }{{"namespace", n.Namespace}, {"model", n.Model}, {"tag", n.Tag}} {
		if err := checkPart(p.v); err != nil {
			return bad(p.what + " " + err.Error())
		}
	}
	return n, nil
}

// checkPart allows what Ollama's names allow: letters, digits, '_', '-' and
// '.', starting with a letter, digit or '_' (so never "." or "..").
func checkPart(p string) error {
	if p == "" {
		return errors.New("is empty")
	}
	if len(p) > 128 {
		return errors.New("is longer than 128 bytes")
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
		if i == 0 && !alnum {
			return fmt.Errorf("%q must start with a letter, digit or '_'", p)
		}
		if !alnum && c != '-' && c != '.' {
			return fmt.Errorf("%q has %q (allowed: letters, digits, '_', '-', '.')", p, c)
		}
	}
	return nil
}

// checkHost allows a host name or address with an optional port.
func checkHost(h string) error {
	host, port := h, ""
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		host, port = h[:i], h[i+1:]
		if port == "" || len(port) > 5 || strings.Trim(port, "0123456789") != "" {
			return fmt.Errorf("host %q has a bad port", h)
		}
	}
	if err := checkPart(host); err != nil {
		return fmt.Errorf("host %w", err)
	}
	return nil
}

// String is the full name, HOST/NAMESPACE/MODEL:TAG.
func (n Name) String() string {
	return n.Host + "/" + n.Namespace + "/" + n.Model + ":" + n.Tag
}

// Display is the name as Ollama prints it: without the default host and
// namespace ("llama3.2:latest", "hf.co/owner/repo:Q2_K").
func (n Name) Display() string {
	s := n.String()
	if n.Host == DefaultHost {
		s = strings.TrimPrefix(s, DefaultHost+"/")
		if n.Namespace == DefaultNamespace {
			s = strings.TrimPrefix(s, DefaultNamespace+"/")
		}
	}
	return s
}

// Path is the manifest's path below the store's manifests folder. A host's
// port separator becomes '%' (':' is not allowed in Windows file names).
func (n Name) Path() string {
	return filepath.Join(strings.ReplaceAll(n.Host, ":", "%"), n.Namespace, n.Model, n.Tag)
}
