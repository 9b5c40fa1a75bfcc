package auth

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

const (
	agentAudience = "scrapegate-node-agent"
	gatewaySA     = "system:serviceaccount:scrapegate:scrapegate"
)

// newReviewing is an Authenticator of NewTokenReview accepting the
// ServiceAccount scrapegate/scrapegate for agentAudience, with the fake
// API server's reviews and what it observed.
func newReviewing(t *testing.T, ttl time.Duration) (*Authenticator, *testutil.TokenReviews, *[]string) {
	t.Helper()
	client := fake.NewClientset()
	reviews := testutil.FakeTokenReviews(client)
	var observed []string
	a := NewTokenReview(TokenReviewOptions{
		Reviews:         client.AuthenticationV1().TokenReviews(),
		Audiences:       []string{agentAudience},
		ServiceAccounts: []string{"scrapegate/scrapegate"},
		TTL:             ttl,
		Observe: func(r Review, cached bool, err error) {
			if (r == ReviewError) != (err != nil) {
				t.Errorf("Observe(%s, %v, %v): an error goes with ReviewError and only with it", r, cached, err)
			}
			observed = append(observed, fmt.Sprintf("%s cached=%v", r, cached))
		},
	})
	return a, reviews, &observed
}

func bearer(token string) []byte { return []byte("Bearer " + token) }

// TestTokenReviewVerdicts: only an allowed ServiceAccount's token for the
// agent's audience is accepted; a valid token of another account is
// NotAllowed (403), anything else not authenticated (401), and an API
// server that cannot answer gives ReviewFailed (503), never a refusal.
func TestTokenReviewVerdicts(t *testing.T) {
	a, reviews, _ := newReviewing(t, time.Minute)
	reviews.Add("gateway", gatewaySA, agentAudience, "other-audience")
	reviews.Add("other-sa", "system:serviceaccount:apps:web", agentAudience)
	reviews.Add("same-name-other-ns", "system:serviceaccount:default:scrapegate", agentAudience)
	reviews.Add("user", "alice", agentAudience)
	// The gateway's own token, bound to the API server's audience: what a
	// node could replay against the API server.
	reviews.Add("api-audience", gatewaySA, "https://kubernetes.default.svc")
	// An authenticator that does not check audiences at all.
	reviews.Add("audience-unaware", gatewaySA)
	f := func(header []byte, want Result, wantUser string) {
		t.Helper()
		if got, user := checkAsNewCaller(a, header); got != want || user != wantUser {
			t.Errorf("Check(%q) = %s, %q; want %s, %q", header, got, user, want, wantUser)
		}
	}
	f(bearer("gateway"), OK, "")
	if got := reviews.LastAudiences(); !slices.Equal(got, []string{agentAudience}) {
		t.Errorf("spec.audiences = %q; want the agent's audience only", got)
	}
	f(bearer("other-sa"), NotAllowed, "system:serviceaccount:apps:web")
	f(bearer("same-name-other-ns"), NotAllowed, "system:serviceaccount:default:scrapegate")
	f(bearer("user"), NotAllowed, "alice")
	f(bearer("api-audience"), BadToken, "")
	f(bearer("audience-unaware"), BadToken, "")
	f(bearer("expired-or-forged"), BadToken, "")
	f(nil, Missing, "")
	f([]byte("Basic "+testutil.BasicAuth("scrapegate", "x")), Unsupported, "")
	f([]byte("Bearer a b"), Malformed, "")

	reviews.Fail(errors.New("connection refused"))
	f(bearer("new-token"), ReviewFailed, "")
	// Not remembered: once the API server answers, the token is judged.
	reviews.Fail(nil)
	reviews.Add("new-token", gatewaySA, agentAudience)
	f(bearer("new-token"), OK, "")
}

