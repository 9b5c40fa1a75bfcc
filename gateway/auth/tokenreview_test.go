package auth

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	authenticationclient "k8s.io/client-go/kubernetes/typed/authentication/v1"

	"github.com/scrapegate/scrapegate/gateway/callers"
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
	var mu sync.Mutex // concurrent checks observe too
	a := NewTokenReview(TokenReviewOptions{
		Reviews:         client.AuthenticationV1().TokenReviews(),
		Audiences:       []string{agentAudience},
		ServiceAccounts: []string{"scrapegate/scrapegate"},
		TTL:             ttl,
		Observe: func(r Review, cached bool, err error) {
			if (r == ReviewError && !cached) != (err != nil) {
				t.Errorf("Observe(%s, %v, %v): an error goes with a ReviewError just made, and only with it", r, cached, err)
			}
			mu.Lock()
			defer mu.Unlock()
			observed = append(observed, fmt.Sprintf("%s cached=%v", r, cached))
		},
	})
	return a, reviews, &observed
}

func bearer(token string) []byte { return []byte("Bearer " + token) }

// gatewayJWT is a token of the gateway's ServiceAccount for the agent's
// audience, told apart from others by n, expiring at exp (zero: never).
func gatewayJWT(n int, exp time.Time) string {
	claims := map[string]any{"sub": gatewaySA, "aud": []string{agentAudience}, "jti": n}
	if !exp.IsZero() {
		claims["exp"] = exp.Unix()
	}
	return testutil.JWT(map[string]string{"alg": "RS256"}, claims)
}

// TestTokenReviewVerdicts: only an allowed ServiceAccount's token for the
// agent's audience is accepted; a valid token of another user is
// NotAllowed (403), anything else not authenticated (401), and an API
// server that cannot answer gives ReviewFailed (503), never a refusal.
func TestTokenReviewVerdicts(t *testing.T) {
	a, reviews, _ := newReviewing(t, time.Minute)
	gateway := testutil.ServiceAccountJWT("scrapegate/scrapegate", time.Time{}, agentAudience, "other-audience")
	reviews.Add(gateway, gatewaySA, agentAudience, "other-audience")
	// A token whose claims say the gateway's account, which another
	// authenticator (not the ServiceAccounts') takes for another user.
	otherUser := gatewayJWT(1, time.Time{})
	reviews.Add(otherUser, "alice", agentAudience)
	// Claims for the agent's audience the API server does not confirm.
	apiAudience := gatewayJWT(2, time.Time{})
	reviews.Add(apiAudience, gatewaySA, "https://kubernetes.default.svc")
	// An authenticator that does not check audiences at all.
	audienceUnaware := gatewayJWT(3, time.Time{})
	reviews.Add(audienceUnaware, gatewaySA)
	f := func(header []byte, want Result, wantUser string) {
		t.Helper()
		if got, user := checkAsNewCaller(a, header); got != want || user != wantUser {
			t.Errorf("Check(%.40q) = %s, %q; want %s, %q", header, got, user, want, wantUser)
		}
	}
	f(bearer(gateway), OK, "")
	if got := reviews.LastAudiences(); !slices.Equal(got, []string{agentAudience}) {
		t.Errorf("spec.audiences = %q; want the agent's audience only", got)
	}
	f(bearer(otherUser), NotAllowed, "alice")
	f(bearer(apiAudience), BadToken, "")
	f(bearer(audienceUnaware), BadToken, "")
	f(bearer(gatewayJWT(4, time.Time{})), BadToken, "") // forged: the API server knows it not
	f(nil, Missing, "")
	f([]byte("Basic "+testutil.BasicAuth("scrapegate", "x")), Unsupported, "")
	f([]byte("Bearer a b"), Malformed, "")
	if got := reviews.Calls(); got != 5 {
		t.Errorf("%d TokenReviews; want 5, one per token that could pass", got)
	}
}

