package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authenticationclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
)

// Review is the verdict on one bearer token the API server was asked
// about (TokenReview), and a metric label.
type Review int

// The verdicts.
const (
	ReviewAllowed         Review = iota // a token of an allowed ServiceAccount, for one of the audiences
	ReviewUnauthenticated               // expired, revoked, forged, or for none of the audiences
	ReviewNotAllowed                    // a valid token of some other user or ServiceAccount
	ReviewError                         // the TokenReview itself failed: no verdict
	NumReviews                          // the number of verdicts, not one
)

var reviewNames = [NumReviews]string{"allowed", "unauthenticated", "serviceaccount_not_allowed", "error"}

// String returns the verdict's name, a metric label value.
func (r Review) String() string { return reviewNames[r] }

const (
	// maxAllowedReviews bounds the accepted tokens remembered, about 100
	// bytes each, and maxRefusedReviews the refused ones (and the reviews
	// that failed): past either the oldest of its kind is forgotten
	// first. Two caches, so that a flood of refusals cannot make the agent
	// forget the gateway's token.
	maxAllowedReviews = 1024
	maxRefusedReviews = 4096
	// maxRefusalTTL bounds how long a refusal is remembered: long enough
	// that a caller repeating a wrong token does not make the API server
	// review it per request, short enough that a token that was not valid
	// yet (a ServiceAccount created a moment ago) soon is.
	maxRefusalTTL = 10 * time.Second
	// reviewErrorTTL is how long a review that failed is remembered (its
	// callers get 503 without another TokenReview): the Retry-After they
	// are told.
	reviewErrorTTL = 5 * time.Second
	// reviewTimeout bounds one TokenReview: a caller waits for it.
	reviewTimeout = 5 * time.Second
	// MaxReviewsInFlight bounds the TokenReviews in flight at once,
	// whoever asked: past it a token that needs one gets ReviewsBusy
	// (503). Each caller has one at a time (callerTurns), so it takes this
	// many callers with new tokens at once; the gateway's tokens are
	// remembered and need none.
	MaxReviewsInFlight = 4
)

// TokenReviewOptions configure NewTokenReview.
type TokenReviewOptions struct {
	Reviews authenticationclient.TokenReviewInterface
	// Audiences are sent as spec.audiences; the review must return one of
	// them.
	Audiences []string
	// ServiceAccounts are the accounts, namespace/name, whose tokens are
	// accepted.
	ServiceAccounts []string
	// TTL is how long an accepted token is trusted without asking again:
	// a revoked token keeps working for up to that long.
	TTL time.Duration
	// Observe, if set, is told each verdict: cached when it was
	// remembered, and err, for ReviewError, why the review failed.
	Observe func(r Review, cached bool, err error)
}

// tokenReviewer checks bearer tokens by TokenReview, remembering verdicts
// by the token's SHA-256.
type tokenReviewer struct {
	TokenReviewOptions
	usernames []string    // the ServiceAccounts as the API server names their users
	allowed   reviewCache // accepted tokens
	refused   reviewCache // refused tokens, and reviews that failed
	inFlight  chan struct{}
}

// NewTokenReview returns an Authenticator that accepts the bearer tokens
// the API server vouches for by TokenReview: authenticated, for one of
// o.Audiences, as one of o.ServiceAccounts. A ServiceAccount's token
// bound to another audience, the API server's own included, is refused:
// a token the agent accepts is worth nothing anywhere else.
//
// A token that cannot pass is refused without a review (RefusedUnreviewed):
// one that is not a JWT, or whose claims, unverified, name another
// audience, another subject or an expiry that has passed. Unverified
// claims can refuse a token, never accept one. Every refused token is
// charged to its caller's failed logins (Failures), as a wrong password
// is, and so is a review that failed, once per token; a caller out of them
// gets TooManyFailures for every token but those already accepted. One the
// API server cannot judge (it is unreachable) gets ReviewFailed, never a
// refusal.
func NewTokenReview(o TokenReviewOptions) *Authenticator {
	r := &tokenReviewer{TokenReviewOptions: o, allowed: newReviewCache(maxAllowedReviews), refused: newReviewCache(maxRefusedReviews),
		inFlight: make(chan struct{}, MaxReviewsInFlight)}
	for _, sa := range o.ServiceAccounts {
		namespace, name, _ := strings.Cut(sa, "/")
		r.usernames = append(r.usernames, "system:serviceaccount:"+namespace+":"+name)
	}
	return &Authenticator{
		tokensConfigured: true,
		reviewer:         r,
		Failures:         newFailures(),
		challengeValues:  []string{bearerChallenge},
	}
}

