package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/rs/zerolog"
)

// servePprof serves Go's runtime profiles on ln until the returned stop is
// called. They are off by default (-pprof): a profile shows the gateway's
// internals, including the targets in flight, to whoever reaches it, so the
// address should be loopback or otherwise private. The profiles get their own
// mux rather than http.DefaultServeMux, which any imported package could
// have added handlers to.
func servePprof(ln net.Listener, log zerolog.Logger) (stop func()) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("the -pprof server stopped")
		}
	}()
	return func() { _ = s.Close() }
}

// listenPprof opens the -pprof listener, if one is configured.
func listenPprof(addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on -pprof %q: %w", addr, err)
	}
	return ln, nil
}