// TestTokenReviewFailedReviews: a review that fails is answered
// ReviewFailed, remembered for reviewErrorTTL (no TokenReview meanwhile),
// and the token is judged once the API server answers.
func TestTokenReviewFailedReviews(t *testing.T) {
	a, reviews, observed := newReviewing(t, time.Minute)
	token := gatewayJWT(1, time.Time{})
	caller := netip.MustParseAddr("10.0.0.1")
	f := func(at time.Duration, want Result, wantCalls int) {
		t.Helper()
		if got, _ := a.Check(bearer(token), caller, int64(at)); got != want {
			t.Errorf("at +%s: %s; want %s", at, got, want)
		}
		if got := reviews.Calls(); got != wantCalls {
			t.Errorf("at +%s: %d reviews so far; want %d", at, got, wantCalls)
		}
	}
	reviews.Fail(errors.New("connection refused"))
	f(0, ReviewFailed, 1)
	reviews.Fail(nil)
	reviews.Add(token, gatewaySA, agentAudience)
	f(reviewErrorTTL-1, ReviewFailed, 1)
	f(reviewErrorTTL, OK, 2)
	want := []string{"error cached=false", "error cached=true", "allowed cached=false"}
	if !slices.Equal(*observed, want) {
		t.Errorf("observed %q; want %q", *observed, want)
	}
}

// TestTokenReviewRefusesWithoutReview: a token that could not pass a
// review, by its form or its unverified claims, is refused without one,
// and charged to its caller; one that could is reviewed.
func TestTokenReviewRefusesWithoutReview(t *testing.T) {
	a, reviews, _ := newReviewing(t, time.Minute)
	now := time.Unix(1_800_000_000, 0)
	rs256 := map[string]string{"alg": "RS256"}
	f := func(token string, want Result) {
		t.Helper()
		calls := reviews.Calls()
		if got, _ := a.Check(bearer(token), netip.MustParseAddr("10.1.0.1"), now.UnixNano()); got != want {
			t.Errorf("%.60q: %s; want %s", token, got, want)
		}
		if want == RefusedUnreviewed && reviews.Calls() != calls {
			t.Errorf("%.60q was reviewed", token)
		}
		if want != RefusedUnreviewed && reviews.Calls() != calls+1 {
			t.Errorf("%.60q was not reviewed", token)
		}
	}
	a.Failures = callers.NewRateLimiter(1e-9, 100)
	f("not-a-token", RefusedUnreviewed)
	f("a.b.c", RefusedUnreviewed)
	valid := gatewayJWT(1, now.Add(time.Hour))
	f(valid+".x", RefusedUnreviewed)
	f(valid[:len(valid)-len(".bm90IGEgc2lnbmF0dXJl")], RefusedUnreviewed) // two parts
	f(valid[:len(valid)-len("bm90IGEgc2lnbmF0dXJl")], RefusedUnreviewed)  // no signature
	f(valid+"=", RefusedUnreviewed)                                       // padded: not base64url
	f(testutil.JWT(map[string]string{"alg": "none"}, map[string]any{"sub": gatewaySA, "aud": agentAudience}), RefusedUnreviewed)
	f(testutil.JWT(map[string]string{"typ": "JWT"}, map[string]any{"sub": gatewaySA, "aud": agentAudience}), RefusedUnreviewed)
	f(testutil.JWT("a header", map[string]any{"sub": gatewaySA, "aud": agentAudience}), RefusedUnreviewed)
	f(testutil.JWT(rs256, "claims"), RefusedUnreviewed)
	f(testutil.JWT(rs256, map[string]any{"sub": gatewaySA, "aud": 1}), RefusedUnreviewed)
	// The API server's own audience, or none.
	f(testutil.ServiceAccountJWT("scrapegate/scrapegate", now.Add(time.Hour), "https://kubernetes.default.svc"), RefusedUnreviewed)
	f(testutil.ServiceAccountJWT("scrapegate/scrapegate", now.Add(time.Hour)), RefusedUnreviewed)
	// Another ServiceAccount, or the same name in another namespace.
	f(testutil.ServiceAccountJWT("apps/web", now.Add(time.Hour), agentAudience), RefusedUnreviewed)
	f(testutil.ServiceAccountJWT("default/scrapegate", now.Add(time.Hour), agentAudience), RefusedUnreviewed)
	// Expired, at its exp or before.
	f(gatewayJWT(2, now), RefusedUnreviewed)
	f(gatewayJWT(3, now.Add(-time.Hour)), RefusedUnreviewed)

	// What could pass is asked about: aud as one string, a fractional
	// exp, no exp at all.
	f(testutil.JWT(rs256, map[string]any{"sub": gatewaySA, "aud": agentAudience}), BadToken)
	f(testutil.JWT(rs256, map[string]any{"sub": gatewaySA, "aud": []string{"x", agentAudience}, "exp": float64(now.Unix()) + 0.5}), BadToken)
	f(gatewayJWT(4, time.Time{}), BadToken)
	f(valid, BadToken)

	// Each new refused token is a failed login; the same one again, an
	// expired token a gateway keeps sending, is charged once.
	a, _, _ = newReviewing(t, time.Minute)
	caller := netip.MustParseAddr("10.2.0.1")
	for range 3 * loginFailureBurst {
		if got, _ := a.Check(bearer("junk-0"), caller, 0); got != RefusedUnreviewed {
			t.Fatalf("the same junk again: %s; want %s", got, RefusedUnreviewed)
		}
	}
	for i := 1; i < loginFailureBurst; i++ {
		if got, _ := a.Check(bearer(fmt.Sprintf("junk-%d", i)), caller, 0); got != RefusedUnreviewed {
			t.Fatalf("junk %d: %s; want %s", i, got, RefusedUnreviewed)
		}
	}
	if got, _ := a.Check(bearer("junk"), caller, 0); got != TooManyFailures {
		t.Errorf("junk past the budget: %s; want %s", got, TooManyFailures)
	}
}

