package gateway

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestErrorsDocListsEveryReason keeps docs/errors.md true to reasonInfo:
// every reason has a row with its status ("—" for a connection aborted
// instead of answered), and no row names a reason that does not exist.
func TestErrorsDocListsEveryReason(t *testing.T) {
	doc, err := os.ReadFile("../docs/errors.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{} // reason → status column
	for _, line := range strings.Split(string(doc), "\n") {
		cols := strings.Split(line, "|")
		if len(cols) < 4 || !strings.HasPrefix(strings.TrimSpace(cols[2]), "`") {
			continue
		}
		rows[strings.Trim(strings.TrimSpace(cols[2]), "`")] = strings.TrimSpace(cols[1])
	}
	for r := reason(0); r < numReasons; r++ {
		name, status := reasonInfo[r].name, reasonInfo[r].status
		col, ok := rows[name]
		switch {
		case !ok:
			t.Errorf("docs/errors.md has no row for reason %q", name)
		case status == 0 && col != "—":
			t.Errorf("docs/errors.md gives %q the status %q; want — (the connection is aborted)", name, col)
		case status != 0 && !strings.HasPrefix(col, strconv.Itoa(status)):
			t.Errorf("docs/errors.md gives %q the status %q; want %d", name, col, status)
		}
		delete(rows, name)
	}
	for name := range rows {
		t.Errorf("docs/errors.md has a row for %q, which is not a reason", name)
	}
}
