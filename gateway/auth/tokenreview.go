package auth

import (
	"context"
	"crypto/sha256"
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
	// maxCachedReviews bounds the verdicts remembered, about 100 bytes
	// each; past it the oldest is forgotten first.
	maxCachedReviews = 4096
	// maxRefusalTTL bounds how long a refusal is remembered: long enough
	// that a caller repeating a wrong token does not make the API server
	// review it per request, short enough that a token that was not valid
	// yet (a ServiceAccount created a moment ago) soon is.
	maxRefusalTTL = 10 * time.Second
	// reviewTimeout bounds one TokenReview: a caller waits for it.
	reviewTimeout = 5 * time.Second
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
	usernames []string // the ServiceAccounts as the API server names their users
	cache     reviewCache
}

// NewTokenReview returns an Authenticator that accepts the bearer tokens
// the API server vouches for by TokenReview: authenticated, for one of
// o.Audiences, as one of o.ServiceAccounts. A ServiceAccount's token
// bound to another audience, the API server's own included, is refused:
// a token the agent accepts is worth nothing anywhere else. A new token
// that is refused is charged to its caller's failed logins (Failures), as
// a wrong password is; one the API server cannot judge (it is
// unreachable) gets ReviewFailed, never a refusal.
func NewTokenReview(o TokenReviewOptions) *Authenticator {
	r := &tokenReviewer{TokenReviewOptions: o}
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
	// As with passwords, a caller out of failed logins is refused before
	// anything, remembered tokens included.
	if a.Failures.Wait(caller, now) > 0 {
		return TooManyFailures, ""
	}
	key := sha256.Sum256(token)
	if v, ok := r.cache.get(key, now); ok {
		r.observe(v.review, true, nil)
		return v.result(), v.user
	}
	unlock := a.turns.lock(caller)
	defer unlock()
	// While this check waited for its turn, the caller's others may have
	// used up its failed logins, or reviewed this very token (a gateway
	// scraping four components at once).
	if a.Failures.Wait(caller, now) > 0 {
		return TooManyFailures, ""
	}
	if v, ok := r.cache.get(key, now); ok {
		r.observe(v.review, true, nil)
		return v.result(), v.user
	}
	v, err := r.review(string(token))
	r.observe(v.review, false, err)
	if v.review == ReviewError {
		return ReviewFailed, ""
	}
	ttl := r.TTL
	if v.review != ReviewAllowed {
		ttl = min(ttl, maxRefusalTTL)
		a.Failures.Allow(caller, now)
	}
	v.expires = now + int64(ttl)
	r.cache.put(key, v)
	return v.result(), v.user
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
	review  Review
	user    string // for ReviewNotAllowed
	expires int64  // Unix nanoseconds
}

func (v *verdict) result() Result {
	switch v.review {
	case ReviewAllowed:
		return OK
	case ReviewNotAllowed:
		return NotAllowed
	}
	return BadToken
}

// reviewCache remembers the last maxCachedReviews verdicts by the token's
// SHA-256: the tokens themselves are not kept.
type reviewCache struct {
	mu       sync.Mutex
	verdicts map[[sha256.Size]byte]verdict
	ring     [maxCachedReviews][sha256.Size]byte // the oldest is forgotten first
	next     int
}

// get returns the verdict on key, if one is remembered that has not
// expired at now.
func (c *reviewCache) get(key [sha256.Size]byte, now int64) (verdict, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.verdicts[key]
	return v, ok && now < v.expires
}

func (c *reviewCache) put(key [sha256.Size]byte, v verdict) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.verdicts == nil {
		c.verdicts = make(map[[sha256.Size]byte]verdict)
	}
	if _, ok := c.verdicts[key]; !ok {
		if len(c.verdicts) == maxCachedReviews {
			delete(c.verdicts, c.ring[c.next])
		}
		c.ring[c.next] = key
		c.next = (c.next + 1) % maxCachedReviews
	}
	c.verdicts[key] = v
}
