// Package buildinfo says which build of scrapegate is running, for
// -version and the scrapegate_build_info metric.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version and revision are set by the Makefile and the Dockerfile:
//
//	-ldflags '-X github.com/scrapegate/scrapegate/gateway/buildinfo.version=v1.2.3
//	          -X github.com/scrapegate/scrapegate/gateway/buildinfo.revision=<commit>'
//
// A plain `go build` leaves them empty, and Get falls back to what the Go
// toolchain stamped into the binary.
var version, revision string

// Info is one build of scrapegate.
type Info struct {
	Version   string // git describe's, the module's version, or "devel"
	Revision  string // the VCS commit, or "unknown"
	GoVersion string // the Go toolchain that built it
}

// Get returns the running binary's build information.
func Get() Info {
	info := Info{Version: version, Revision: revision, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if info.Version == "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version // from the VCS tag and commit since Go 1.24, or the module proxy's
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && info.Revision == "" {
				info.Revision = s.Value
			}
		}
	}
	if info.Version == "" {
		info.Version = "devel"
	}
	if info.Revision == "" {
		info.Revision = "unknown"
	}
	return info
}

// String is the -version line.
func (i Info) String() string {
	return fmt.Sprintf("scrapegate version %s (revision %s, %s)", i.Version, i.Revision, i.GoVersion)
}
