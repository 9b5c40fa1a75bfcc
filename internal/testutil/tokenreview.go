package testutil

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// TokenReviews answers the TokenReviews of a fake clientset as the API
// server's ServiceAccount authenticator does: a token it was given is
// authenticated when one of its audiences is in spec.audiences, and
// status.audiences is what the two share. A token given no audiences
// stands for an authenticator that is not audience-aware: authenticated,
// with no audiences in the status.
type TokenReviews struct {
	mu        sync.Mutex
	tokens    map[string]reviewedToken
	err       error
	calls     int
	audiences [][]string // spec.audiences, one per review
}

type reviewedToken struct {
	username  string
	audiences []string
}

// FakeTokenReviews makes client answer TokenReviews.
func FakeTokenReviews(client *fake.Clientset) *TokenReviews {
	r := &TokenReviews{tokens: map[string]reviewedToken{}}
	client.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		spec := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview).Spec
		r.mu.Lock()
		defer r.mu.Unlock()
		r.calls++
		r.audiences = append(r.audiences, spec.Audiences)
		if r.err != nil {
			return true, nil, r.err
		}
		review := &authenticationv1.TokenReview{Spec: spec}
		tok, ok := r.tokens[spec.Token]
		shared := slices.DeleteFunc(slices.Clone(tok.audiences), func(a string) bool { return !slices.Contains(spec.Audiences, a) })
		if !ok || len(tok.audiences) > 0 && len(shared) == 0 {
			review.Status.Error = "invalid bearer token"
			return true, review, nil
		}
		review.Status = authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: shared,
			User: authenticationv1.UserInfo{Username: tok.username}}
		return true, review, nil
	})
	return r
}

// Add makes token authenticate as username for audiences.
func (r *TokenReviews) Add(token, username string, audiences ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tokens[token] = reviewedToken{username: username, audiences: audiences}
}

// Remove makes token unauthenticated, as a revoked one is.
func (r *TokenReviews) Remove(token string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.tokens, token)
}

// Fail makes every review fail with err, as an unreachable API server
// does; nil ends that.
func (r *TokenReviews) Fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
}

// Calls is how many reviews were asked for.
func (r *TokenReviews) Calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// LastAudiences is the spec.audiences of the last review.
func (r *TokenReviews) LastAudiences() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.audiences) == 0 {
		return nil
	}
	return r.audiences[len(r.audiences)-1]
}

// ServiceAccountJWT returns a token shaped as the API server's
// ServiceAccount tokens are, a JWT of the ServiceAccount namespace/name
// (sub system:serviceaccount:{namespace}:{name}) for audiences, expiring
// at exp (the zero time: no exp claim). Its signature is not one: only a
// TokenReviews fake can vouch for it (Add).
func ServiceAccountJWT(serviceAccount string, exp time.Time, audiences ...string) string {
	namespace, name, _ := strings.Cut(serviceAccount, "/")
	claims := map[string]any{"sub": "system:serviceaccount:" + namespace + ":" + name, "aud": audiences,
		"iss": "https://kubernetes.default.svc.cluster.local"}
	if !exp.IsZero() {
		claims["exp"] = exp.Unix()
	}
	return JWT(map[string]any{"alg": "RS256", "kid": "test"}, claims)
}

// JWT returns a JWT of header and claims with a made-up signature.
func JWT(header, claims any) string {
	part := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			panic(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return part(header) + "." + part(claims) + "." + base64.RawURLEncoding.EncodeToString([]byte("not a signature"))
}