// TestTokenReviewCache: a verdict is remembered for the TTL (a refusal
// for at most maxRefusalTTL) without asking the API server again, and
// asked again after.
func TestTokenReviewCache(t *testing.T) {
	a, reviews, observed := newReviewing(t, time.Minute)
	gateway := gatewayJWT(1, time.Time{})
	reviews.Add(gateway, gatewaySA, agentAudience)
	caller := netip.MustParseAddr("10.0.0.1")
	start := time.Now().UnixNano()
	f := func(at time.Duration, want Result, wantCalls int) {
		t.Helper()
		if got, _ := a.Check(bearer(gateway), caller, start+int64(at)); got != want {
			t.Errorf("at +%s: %s; want %s", at, got, want)
		}
		if got := reviews.Calls(); got != wantCalls {
			t.Errorf("at +%s: %d reviews so far; want %d", at, got, wantCalls)
		}
	}
	f(0, OK, 1)
	f(59*time.Second, OK, 1)
	// Revoked: trusted until the TTL is over, and not after.
	reviews.Remove(gateway)
	f(59*time.Second, OK, 1)
	f(60*time.Second, BadToken, 2)
	f(69*time.Second, BadToken, 2)
	// A refusal is remembered for maxRefusalTTL only: the token may have
	// become valid.
	reviews.Add(gateway, gatewaySA, agentAudience)
	f(70*time.Second, OK, 3)
	want := []string{"allowed cached=false", "allowed cached=true", "allowed cached=true", "unauthenticated cached=false", "unauthenticated cached=true", "allowed cached=false"}
	if !slices.Equal(*observed, want) {
		t.Errorf("observed %q; want %q", *observed, want)
	}
}

// TestTokenReviewTrustsNoTokenPastItsExpiry: an accepted token is
// remembered until its exp when that comes before the TTL is over, and
// refused after, without a review.
func TestTokenReviewTrustsNoTokenPastItsExpiry(t *testing.T) {
	a, reviews, _ := newReviewing(t, time.Minute)
	start := time.Unix(1_800_000_000, 0)
	token := gatewayJWT(1, start.Add(2*time.Second))
	reviews.Add(token, gatewaySA, agentAudience) // the fake does not look at exp
	caller := netip.MustParseAddr("10.0.0.1")
	f := func(at time.Duration, want Result) {
		t.Helper()
		if got, _ := a.Check(bearer(token), caller, start.Add(at).UnixNano()); got != want {
			t.Errorf("at +%s: %s; want %s", at, got, want)
		}
		if got := reviews.Calls(); got != 1 {
			t.Errorf("at +%s: %d reviews; want 1", at, got)
		}
	}
	f(0, OK)
	f(2*time.Second-1, OK)
	f(2*time.Second, RefusedUnreviewed)
	f(30*time.Second, RefusedUnreviewed)
}

