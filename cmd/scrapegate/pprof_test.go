package main

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/rs/zerolog"
)

func TestPprof(t *testing.T) {
	if ln, err := listenPprof(""); ln != nil || err != nil {
		t.Fatalf("listenPprof(\"\") = %v, %v; want no listener: profiles are off by default", ln, err)
	}
	ln, err := listenPprof("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String() + "/debug/pprof/"
	stop := servePprof(ln, zerolog.Nop())

	get := func(path string) (int, string, error) {
		t.Helper()
		resp, err := http.Get(url + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), err
	}
	code, body, err := get("heap?debug=1")
	if err != nil || code != http.StatusOK || !strings.Contains(body, "heap profile:") {
		t.Fatalf("GET heap?debug=1: %d %.100q %v; want 200 and a heap profile", code, body, err)
	}
	if code, body, err := get("cmdline"); err != nil || code != http.StatusOK || body == "" {
		t.Fatalf("GET cmdline: %d %q %v; want 200 and the command line", code, body, err)
	}
	stop()
	if _, _, err := get("heap"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("after stop: %v; want the connection refused", err)
	}
}
