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
	registerListenFlag(fs, c, "Set it to the node's own address on the host network, as deploy/overlays/node-agent does with [$(HOST_IP)]:10271 "+
		"from the pod's status.hostIP (in brackets, an IPv4 and an IPv6 address alike): the default :10271 is every interface the node has.")
	registerCallerLimitFlags(fs, c, "agent", "Set it to the gateway's pod CIDR where you can: most network plugins apply no NetworkPolicy to a host-network pod.",
		"The gateway sends one request per component scrape.")
	fs.Var((*stringList)(&a.AllowedServiceAccounts), "allowed-serviceaccounts", "Comma-separated ServiceAccounts (namespace/name) whose tokens callers may present "+
		"(Authorization: Bearer), each checked with the API server by a TokenReview: "+
		"it must be authenticated, for one of -token-audiences, as system:serviceaccount:{namespace}:{name} of one of these. "+
		"A token that cannot pass, one that is not a JWT or whose claims (unverified) name another audience or account or an expiry past, gets 401 without a TokenReview; "+
		"a token the review finds valid for another user gets 403, one it refuses 401; nothing is dialled for any. "+
		"Each refused token counts as a failed login of its caller's address (IPv6: its /64): past 10 at once and 10 more a minute, "+
		"every token it sends but those already accepted gets 429 with Retry-After, so a neighbour behind the same address cannot lock the gateway out. "+
		"An API server that cannot review the token, or more than 4 TokenReviews in flight, gets the caller 503 with Retry-After, never 401. "+
		"Empty: no tokens, only client certificates (-tls-client-ca-file).")
	fs.Var((*stringList)(&a.TokenAudiences), "token-audiences", "Comma-separated audiences a caller's token must be bound to (spec.audiences of the TokenReview; the review must return one). "+
		"A token for the API server's own audience is refused, so a node never receives one it could use against the API server: "+
		"the gateway presents a projected token with this audience.")
	fs.DurationVar(&a.TokenReviewCacheTTL, "token-review-cache-ttl", a.TokenReviewCacheTTL, "How long an accepted token is trusted without another TokenReview, "+
		"never past its own expiry (exp): a revoked token keeps working for up to this long. "+
		"Tokens are remembered by their SHA-256, the last 1024 accepted and apart from them the last 4096 refused; a refusal for at most 10s, a review that failed for 5s.")
	registerKubeconfigFlag(fs, c)
	registerListenerSecurityFlags(fs, c, "when set, callers may present a client certificate it signed (mTLS): "+
		"one it did not sign, or without one of -tls-client-allowed-names, fails the TLS handshake; one that verifies admits its caller by itself, any token unread.",
		"A caller without one is judged by its token (-allowed-serviceaccounts); with -allowed-serviceaccounts empty it gets 401, "+
			"except to /healthz and /readyz, and to /metrics if -metrics-require-auth is false. "+
			"Without -tls-client-allowed-names any certificate the CA signed will do: never use the cluster CA, which signs the kubelets' and nodes' client certificates.", false)

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
	{"Listener and callers", "", []string{"listen", "allow-caller-cidrs", "max-conns-per-caller", "caller-rate-limit", "caller-rate-burst", "allowed-serviceaccounts", "token-audiences", "token-review-cache-ttl", "kubeconfig",
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