// TestTokenReviewCachesAreBounded: past maxAllowedReviews accepted tokens
// the oldest is forgotten first, and only it; refusals, however many, do
// not make the agent forget an accepted token.
func TestTokenReviewCachesAreBounded(t *testing.T) {
	a, reviews, _ := newReviewing(t, time.Hour)
	a.Failures = callers.NewRateLimiter(1e-9, 2*maxRefusedReviews)
	caller := netip.MustParseAddr("10.0.0.1")
	check := func(token string, want Result) {
		t.Helper()
		if got, _ := a.Check(bearer(token), caller, 0); got != want {
			t.Fatalf("%.40q: %s; want %s", token, got, want)
		}
	}
	tokens := make([]string, maxAllowedReviews+1)
	for i := range tokens {
		tokens[i] = gatewayJWT(i, time.Time{})
		reviews.Add(tokens[i], gatewaySA, agentAudience)
		check(tokens[i], OK)
	}
	calls := reviews.Calls()
	check(tokens[1], OK)
	check(tokens[maxAllowedReviews], OK)
	if got := reviews.Calls(); got != calls {
		t.Fatalf("the newer tokens were reviewed again (%d reviews, want %d): they should be remembered", got, calls)
	}
	check(tokens[0], OK)
	if got := reviews.Calls(); got != calls+1 {
		t.Fatalf("the oldest token was not reviewed again (%d reviews, want %d): the cache holds more than %d", got, calls+1, maxAllowedReviews)
	}
	if n := len(a.reviewer.allowed.verdicts); n != maxAllowedReviews {
		t.Fatalf("%d accepted tokens remembered; want %d", n, maxAllowedReviews)
	}

	for i := range maxRefusedReviews + 1 {
		check(gatewayJWT(maxAllowedReviews+1+i, time.Time{}), BadToken) // unknown to the API server
	}
	calls = reviews.Calls()
	check(tokens[0], OK)
	check(tokens[maxAllowedReviews], OK)
	if got := reviews.Calls(); got != calls {
		t.Fatalf("accepted tokens were reviewed again after %d refusals: refusals made the agent forget them", maxRefusedReviews+1)
	}
	if n := len(a.reviewer.refused.verdicts); n != maxRefusedReviews {
		t.Fatalf("%d refusals remembered; want %d", n, maxRefusedReviews)
	}
}

// TestTokenReviewChargesRefusals: each new refused token is a failed
// login of its caller; past the budget the caller is refused before its
// token is reviewed, and a refusal remembered costs nothing more.
func TestTokenReviewChargesRefusals(t *testing.T) {
	a, reviews, _ := newReviewing(t, time.Minute)
	gateway, otherUser := gatewayJWT(1, time.Time{}), gatewayJWT(2, time.Time{})
	reviews.Add(gateway, gatewaySA, agentAudience)
	reviews.Add(otherUser, "alice", agentAudience)
	guesser, other := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	// The same refused token again and again: charged once.
	for range 3 * loginFailureBurst {
		if got, _ := a.Check(bearer(otherUser), guesser, 0); got != NotAllowed {
			t.Fatalf("another user's token: %s; want %s", got, NotAllowed)
		}
	}
	for i := 1; i < loginFailureBurst; i++ {
		if got, _ := a.Check(bearer(gatewayJWT(100+i, time.Time{})), guesser, 0); got != BadToken {
			t.Fatalf("guess %d: %s; want bad_token", i, got)
		}
	}
	calls := reviews.Calls()
	if got, _ := a.Check(bearer(gatewayJWT(99, time.Time{})), guesser, 0); got != TooManyFailures {
		t.Fatalf("a guess past the budget: %s; want too_many_failures", got)
	}
	if reviews.Calls() != calls {
		t.Fatal("a caller out of failed logins had its token reviewed")
	}
	if got, _ := a.Check(bearer(gateway), other, 0); got != OK {
		t.Fatalf("another caller: %s; want ok", got)
	}
}

// TestTokenReviewServesAcceptedTokensWhateverTheFailures: a neighbour
// behind the same address (here the same IPv6 /64) that used up the
// address's failed logins does not lock out a token already accepted;
// only tokens that need a review are refused for it.
func TestTokenReviewServesAcceptedTokensWhateverTheFailures(t *testing.T) {
	a, reviews, _ := newReviewing(t, time.Minute)
	gateway, rotated := gatewayJWT(1, time.Time{}), gatewayJWT(2, time.Time{})
	reviews.Add(gateway, gatewaySA, agentAudience)
	reviews.Add(rotated, gatewaySA, agentAudience)
	gw, neighbour := netip.MustParseAddr("fd00:1:2:3::a"), netip.MustParseAddr("fd00:1:2:3::b")
	if got, _ := a.Check(bearer(gateway), gw, 0); got != OK {
		t.Fatalf("the gateway's token: %s; want ok", got)
	}
	for i := range loginFailureBurst {
		a.Check(bearer(fmt.Sprintf("junk-%d", i)), neighbour, 0)
	}
	if got, _ := a.Check(bearer("junk"), neighbour, 0); got != TooManyFailures {
		t.Fatalf("the neighbour past its budget: %s; want too_many_failures", got)
	}
	if got, _ := a.Check(bearer(gateway), gw, 0); got != OK {
		t.Errorf("the gateway's accepted token after its neighbour's failures: %s; want ok", got)
	}
	if got, _ := a.Check(bearer(rotated), gw, 0); got != TooManyFailures {
		t.Errorf("a new token of the gateway from the same /64: %s; want too_many_failures", got)
	}
}

