package main

import (
	"flag"

	"github.com/scrapegate/scrapegate/gateway"
)

// agentCommand is `scrapegate agent`: the node agent (gateway.NodeAgentConfig),
// with flags of its own and the environment prefix SCRAPEGATE_AGENT_.
var agentCommand = &command{name: "scrapegate agent", envPrefix: "SCRAPEGATE_AGENT_", defaults: gateway.DefaultNodeAgentConfig,
	register: registerAgentFlags, groups: agentFlagGroups}

// registerAgentFlags is the node agent's command.register.
func registerAgentFlags(fs *flag.FlagSet, c *gateway.Config) {
	a := c.NodeAgent
	registerListenFlag(fs, c)
	fs.Var((*stringList)(&a.AllowedServiceAccounts), "allowed-serviceaccounts", "Comma-separated ServiceAccounts (namespace/name) whose tokens callers may present "+
		"(Authorization: Bearer), each checked with the API server by a TokenReview: "+
		"it must be authenticated, for one of -token-audiences, as system:serviceaccount:{namespace}:{name} of one of these; "+
		"a valid token of another account gets 403, anything else 401, and nothing is dialled for either. "+
		"Empty: no tokens, only client certificates (-tls-client-ca-file).")
	fs.Var((*stringList)(&a.TokenAudiences), "token-audiences", "Comma-separated audiences a caller's token must be bound to (spec.audiences of the TokenReview; the review must return one). "+
		"A token for the API server's own audience is refused, so a node never receives one it could use against the API server: "+
		"the gateway presents a projected token with this audience.")
	fs.DurationVar(&a.TokenReviewCacheTTL, "token-review-cache-ttl", a.TokenReviewCacheTTL, "How long an accepted token is trusted without another TokenReview "+
		"(by its SHA-256; the last 4096 tokens are remembered): a revoked token keeps working for up to this long. Refused tokens are remembered for at most 10s, "+
		"and each new one counts as a failed login of its caller (10 at once, 10 more a minute, then 429). "+
		"An API server that cannot be reached gets the caller 503 with Retry-After, never 401.")
	registerKubeconfigFlag(fs, c)
	registerListenerSecurityFlags(fs, c, "With -allowed-serviceaccounts also set, either is enough: a caller that presents a certificate is judged by it alone, one without by its token.")

	fs.StringVar(&c.ControlPlaneTokenFile, "control-plane-token-file", c.ControlPlaneTokenFile, "Bearer token sent to kube-scheduler and kube-controller-manager on 127.0.0.1, "+
		"never to etcd or kube-proxy (http) and to nothing else; it needs RBAC get on the non-resource URLs /metrics and /metrics/slis. "+
		"Re-read when it changes, as projected tokens rotate. Empty: no /kube-scheduler/ and /kube-controller-manager/.")
	fs.StringVar(&c.ControlPlaneCAFile, "control-plane-ca-file", c.ControlPlaneCAFile, "PEM CA bundle to verify kube-scheduler's and kube-controller-manager's serving certificates with, "+
		"as valid for 127.0.0.1. Empty: not verified. kubeadm's sign their own at start, so that no CA can verify them; the connection never leaves the node. "+
		"Re-read when it changes.")
	registerComponentPortFlags(fs, c, "on 127.0.0.1 of the agent's node")

	registerDeadlineFlags(fs, c)
	registerLifecycleFlags(fs, c)
}

// agentFlagGroups are the node agent's command.groups.
var agentFlagGroups = []flagGroup{
	{"Listener and callers", "", []string{"listen", "allowed-serviceaccounts", "token-audiences", "token-review-cache-ttl", "kubeconfig",
		"metrics-require-auth", "tls-cert-file", "tls-key-file", "tls-client-ca-file", "tls-client-allowed-names", "reload-interval"}},
	{"Components", "", []string{"control-plane-token-file", "control-plane-ca-file",
		"kube-scheduler-port", "kube-controller-manager-port", "etcd-port", "kube-proxy-port"}},
	{"Deadlines, lifecycle and logging", "", []string{"dial-timeout", "scrape-timeout-default", "scrape-timeout-max", "scrape-timeout-margin",
		"drain-delay", "shutdown-timeout", "log-format", "log-level", "access-log", "version", "help-markdown"}},
}

const agentFlagsMarkdownIntro = `
## The node agent: ` + "`scrapegate agent`" + `

` + "`scrapegate agent [flags]`" + ` is the node agent ([kubernetes.md](kubernetes.md#the-node-agent)). Its flags are
its own: every one but ` + "`--version` and `--help-markdown`" + ` can also be set with
` + "`SCRAPEGATE_AGENT_<FLAG_IN_UPPER_SNAKE_CASE>`: `--listen` is `SCRAPEGATE_AGENT_LISTEN`" + `; the rest is as above,
with errors prefixed ` + "`scrapegate agent:`" + `. ` + "`scrapegate agent -h`" + ` prints them as plain text.
`
