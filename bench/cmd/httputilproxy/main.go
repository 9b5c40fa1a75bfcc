// Command httputilproxy serves baseline.NewReverseProxy on its own, so the
// load harness (bench/cmd/loadbench) can read its CPU and memory from /proc
// like scrapegate's and nginx's.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/scrapegate/scrapegate/bench/baseline"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "TCP address to serve /pods/{ip}/{port}/{path} on.")
	flag.Parse()
	if err := serve(*listen); err != nil {
		fmt.Fprintf(os.Stderr, "httputilproxy: %s\n", err)
		os.Exit(1)
	}
}

// serve runs until SIGTERM or SIGINT, then shuts down cleanly so that the
// harness can tell a requested stop (exit 0) from a crash.
func serve(addr string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	s := &http.Server{Addr: addr, Handler: baseline.NewReverseProxy()}
	served := make(chan error, 1)
	go func() { served <- s.ListenAndServe() }()
	select {
	case err := <-served:
		return fmt.Errorf("cannot serve on %s: %w", addr, err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("cannot shut down: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
