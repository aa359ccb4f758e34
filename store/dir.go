package store

import (
	"fmt"
	"os"
	"path/filepath"
)

// Dir is the store folder: $EDGELLM_MODELS, else ~/.edgellm/models. The CLI
// and `edgellm serve` both use it, so a model pulled or copied by one is
// seen by the other.
func Dir() (string, error) {
	if d := os.Getenv("EDGELLM_MODELS"); d != "" {
		return d, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("store: no models folder: set EDGELLM_MODELS (%w)", err)
	}
	return filepath.Join(home, ".edgellm", "models"), nil
}
