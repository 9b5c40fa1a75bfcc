// Command scrapegate serves the scrape gateway, and as `scrapegate agent`
// the node agent. flags.go (agent.go for the agent's own) reads the flags
// and the environment into one gateway.Config, and is the only code that
// knows about flags; main.go builds the gateway from it, serves it until SIGTERM
// or SIGINT (with Go's profiles on -pprof, pprof.go) and turns the outcome
// into an exit code. Everything else lives in package gateway.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/scrapegate/scrapegate/gateway"
	"github.com/scrapegate/scrapegate/gateway/buildinfo"
)

func main() {
	os.Exit(run(os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr))
}

// run returns the exit code: 0 after a clean shutdown, -h, -version or
// -help-markdown, 2 for a bad flag or environment value, 1 when serving
// fails. `scrapegate agent ...` is the node agent (agent.go).
func run(args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "agent" {
		return runCommand(agentCommand, args[1:], lookupEnv, stdout, stderr)
	}
	return runCommand(gatewayCommand, args, lookupEnv, stdout, stderr)
}

// runCommand is run for one command: its flags, then its Gateway.
func runCommand(c *command, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) int {
	cfg, err := c.parse(args, lookupEnv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if errors.Is(err, errVersion) {
		fmt.Fprintln(stdout, buildinfo.Get())
		return 0
	}
	if errors.Is(err, errHelpMarkdown) {
		if err := writeFlagsMarkdown(stdout); err != nil {
			fmt.Fprintf(stderr, "%s: cannot write the flags as Markdown: %s\n", c.name, err)
			return 1
		}
		return 0
	}
	if err != nil {
		// One line per problem, each saying whose it is.
		prefix := c.name + ": "
		fmt.Fprintf(stderr, "%s%s\n", prefix, strings.ReplaceAll(err.Error(), "\n", "\n"+prefix))
		return 2
	}
	log, err := gateway.NewLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		panic("BUG: the config was validated: " + err.Error())
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, cfg, log); err != nil {
		log.Error().Err(err).Msg(c.name + " stopped")
		return 1
	}
	return 0
}

// serve builds the gateway, listens on -listen and serves until ctx is
// done, then shuts down gracefully (gateway.Shutdown). Scrapes cut off by
// -shutdown-timeout are logged, not returned as an error: the shutdown
// itself went as configured.
func serve(ctx context.Context, cfg gateway.Config, log zerolog.Logger) error {
	g, err := gateway.New(cfg, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("cannot listen on %q: %w", cfg.Listen, err)
	}
	pprofLn, err := listenPprof(cfg.Pprof)
	if err != nil {
		_ = ln.Close()
		return err
	}
	if pprofLn != nil {
		defer servePprof(pprofLn, log)()
		log.Warn().Str("pprof", pprofLn.Addr().String()).Msg("serving Go profiles without authentication (-pprof)")
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	if err := g.Shutdown(context.Background()); err != nil {
		log.Warn().Err(err).Int64("inflight", g.Inflight()).Msg("exiting with scrapes unfinished")
	}
	return <-served
}
