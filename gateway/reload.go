package gateway

import (
	"bytes"
	"fmt"
	"os"
	"sync"

	"github.com/rs/zerolog"
)

// reloadable is a set of files that are loaded together (a certificate and
// its key, a token list) and loaded again whenever any of them changes, so
// that secrets rotate without a restart. Changes are found by comparing
// contents, not modification times: Kubernetes replaces mounted secrets by
// swapping a symlink, and cert-manager may rewrite a file within the same
// second. A load that fails keeps the last good contents in force.
type reloadable struct {
	// flag names the flag that set the files, for logs and metrics.
	flag  string
	paths []string
	// load parses the files' contents (in the order of paths) and, only if
	// all of them are valid, puts them in force.
	load func(contents [][]byte) error

	mu      sync.Mutex
	current [][]byte
	lastErr string
}

func newReloadable(flag string, load func(contents [][]byte) error, paths ...string) *reloadable {
	return &reloadable{flag: flag, paths: paths, load: load}
}

// reload reads the files and loads them if they differ from those in force.
// It reports whether new contents were put in force.
func (r *reloadable) reload() (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	contents := make([][]byte, len(r.paths))
	for i, p := range r.paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return false, fmt.Errorf("cannot read -%s: %w", r.flag, err)
		}
		contents[i] = b
	}
	if r.current != nil && equalContents(r.current, contents) {
		return false, nil
	}
	if err := r.load(contents); err != nil {
		return false, fmt.Errorf("cannot load -%s %q: %w", r.flag, r.paths, err)
	}
	r.current = contents
	return true, nil
}

func equalContents(a, b [][]byte) bool {
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// reloadAll checks every reloadable once, logging what changed and what
// failed; a failure is logged when it first appears or changes, not at every
// check, and its end is logged too.
func (g *Gateway) reloadAll() {
	for _, r := range g.reloadables {
		changed, err := r.reload()
		r.mu.Lock()
		prevErr := r.lastErr
		r.lastErr = ""
		if err != nil {
			r.lastErr = err.Error()
		}
		r.mu.Unlock()
		switch {
		case err != nil:
			g.metrics.reloads(r.flag, false).Inc()
			if err.Error() != prevErr {
				g.log.Error().Err(err).Str("flag", r.flag).Msg("cannot reload file: keeping the last good one in force")
			}
		case changed:
			g.metrics.reloads(r.flag, true).Inc()
			g.log.Info().Str("flag", r.flag).Strs("files", r.paths).Msg("reloaded changed file")
		case prevErr != "":
			g.log.Info().Str("flag", r.flag).Msg("file readable again, unchanged")
		}
	}
}

// loadAll loads every reloadable for the first time: at startup a file that
// cannot be loaded is an error, not a warning.
func loadAll(rs []*reloadable, log zerolog.Logger) error {
	for _, r := range rs {
		if _, err := r.reload(); err != nil {
			return err
		}
		log.Info().Str("flag", r.flag).Strs("files", r.paths).Msg("loaded file")
	}
	return nil
}