// checkReviewed is Check of a bearer token for an Authenticator of
// NewTokenReview. user is the refused user's name for NotAllowed, for
// logs.
func (a *Authenticator) checkReviewed(token []byte, caller netip.Addr, now int64) (Result, string) {
	r := a.reviewer
	key := sha256.Sum256(token)
	if result, user, ok := a.rememberedVerdict(key, caller, now); ok {
		return result, user
	}
	c, ok := parseJWT(token)
	if !ok || !r.mayPass(&c, now) {
		r.refused.put(key, verdict{unreviewed: true, expires: now + int64(maxRefusalTTL)})
		a.Failures.Allow(caller, now)
		return RefusedUnreviewed, ""
	}
	unlock := a.turns.lock(caller)
	defer unlock()
	// While this check waited for its turn, the caller's others may have
	// reviewed this very token (a gateway scraping four components at
	// once), or used up its failed logins.
	if result, user, ok := a.rememberedVerdict(key, caller, now); ok {
		return result, user
	}
	select {
	case r.inFlight <- struct{}{}:
	default:
		return ReviewsBusy, ""
	}
	v, err := r.review(string(token))
	<-r.inFlight
	r.observe(v.review, false, err)
	switch v.review {
	case ReviewAllowed:
		// Never trusted past the token's expiry, which the review has
		// just verified.
		v.expires = now + int64(r.TTL)
		if c.Expiry != nil && *c.Expiry < float64(v.expires)/1e9 {
			v.expires = int64(*c.Expiry * 1e9)
		}
		r.allowed.put(key, v)
		return OK, ""
	case ReviewError:
		// Charged once per token, not per retry: a caller cannot make
		// the agent ask a failing API server for free.
		v.expires = now + int64(reviewErrorTTL)
		if prev, ok := r.refused.put(key, v); !ok || prev.review != ReviewError {
			a.Failures.Allow(caller, now)
		}
		return ReviewFailed, ""
	}
	v.expires = now + int64(min(r.TTL, maxRefusalTTL))
	r.refused.put(key, v)
	a.Failures.Allow(caller, now)
	return v.result(), v.user
}

// rememberedVerdict answers for the token whose SHA-256 is key without a
// review, if it can: ok is false when the token needs one.
func (a *Authenticator) rememberedVerdict(key [sha256.Size]byte, caller netip.Addr, now int64) (result Result, user string, ok bool) {
	r := a.reviewer
	// An accepted token is served whatever its caller's failed logins:
	// they may be a neighbour's behind the same address (an IPv6 /64, a
	// node's SNAT), and it costs the API server nothing.
	if r.allowedCached(key, now) {
		return OK, "", true
	}
	// As with passwords, a caller out of failed logins is refused before
	// anything else, remembered refusals included.
	if a.Failures.Wait(caller, now) > 0 {
		return TooManyFailures, "", true
	}
	if v, ok := r.refusedCached(key, now); ok {
		return v.result(), v.user, true
	}
	return 0, "", false
}

func (r *tokenReviewer) allowedCached(key [sha256.Size]byte, now int64) bool {
	_, ok := r.allowed.get(key, now)
	if ok {
		r.observe(ReviewAllowed, true, nil)
	}
	return ok
}

func (r *tokenReviewer) refusedCached(key [sha256.Size]byte, now int64) (verdict, bool) {
	v, ok := r.refused.get(key, now)
	if ok && !v.unreviewed {
		r.observe(v.review, true, nil)
	}
	return v, ok
}

// mayPass tells whether a token of claims c could pass a review at now:
// for one of the audiences, of one of the ServiceAccounts, not expired.
func (r *tokenReviewer) mayPass(c *claims, now int64) bool {
	return slices.ContainsFunc(c.Audience, func(a string) bool { return slices.Contains(r.Audiences, a) }) &&
		slices.Contains(r.usernames, c.Subject) &&
		(c.Expiry == nil || float64(now)/1e9 < *c.Expiry)
}