// TestTokenReviewChargesFailedReviewsOncePerToken: while the API server
// fails, a caller retrying one token is charged once however often it
// retries, and each new token it sends is charged.
func TestTokenReviewChargesFailedReviewsOncePerToken(t *testing.T) {
	a, reviews, _ := newReviewing(t, time.Minute)
	a.Failures = callers.NewRateLimiter(1e-9, 3) // no refill to speak of
	reviews.Fail(errors.New("connection refused"))
	caller := netip.MustParseAddr("10.0.0.1")
	for i := range 10 {
		at := int64(i) * int64(reviewErrorTTL)
		if got, _ := a.Check(bearer(gatewayJWT(1, time.Time{})), caller, at); got != ReviewFailed {
			t.Fatalf("retry %d: %s; want %s", i, got, ReviewFailed)
		}
	}
	if got := reviews.Calls(); got != 10 {
		t.Errorf("%d reviews for 10 retries each reviewErrorTTL apart; want 10", got)
	}
	now := 10 * int64(reviewErrorTTL)
	for i := range 2 {
		if got, _ := a.Check(bearer(gatewayJWT(2+i, time.Time{})), caller, now); got != ReviewFailed {
			t.Fatalf("new token %d: %s; want %s", i, got, ReviewFailed)
		}
	}
	if got, _ := a.Check(bearer(gatewayJWT(9, time.Time{})), caller, now); got != TooManyFailures {
		t.Errorf("a fourth token with a budget of 3: %s; want %s", got, TooManyFailures)
	}
}

// heldReviews holds each TokenReview until release is closed, telling
// started when one begins. (The fake clientset's reactors cannot: they
// run one at a time.)
type heldReviews struct {
	authenticationclient.TokenReviewInterface
	started, release chan struct{}
}

func (h *heldReviews) Create(ctx context.Context, tr *authenticationv1.TokenReview, o metav1.CreateOptions) (*authenticationv1.TokenReview, error) {
	h.started <- struct{}{}
	<-h.release
	return h.TokenReviewInterface.Create(ctx, tr, o)
}

// TestTokenReviewsInFlightAreBounded: past MaxReviewsInFlight reviews at
// once, a token that needs one gets ReviewsBusy without one; an accepted
// token is still served.
func TestTokenReviewsInFlightAreBounded(t *testing.T) {
	a, reviews, _ := newReviewing(t, time.Minute)
	accepted := gatewayJWT(0, time.Time{})
	reviews.Add(accepted, gatewaySA, agentAudience)
	if got, _ := a.Check(bearer(accepted), netip.MustParseAddr("10.0.0.1"), 0); got != OK {
		t.Fatalf("accepted token: %s; want ok", got)
	}
	held := &heldReviews{TokenReviewInterface: a.reviewer.Reviews, started: make(chan struct{}), release: make(chan struct{})}
	a.reviewer.Reviews = held
	results := make(chan Result, MaxReviewsInFlight)
	for i := 1; i <= MaxReviewsInFlight; i++ {
		token := gatewayJWT(i, time.Time{})
		reviews.Add(token, gatewaySA, agentAudience)
		go func() {
			r, _ := a.Check(bearer(token), netip.AddrFrom4([4]byte{10, 0, 1, byte(i)}), 0)
			results <- r
		}()
		<-held.started
	}
	refused := make(chan Result)
	go func() {
		r, _ := a.Check(bearer(gatewayJWT(99, time.Time{})), netip.MustParseAddr("10.0.2.1"), 0)
		refused <- r
	}()
	select {
	case r := <-refused:
		if r != ReviewsBusy {
			t.Errorf("a review past %d in flight: %s; want %s", MaxReviewsInFlight, r, ReviewsBusy)
		}
	case <-held.started:
		t.Errorf("a review past %d in flight was made", MaxReviewsInFlight)
		held.started = nil
	}
	if got, _ := a.Check(bearer(accepted), netip.MustParseAddr("10.0.0.1"), 0); got != OK {
		t.Errorf("an accepted token while the reviews are busy: %s; want ok", got)
	}
	close(held.release)
	for range MaxReviewsInFlight {
		if r := <-results; r != OK {
			t.Errorf("a review in flight: %s; want ok", r)
		}
	}
}
