package buildinfo

import (
	"runtime"
	"testing"
)

func TestGet(t *testing.T) {
	f := func(ldVersion, ldRevision string, want Info) {
		t.Helper()
		version, revision = ldVersion, ldRevision
		defer func() { version, revision = "", "" }()
		if got := Get(); got != want {
			t.Errorf("with -X version=%q revision=%q: %+v; want %+v", ldVersion, ldRevision, got, want)
		}
	}
	// go test stamps neither a module version nor a VCS revision.
	f("", "", Info{Version: "devel", Revision: "unknown", GoVersion: runtime.Version()})
	f("v1.2.3-4-gabcdef0-dirty", "abcdef0123", Info{Version: "v1.2.3-4-gabcdef0-dirty", Revision: "abcdef0123", GoVersion: runtime.Version()})
}

func TestString(t *testing.T) {
	got := Info{Version: "v1.2.3", Revision: "abcdef0", GoVersion: "go1.26.8"}.String()
	if want := "scrapegate version v1.2.3 (revision abcdef0, go1.26.8)"; got != want {
		t.Errorf("String() = %q; want %q", got, want)
	}
}
