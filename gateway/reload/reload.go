// Package reload keeps the files the gateway reads (certificates and their
// keys, CA bundles, token and htpasswd files) in force, and loads them again
// when they change, so that secrets rotate without a restart.
//
// Changes are found by comparing contents, not modification times:
// Kubernetes replaces mounted secrets by swapping a symlink rather than
// writing the file, and cert-manager may rewrite a file within the same
// second, which a coarse modification time does not tell apart. The
// contents are what is put in force, so comparing them neither misses a
// change nor loads again a file rewritten unchanged. A load that fails keeps
// the last good contents in force.
package reload

import (
	"bytes"
	"fmt"
	"os"
	"sync"

	"github.com/rs/zerolog"
)

// Files is a set of files that are loaded together (a certificate and its
// key, a token list) and loaded again whenever any of them changes.
type Files struct {
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

// New returns the files at paths, set by the flag named flag (without its
// dash), which load parses and puts in force. Nothing is read until the
// first Reload.
func New(flag string, load func(contents [][]byte) error, paths ...string) *Files {
	return &Files{flag: flag, paths: paths, load: load}
}

// Flag returns the name of the flag that set the files, for logs and
// metrics.
func (f *Files) Flag() string { return f.flag }

// Paths returns the files' paths; do not modify the slice.
func (f *Files) Paths() []string { return f.paths }

// Reload reads the files and loads them if they differ from those in force.
// It reports whether new contents were put in force.
func (f *Files) Reload() (changed bool, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reload()
}

func (f *Files) reload() (bool, error) {
	contents := make([][]byte, len(f.paths))
	for i, p := range f.paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return false, fmt.Errorf("cannot read -%s: %w", f.flag, err)
		}
		contents[i] = b
	}
	if f.current != nil && equalContents(f.current, contents) {
		return false, nil
	}
	if err := f.load(contents); err != nil {
		return false, fmt.Errorf("cannot load -%s %q: %w", f.flag, f.paths, err)
	}
	f.current = contents
	return true, nil
}

// Check is Reload for a periodic check, which also returns the error of the
// previous Check ("" if it succeeded), so that a failure can be logged when
// it first appears or changes, not at every check, and its end too.
func (f *Files) Check() (changed bool, prevErr string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	changed, err = f.reload()
	prevErr, f.lastErr = f.lastErr, ""
	if err != nil {
		f.lastErr = err.Error()
	}
	return changed, prevErr, err
}

func equalContents(a, b [][]byte) bool {
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// LoadAll loads every set of files for the first time: at startup a file
// that cannot be loaded is an error, not a warning.
func LoadAll(all []*Files, log zerolog.Logger) error {
	for _, f := range all {
		if _, err := f.Reload(); err != nil {
			return err
		}
		log.Info().Str("flag", f.flag).Strs("files", f.paths).Msg("loaded file")
	}
	return nil
}