// claims are what the agent reads of a token's JWT payload, unverified.
type claims struct {
	Audience audiences `json:"aud"`
	Subject  string    `json:"sub"`
	Expiry   *float64  `json:"exp"` // a NumericDate, Unix seconds; nil: none
}

// audiences is a JWT's aud: one string, or an array of them.
type audiences []string

func (a *audiences) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = audiences{one}
		return nil
	}
	return json.Unmarshal(b, (*[]string)(a))
}

// parseJWT reads the claims of token, a JWT in compact serialisation:
// three base64url parts, a JSON header naming a signature algorithm, a
// JSON payload and a signature, which is not verified.
func parseJWT(token []byte) (claims, bool) {
	var c claims
	parts := bytes.Split(token, []byte("."))
	if len(parts) != 3 {
		return c, false
	}
	decoded := make([][]byte, 3)
	for i, p := range parts {
		b, err := base64.RawURLEncoding.Strict().DecodeString(string(p))
		if err != nil || len(b) == 0 {
			return c, false
		}
		decoded[i] = b
	}
	var header struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(decoded[0], &header) != nil || header.Alg == "" || strings.EqualFold(header.Alg, "none") {
		return c, false
	}
	if json.Unmarshal(decoded[1], &c) != nil {
		return c, false
	}
	return c, true
}

// review asks the API server about token.
func (r *tokenReviewer) review(token string) (verdict, error) {
	ctx, cancel := context.WithTimeout(context.Background(), reviewTimeout)
	defer cancel()
	tr, err := r.Reviews.Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: r.Audiences},
	}, metav1.CreateOptions{})
	switch {
	case err != nil:
		return verdict{review: ReviewError}, fmt.Errorf("cannot review a caller's token with the API server (TokenReview): %w", err)
	// An authenticator that is not audience-aware returns no audiences:
	// the token is then one for the API server, which the agent must not
	// take.
	case !tr.Status.Authenticated || !slices.ContainsFunc(tr.Status.Audiences, func(a string) bool { return slices.Contains(r.Audiences, a) }):
		return verdict{review: ReviewUnauthenticated}, nil
	case !slices.Contains(r.usernames, tr.Status.User.Username):
		return verdict{review: ReviewNotAllowed, user: tr.Status.User.Username}, nil
	}
	return verdict{review: ReviewAllowed}, nil
}

func (r *tokenReviewer) observe(v Review, cached bool, err error) {
	if r.Observe != nil {
		r.Observe(v, cached, err)
	}
}

// verdict is a remembered review.
type verdict struct {
	review     Review
	unreviewed bool   // refused without a review: review means nothing
	user       string // for ReviewNotAllowed
	expires    int64  // Unix nanoseconds
}

func (v *verdict) result() Result {
	if v.unreviewed {
		return RefusedUnreviewed
	}
	switch v.review {
	case ReviewAllowed:
		return OK
	case ReviewNotAllowed:
		return NotAllowed
	case ReviewError:
		return ReviewFailed
	}
	return BadToken
}

// reviewCache remembers the last verdicts, as many as its ring holds, by
// the token's SHA-256: the tokens themselves are not kept.
type reviewCache struct {
	mu       sync.Mutex
	verdicts map[[sha256.Size]byte]verdict
	ring     [][sha256.Size]byte // the oldest is forgotten first
	next     int
}

func newReviewCache(size int) reviewCache {
	return reviewCache{verdicts: make(map[[sha256.Size]byte]verdict), ring: make([][sha256.Size]byte, size)}
}

// get returns the verdict on key, if one is remembered that has not
// expired at now.
func (c *reviewCache) get(key [sha256.Size]byte, now int64) (verdict, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.verdicts[key]
	return v, ok && now < v.expires
}

// put remembers v for key, and returns the verdict it replaces, expired or
// not, if one was remembered.
func (c *reviewCache) put(key [sha256.Size]byte, v verdict) (verdict, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	prev, ok := c.verdicts[key]
	if !ok {
		if len(c.verdicts) == len(c.ring) {
			delete(c.verdicts, c.ring[c.next])
		}
		c.ring[c.next] = key
		c.next = (c.next + 1) % len(c.ring)
	}
	c.verdicts[key] = v
	return prev, ok
}
