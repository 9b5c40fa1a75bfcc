package main

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
)

// TestFlagsDoc checks that docs/flags.md is what -help-markdown prints, so
// that the page shows every flag with its current default and help text, and
// that it names every flag -h lists.
func TestFlagsDoc(t *testing.T) {
	want, err := os.ReadFile("../../docs/flags.md")
	if err != nil {
		t.Fatal(err)
	}
	// Like -version, -help-markdown exits before the environment is read,
	// so the page does not depend on it.
	badEnv := func(string) (string, bool) { return "nonsense", true }
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-help-markdown"}, badEnv, &stdout, &stderr); code != 0 || stderr.Len() > 0 {
		t.Fatalf("-help-markdown: exit %d, stderr %q; want 0 and nothing", code, stderr.String())
	}
	if !bytes.Equal(stdout.Bytes(), want) {
		t.Errorf("docs/flags.md is not what `scrapegate -help-markdown` prints: run `make docs` and commit docs/flags.md")
	}

	var stderrOfHelp bytes.Buffer
	if code := run([]string{"-h"}, badEnv, io.Discard, &stderrOfHelp); code != 0 {
		t.Fatalf("-h: exit %d", code)
	}
	help := stderrOfHelp.String()
	var names []string
	for sc := bufio.NewScanner(strings.NewReader(help)); sc.Scan(); {
		// PrintDefaults starts each flag's line with "  -name".
		if name, ok := strings.CutPrefix(sc.Text(), "  -"); ok {
			name, _, _ = strings.Cut(name, " ")
			names = append(names, name)
		}
	}
	if !slices.Contains(names, "help-markdown") {
		t.Errorf("-h does not list -help-markdown:\n%s", help)
	}
	for _, name := range names {
		if !bytes.Contains(want, []byte("| `--"+name+"` |")) {
			t.Errorf("-h lists -%s, docs/flags.md has no row for it", name)
		}
	}
}
