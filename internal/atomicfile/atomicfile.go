// Package atomicfile writes a file so that a reader sees either the old file
// or the whole new one, never half of it: the bytes go to a hidden temporary
// file beside the target (same folder, so the rename cannot cross file
// systems), which is synced and renamed over the target. It knows nothing of
// what the file holds.
package atomicfile

import (
	"io"
	"os"
	"path/filepath"
)

// Perm is the mode of every file written: the one os.Create gives under the
// usual umask, so a written model or manifest is as readable as a blob
// downloaded beside it (os.CreateTemp alone would leave 0600).
const Perm = 0o644

// Write writes path: write fills a temporary file named "."+base+".tmp*" in
// path's folder (a dot name, which store listings skip), the file is synced
// and closed, then check, when not nil, is given the temporary file's name
// (to verify that it loads, say) before it is renamed to path. On any error
// the temporary file is removed and path is left as it was. The folder must
// exist. Errors are returned as they came, for the caller to wrap.
func Write(path string, write func(w io.Writer) error, check func(tmp string) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close() // a second Close is harmless
			os.Remove(tmp)
		}
	}()
	if err := write(f); err != nil {
		return err
	}
	if err := f.Chmod(Perm); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if check != nil {
		if err := check(tmp); err != nil {
			return err
		}
	}
	return os.Rename(tmp, path)
}

// WriteFile writes b to path as Write does.
func WriteFile(path string, b []byte) error {
	return Write(path, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	}, nil)
}