// TestTokenReviewCache: a verdict is remembered for the TTL (a refusal
// for at most maxRefusalTTL) without asking the API server again, and
// asked again after.
func TestTokenReviewCache(t *testing.T) {
	a, reviews, observed := newReviewing(t, time.Minute)
	reviews.Add("gateway", gatewaySA, agentAudience)
	caller := netip.MustParseAddr("10.0.0.1")
	start := time.Now().UnixNano()
	f := func(token string, at time.Duration, want Result, wantCalls int) {
		t.Helper()
		if got, _ := a.Check(bearer(token), caller, start+int64(at)); got != want {
			t.Errorf("%s at +%s: %s; want %s", token, at, got, want)
		}
		if got := reviews.Calls(); got != wantCalls {
			t.Errorf("%s at +%s: %d reviews so far; want %d", token, at, got, wantCalls)
		}
	}
	f("gateway", 0, OK, 1)
	f("gateway", 59*time.Second, OK, 1)
	// Revoked: trusted until the TTL is over, and not after.
	reviews.Remove("gateway")
	f("gateway", 59*time.Second, OK, 1)
	f("gateway", 60*time.Second, BadToken, 2)
	f("gateway", 69*time.Second, BadToken, 2)
	// A refusal is remembered for maxRefusalTTL only: the token may have
	// become valid.
	reviews.Add("gateway", gatewaySA, agentAudience)
	f("gateway", 70*time.Second, OK, 3)
	want := []string{"allowed cached=false", "allowed cached=true", "allowed cached=true", "unauthenticated cached=false", "unauthenticated cached=true", "allowed cached=false"}
	if !slices.Equal(*observed, want) {
		t.Errorf("observed %q; want %q", *observed, want)
	}
}

// TestTokenReviewCacheIsBounded: past maxCachedReviews tokens the oldest
// verdict is forgotten first, and only it.
func TestTokenReviewCacheIsBounded(t *testing.T) {
	a, reviews, _ := newReviewing(t, time.Hour)
	caller := netip.MustParseAddr("10.0.0.1")
	check := func(token string) {
		t.Helper()
		if got, _ := a.Check(bearer(token), caller, 0); got != OK {
			t.Fatalf("%s: %s; want ok", token, got)
		}
	}
	for i := range maxCachedReviews + 1 {
		token := fmt.Sprintf("token-%d", i)
		reviews.Add(token, gatewaySA, agentAudience)
		check(token)
	}
	calls := reviews.Calls()
	check("token-1")
	check(fmt.Sprintf("token-%d", maxCachedReviews))
	if got := reviews.Calls(); got != calls {
		t.Fatalf("the newer tokens were reviewed again (%d reviews, want %d): they should be remembered", got, calls)
	}
	check("token-0")
	if got := reviews.Calls(); got != calls+1 {
		t.Fatalf("the oldest token was not reviewed again (%d reviews, want %d): the cache holds more than %d", got, calls+1, maxCachedReviews)
	}
	if n := len(a.reviewer.cache.verdicts); n != maxCachedReviews {
		t.Fatalf("%d verdicts remembered; want %d", n, maxCachedReviews)
	}
}

// TestTokenReviewChargesRefusals: each new refused token is a failed
// login of its caller; past the budget the caller is refused before its
// token is reviewed, and a refusal remembered costs nothing more.
func TestTokenReviewChargesRefusals(t *testing.T) {
	a, reviews, _ := newReviewing(t, time.Minute)
	reviews.Add("gateway", gatewaySA, agentAudience)
	reviews.Add("other-sa", "system:serviceaccount:apps:web", agentAudience)
	guesser, gateway := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	// The same refused token again and again: charged once.
	for range 3 * loginFailureBurst {
		if got, _ := a.Check(bearer("other-sa"), guesser, 0); got != NotAllowed {
			t.Fatalf("other-sa: %s; want %s", got, NotAllowed)
		}
	}
	for i := 1; i < loginFailureBurst; i++ {
		if got, _ := a.Check(bearer(fmt.Sprintf("guess-%d", i)), guesser, 0); got != BadToken {
			t.Fatalf("guess %d: %s; want bad_token", i, got)
		}
	}
	calls := reviews.Calls()
	if got, _ := a.Check(bearer("another-guess"), guesser, 0); got != TooManyFailures {
		t.Fatalf("a guess past the budget: %s; want too_many_failures", got)
	}
	if reviews.Calls() != calls {
		t.Fatal("a caller out of failed logins had its token reviewed")
	}
	if got, _ := a.Check(bearer("gateway"), gateway, 0); got != OK {
		t.Fatalf("another caller: %s; want ok", got)
	}
}
