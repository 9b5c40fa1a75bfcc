package main

import (
	"fmt"
	"io"
)

// runAgent is `scrapegate agent`: the node agent (gateway.NodeAgentConfig).
// TODO(issue 15): helper "agent".
func runAgent(args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "scrapegate agent: not built yet")
	return 2
}
