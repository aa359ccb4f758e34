// Package version holds EdgeLLM's one version string, which the CLI
// (`edgellm version`), the HTTP server (/api/version) and library users
// read. A release build sets it in one place:
//
//	go build -ldflags "-X github.com/edgellm/edgellm/version.Version=1.2.3" ./cmd/edgellm
//
// It imports nothing of the project, so any package may read it.
package version

// Version is the release this build reports. It is a variable, not a
// constant, so that the linker's -X flag can set it.
var Version = "0.1.0-dev"
