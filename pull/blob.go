package pull

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/edgellm/edgellm/store"
)

// fetchFunc starts the transfer of a blob from byte offset from (from > 0:
// the caller wants `Range: bytes=from-`).
type fetchFunc func(ctx context.Context, from int64) (*http.Response, error)

// ranged is the fetchFunc of the blob at u, fetched with get (which sends
// the headers it is given): a transfer from byte from > 0 asks for the rest.
func ranged(get func(ctx context.Context, u string, h http.Header) (*http.Response, error), u string) fetchFunc {
	return func(ctx context.Context, from int64) (*http.Response, error) {
		h := http.Header{}
		if from > 0 {
			h.Set("Range", "bytes="+strconv.FormatInt(from, 10)+"-")
		}
		return get(ctx, u, h)
	}
}

var errStalled = errors.New("no data received for too long")

// fetchBlob makes dir/blobs/sha256-HEX hold the verified blob l, resuming
// its partial file and retrying a transfer that failed on the way.
func (p *puller) fetchBlob(ctx context.Context, l store.Layer, fetch fetchFunc) error {
	path, err := store.BlobPath(p.dir, l.Digest)
	if err != nil {
		return err
	}
	unlock, err := lockBlob(ctx, path)
	if err != nil {
		return err
	}
	defer unlock()

	status := "pulling " + l.Digest[7:19] // Ollama's status: the digest's first 12 hex digits
	// A blob is renamed into place only once verified, so one of the
	// right size is the one named.
	if fi, err := os.Stat(path); err == nil && fi.Size() == l.Size {
		p.progress(Progress{Status: status, Digest: l.Digest, Total: l.Size, Completed: l.Size})
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	part := path + "-partial"
	wait := p.opt.retryWait
	for attempt := 0; ; attempt++ {
		err = p.transfer(ctx, l, part, status, fetch)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if attempt >= p.opt.Retries || !isRetryable(err) || errors.Is(err, ErrInsecure) {
			return err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
		wait *= 2
	}
	return os.Rename(part, path)
}

// transfer appends the rest of the blob to its partial file and checks the
// whole file's sha256. A mismatch deletes the partial file.
func (p *puller) transfer(ctx context.Context, l store.Layer, part, status string, fetch fetchFunc) error {
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	have := fi.Size()
	h := sha256.New()
	if have > l.Size {
		have = 0
	}
	// The bytes already here enter the hash once, so the file is read
	// only once in all.
	if n, err := io.Copy(h, io.LimitReader(f, have)); err != nil || n != have {
		return fmt.Errorf("reading %s: %d of %d bytes: %v", part, n, have, err)
	}
	restart := func() error {
		have = 0
		h.Reset()
		if err := f.Truncate(0); err != nil {
			return err
		}
		_, err := f.Seek(0, io.SeekStart)
		return err
	}
	if have == 0 {
		if err := restart(); err != nil {
			return err
		}
	}
	p.progress(Progress{Status: status, Digest: l.Digest, Total: l.Size, Completed: have})

	if have < l.Size {
		// A watchdog ends a transfer that stops sending without closing.
		rctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		dog := time.AfterFunc(p.opt.stall, func() { cancel(errStalled) })
		defer dog.Stop()

		resp, err := fetch(rctx, have)
		if err != nil {
			return stallCause(rctx, err)
		}
		defer resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusPartialContent && have > 0:
			start, _, total, err := contentRange(resp.Header.Get("Content-Range"))
			if err != nil {
				return err
			}
			if start != have || total >= 0 && total != l.Size {
				return fmt.Errorf("server sent bytes %d.. of %d, asked for %d.. of %d", start, total, have, l.Size)
			}
		case resp.StatusCode == http.StatusOK:
			// The whole blob: the server ignored the Range (or none was sent).
			if resp.ContentLength >= 0 && resp.ContentLength != l.Size {
				return fmt.Errorf("server sends %d bytes, the manifest says %d", resp.ContentLength, l.Size)
			}
			if have > 0 {
				if err := restart(); err != nil {
					return err
				}
			}
		case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && have > 0:
			// The partial file does not fit what the server holds: start over.
			if err := restart(); err != nil {
				return err
			}
			return retryable{errors.New("server refused the range of the partial file")}
		default:
			return statusError(resp, "blob "+l.Digest)
		}
		if resp.StatusCode == http.StatusPartialContent && resp.ContentLength >= 0 && resp.ContentLength != l.Size-have {
			return fmt.Errorf("server sends %d bytes, %d remain", resp.ContentLength, l.Size-have)
		}
		w := &progressWriter{p: p, pr: Progress{Status: status, Digest: l.Digest, Total: l.Size, Completed: have}}
		r := &petReader{r: io.LimitReader(resp.Body, l.Size-have), dog: dog, d: p.opt.stall}
		n, err := io.Copy(io.MultiWriter(f, h, w), r)
		have += n
		w.flush()
		if err != nil {
			return stallCause(rctx, err)
		}
		if have < l.Size {
			return retryable{fmt.Errorf("connection closed after %d of %d bytes: %w", have, l.Size, io.ErrUnexpectedEOF)}
		}
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != l.Digest {
		f.Close()
		rmErr := os.Remove(part)
		return fmt.Errorf("%w: blob %s has sha256 %s; the partial file was deleted (%v), pull again", ErrDigest, l.Digest, got[7:], rmErr)
	}
	return f.Sync()
}

// stallCause says so when the watchdog, not the server, ended a request.
func stallCause(ctx context.Context, err error) error {
	if errors.Is(context.Cause(ctx), errStalled) {
		return retryable{fmt.Errorf("%w: %w", errStalled, err)}
	}
	return err
}

// petReader restarts the stall watchdog on every read that brings data.
type petReader struct {
	r   io.Reader
	dog *time.Timer
	d   time.Duration
}

func (r *petReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	if n > 0 {
		r.dog.Reset(r.d)
	}
	return n, err
}

// progressWriter reports bytes as they arrive, at most every 100 ms.
type progressWriter struct {
	p    *puller
	pr   Progress
	last time.Time
}

func (w *progressWriter) Write(b []byte) (int, error) {
	w.pr.Completed += int64(len(b))
	if now := time.Now(); now.Sub(w.last) >= 100*time.Millisecond {
		w.last = now
		w.p.progress(w.pr)
	}
	return len(b), nil
}

func (w *progressWriter) flush() { w.p.progress(w.pr) }

// blobLocks keeps two pulls in this process (two /api/pull requests) from
// writing one partial file at once: each blob path has a one-slot channel.
var blobLocks sync.Map

func lockBlob(ctx context.Context, path string) (func(), error) {
	v, _ := blobLocks.LoadOrStore(path, make(chan struct{}, 1))
	ch := v.(chan struct{})
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// digestOf is the store's digest of b: "sha256:" and lower-case hex.
func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}
