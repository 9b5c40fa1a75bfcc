package testutil

import (
	"os"
	"path/filepath"
	"testing"
)

// TempFile writes data to a file named name in a new temporary directory,
// as WriteFile does, and returns its path.
func TempFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	WriteFile(t, path, data)
	return path
}

// WriteFile writes (or overwrites) a file that only its owner may read, as
// secrets are; overwriting it is how a test rotates one in place.
func WriteFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// ReplaceFile replaces path's contents atomically (a new file renamed over
// it), so that a reader polling it never sees it half written, as with a
// Kubernetes Secret volume, whose files change by a symlink swap.
func ReplaceFile(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	WriteFile(t, tmp, data)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// CopyFile overwrites dst with the contents of src.
func CopyFile(t testing.TB, dst, src string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	WriteFile(t, dst, b)
}
