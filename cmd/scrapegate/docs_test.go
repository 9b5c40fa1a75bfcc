package main

import (
	"bufio"
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestFlagsDoc checks that docs/flags.md is what -help-markdown prints, so
// that the page shows every flag with its current default and help text, and
// that it names every flag -h lists, the node agent's too.
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

	for _, args := range [][]string{{"-h"}, {"agent", "-h"}} {
		var stderrOfHelp bytes.Buffer
		if code := run(args, badEnv, io.Discard, &stderrOfHelp); code != 0 {
			t.Fatalf("%q: exit %d", args, code)
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
			t.Errorf("%q does not list -help-markdown:\n%s", args, help)
		}
		for _, name := range names {
			if !bytes.Contains(want, []byte("| `--"+name+"` |")) {
				t.Errorf("%q lists -%s, docs/flags.md has no row for it", args, name)
			}
		}
	}
	// The agent's tables follow its heading: its flags are not the gateway's.
	if _, agent, ok := bytes.Cut(want, []byte("\n## The node agent: `scrapegate agent`\n")); !ok || !bytes.Contains(agent, []byte("| `--allowed-serviceaccounts` |")) {
		t.Error("docs/flags.md has no section of the node agent's flags")
	}
}

// TestArchitectureDoc checks that every file:function docs/architecture.md
// names is a function or method (or Type.Method) declared in that file, so that the
// walk through one scrape stays true as code moves.
func TestArchitectureDoc(t *testing.T) {
	doc, err := os.ReadFile("../../docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	refs := regexp.MustCompile("`((?:cmd|gateway|internal|bench)/[a-z0-9_/]+\\.go):([A-Za-z][A-Za-z0-9]*(?:\\.[A-Za-z][A-Za-z0-9]*)?)`").FindAllSubmatch(doc, -1)
	if len(refs) < 10 {
		t.Fatalf("docs/architecture.md names %d file:function references; want the walk's", len(refs))
	}
	for _, ref := range refs {
		file, name := string(ref[1]), string(ref[2])
		f, err := parser.ParseFile(token.NewFileSet(), "../../"+file, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Errorf("docs/architecture.md names %s: %v", file, err)
			continue
		}
		if !declares(f, name) {
			t.Errorf("docs/architecture.md names %s:%s, which %s does not declare", file, name, file)
		}
	}
}

// declares reports whether f declares name, a function or method, or
// Type.Method.
func declares(f *ast.File, name string) bool {
	recv, fn, isMethod := strings.Cut(name, ".")
	if !isMethod {
		recv, fn = "", name
	}
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Name.Name != fn || recv != "" && fd.Recv == nil {
			continue
		}
		if recv == "" {
			return true
		}
		typ := fd.Recv.List[0].Type
		if star, ok := typ.(*ast.StarExpr); ok {
			typ = star.X
		}
		if id, ok := typ.(*ast.Ident); ok && id.Name == recv {
			return true
		}
	}
	return false
}
