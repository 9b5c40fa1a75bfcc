package auth

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/scrapegate/scrapegate/gateway/reload"
	"github.com/scrapegate/scrapegate/internal/testutil"
)

// newLoadedAuthenticator returns an authenticator with the given files'
// contents loaded ("" for no file) and its reloadables.
func newLoadedAuthenticator(t testing.TB, tokens, htpasswd string) (*Authenticator, []*reload.Files) {
	t.Helper()
	var tokensPath, htpasswdPath string
	if tokens != "" {
		tokensPath = testutil.TempFile(t, "tokens", []byte(tokens))
	}
	if htpasswd != "" {
		htpasswdPath = testutil.TempFile(t, "htpasswd", []byte(htpasswd))
	}
	a, rs := New(tokensPath, htpasswdPath)
	for _, r := range rs {
		if _, err := r.Reload(); err != nil {
			t.Fatalf("loading %s: %s", r.Flag(), err)
		}
	}
	return a, rs
}

// parseBasic is decodeBasic split into user and password, as checkBasic
// uses it.
func parseBasic(credentials []byte) (user, password []byte, ok bool) {
	decoded, sep, ok := decodeBasic(nil, credentials)
	if !ok {
		return nil, nil, false
	}
	return decoded[:sep], decoded[sep+1:], true
}

// countBcrypt counts a's bcrypt comparisons.
func countBcrypt(a *Authenticator) *atomic.Int64 {
	var n atomic.Int64
	orig := a.compare
	a.compare = func(hash, password []byte) error {
		n.Add(1)
		return orig(hash, password)
	}
	return &n
}

// newCallers numbers the addresses checkAsNewCaller checks from.
var newCallers atomic.Uint32

// checkAsNewCaller is a.check from an address that no check used before, so
// that tests of what verifies are not refused for the failures of earlier
// checks.
func checkAsNewCaller(a *Authenticator, header []byte) (Result, string) {
	n := newCallers.Add(1)
	return a.Check(header, netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}), 0)
}

func TestAuthResultString(t *testing.T) {
	f := func(r Result, want string) {
		t.Helper()
		if got := r.String(); got != want {
			t.Fatalf("Result(%d).String() = %q; want %q", int(r), got, want)
		}
	}
	f(OK, "ok")
	f(Missing, "missing")
	f(Malformed, "malformed")
	f(Unsupported, "unsupported")
	f(BadToken, "bad_token")
	f(UnknownUser, "unknown_user")
	f(BadPassword, "bad_password")
	f(NoClientCert, "client_cert_missing")
	f(ClientCertInvalid, "client_cert_invalid")
	f(Busy, "busy")
	f(TooManyFailures, "too_many_failures")
	f(NotAllowed, "serviceaccount_not_allowed")
	f(ReviewFailed, "token_review_failed")
	f(RefusedUnreviewed, "token_refused_unreviewed")
	f(ReviewsBusy, "token_reviews_busy")
	if NumResults != 15 {
		t.Fatalf("NumResults = %d; a result without a name?", NumResults)
	}
}

func TestParseAuthorization(t *testing.T) {
	ok := func(h string, wantScheme authScheme, wantCredentials string) {
		t.Helper()
		scheme, credentials, err := parseAuthorization([]byte(h))
		if err != nil {
			t.Fatalf("parseAuthorization(%q): unexpected error: %s", h, err)
		}
		if scheme != wantScheme || string(credentials) != wantCredentials {
			t.Fatalf("parseAuthorization(%q) = %v %q; want %v %q", h, scheme, credentials, wantScheme, wantCredentials)
		}
	}
	ok("Bearer abc", schemeBearer, "abc")
	ok("bearer abc", schemeBearer, "abc")
	ok("BEARER abc", schemeBearer, "abc")
	ok("bEaReR abc", schemeBearer, "abc")
	ok("Basic dTpw", schemeBasic, "dTpw")
	ok("basic dTpw", schemeBasic, "dTpw")
	ok("BASIC dTpw", schemeBasic, "dTpw")
	ok("Bearer    abc", schemeBearer, "abc")
	ok("Bearer\tabc", schemeBearer, "abc")
	ok("Bearer \t abc", schemeBearer, "abc")
	ok("  Bearer abc  ", schemeBearer, "abc")
	ok("\tBearer abc\t", schemeBearer, "abc")
	ok("Bearer abc \t ", schemeBearer, "abc")
	ok("Bearer A-Za-z0-9._~+/", schemeBearer, "A-Za-z0-9._~+/")
	ok("Bearer abc==", schemeBearer, "abc==")
	ok("Basic dTpw==", schemeBasic, "dTpw==")
	ok("Digest abc", schemeOther, "abc")
	ok("Bearerx abc", schemeOther, "abc")
	ok("Negotiate YII=", schemeOther, "YII=")

	bad := func(h string, wantScheme authScheme, wantErr error) {
		t.Helper()
		scheme, credentials, err := parseAuthorization([]byte(h))
		if err != wantErr {
			t.Fatalf("parseAuthorization(%q) = %v %q, %v; want error %v", h, scheme, credentials, err, wantErr)
		}
		if scheme != wantScheme || credentials != nil {
			t.Fatalf("parseAuthorization(%q) = %v %q; want %v and no credentials", h, scheme, credentials, wantScheme)
		}
	}
	bad("", schemeOther, errAuthEmpty)
	bad("   ", schemeOther, errAuthEmpty)
	bad("\t", schemeOther, errAuthEmpty)
	bad("Bearer", schemeBearer, errAuthNoCredentials)
	bad("Bearer ", schemeBearer, errAuthNoCredentials)
	bad("Bearer \t ", schemeBearer, errAuthNoCredentials)
	bad("Basic", schemeBasic, errAuthNoCredentials)
	bad("Bearer abc def", schemeBearer, errAuthCredentials)
	bad("Bearer abc\tdef", schemeBearer, errAuthCredentials)
	bad("Bearer abc\x00", schemeBearer, errAuthCredentials)
	bad("Bearer a\x00bc", schemeBearer, errAuthCredentials)
	bad("Bearer abc\r\n", schemeBearer, errAuthCredentials)
	bad("Bearer abc\x7f", schemeBearer, errAuthCredentials)
	bad("Bearer abc\x1b[31m", schemeBearer, errAuthCredentials)
	bad("Bearer a,b", schemeBearer, errAuthCredentials)
	bad("Bearer abc,", schemeBearer, errAuthCredentials)
	bad("Bearer abc=def", schemeBearer, errAuthCredentials)
	bad("Bearer ==", schemeBearer, errAuthCredentials)
	bad("Bearer \"abc\"", schemeBearer, errAuthCredentials)
	bad("Bearer abcé", schemeBearer, errAuthCredentials)
	bad("Bearer \xff", schemeBearer, errAuthCredentials)
	bad("Basic dTpw dTpw", schemeBasic, errAuthCredentials)
	bad(`Digest username="u", realm="r"`, schemeOther, errAuthCredentials)
	bad("Bea\x00rer abc", schemeOther, errAuthScheme)
	bad("Bearér abc", schemeOther, errAuthScheme)
	bad("Bearer: abc", schemeOther, errAuthScheme)
	bad("Bear(er) abc", schemeOther, errAuthScheme)
	bad("\x00", schemeOther, errAuthScheme)
	bad("=abc", schemeOther, errAuthScheme)
}

func TestParseBasic(t *testing.T) {
	ok := func(credentials, wantUser, wantPassword string) {
		t.Helper()
		user, password, ok := parseBasic([]byte(credentials))
		if !ok {
			t.Fatalf("parseBasic(%q) failed", credentials)
		}
		if string(user) != wantUser || string(password) != wantPassword {
			t.Fatalf("parseBasic(%q) = %q %q; want %q %q", credentials, user, password, wantUser, wantPassword)
		}
	}
	b64 := base64.StdEncoding.EncodeToString
	raw := base64.RawStdEncoding.EncodeToString
	ok(b64([]byte("prometheus:secret")), "prometheus", "secret")
	ok(raw([]byte("prometheus:secret")), "prometheus", "secret")
	ok(b64([]byte("u:p")), "u", "p")
	ok("dTpw", "u", "p") // no padding needed
	ok(b64([]byte("u:pa")), "u", "pa")
	ok(raw([]byte("u:pa")), "u", "pa")
	ok(b64([]byte("u:a:b:c")), "u", "a:b:c")
	ok(b64([]byte("u:")), "u", "")
	ok(raw([]byte("u:")), "u", "")
	ok(b64([]byte("u::")), "u", ":")
	ok(b64([]byte("ü ser:pass word")), "ü ser", "pass word")
	ok(b64([]byte("u:p\x00w")), "u", "p\x00w")
	ok(b64([]byte("u:"+strings.Repeat("x", 1000))), "u", strings.Repeat("x", 1000))

	bad := func(credentials string) {
		t.Helper()
		user, password, ok := parseBasic([]byte(credentials))
		if ok || user != nil || password != nil {
			t.Fatalf("parseBasic(%q) = %q %q %v; want a failure", credentials, user, password, ok)
		}
	}
	bad("")
	bad(b64([]byte(":p")))
	bad(b64([]byte(":")))
	bad(b64([]byte("up")))
	bad(b64([]byte("")))
	bad(b64([]byte("u\x00:p")))
	bad(b64([]byte("u\n:p")))
	bad(b64([]byte("u\x7f:p")))
	bad("!!!!")
	bad("dTpw=")    // wrong padding
	bad("dTpwYQ=")  // wrong padding
	bad("dTpwY")    // impossible length
	bad("dTpwYR==") // non-zero padding bits
	bad("dT\npw")
	bad("dT\rpw")
	bad("dTpw dTpw")
	bad("dT-w") // URL alphabet
}

func TestTokenFileLoad(t *testing.T) {
	ok := func(contents string, wantTokens int) {
		t.Helper()
		a, _ := New("unused", "")
		if err := a.loadTokens([][]byte{[]byte(contents)}); err != nil {
			t.Fatalf("loadTokens(%q): unexpected error: %s", contents, err)
		}
		if n := len(a.tokens.Load().hashes); n != wantTokens {
			t.Fatalf("loadTokens(%q): %d tokens; want %d", contents, n, wantTokens)
		}
	}
	ok("abc", 1)
	ok("abc\n", 1)
	ok("abc\ndef\n", 2)
	ok("abc\r\ndef\r\n", 2)
	ok("# comment\n\nabc\n   \n\t# indented comment\n  def  \n", 2)
	ok("abc\nabc\n", 1)
	ok("\xef\xbb\xbfabc\n", 1)
	ok("abc==\nA-Za-z0-9._~+/\n", 2)

	bad := func(contents, wantErr, secret string) {
		t.Helper()
		a, _ := New("unused", "")
		err := a.loadTokens([][]byte{[]byte(contents)})
		if err == nil {
			t.Fatalf("loadTokens(%q): no error; want %q", contents, wantErr)
		}
		if !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("loadTokens(%q) = %q; want an error containing %q", contents, err, wantErr)
		}
		if secret != "" && strings.Contains(err.Error(), secret) {
			t.Fatalf("loadTokens(%q) = %q: the error shows the token", contents, err)
		}
		if a.tokens.Load() != nil {
			t.Fatalf("loadTokens(%q) failed but put tokens in force", contents)
		}
	}
	bad("", "the file is empty", "")
	bad("\n\n", "the file is empty", "")
	bad("good\nsuper secret\n", "line 2: not a valid token", "super secret")
	bad("good\n\n# c\nsecret,with,commas\n", "line 4: not a valid token", "secret,with,commas")
	bad("Bearer s3cr3tvalue\n", "line 1: not a valid token", "s3cr3tvalue")
	bad("s3cr3t=value\n", "line 1: not a valid token", "s3cr3t")
	bad("s3cr3tvalué\n", "line 1: not a valid token", "s3cr3t")
}

func TestTokenCheck(t *testing.T) {
	a, _ := newLoadedAuthenticator(t, "# tokens\ntoken-one\r\ntoken/two==\n", "")
	f := func(header string, want Result) {
		t.Helper()
		got, user := checkAsNewCaller(a, []byte(header))
		if got != want || user != "" {
			t.Fatalf("check(%q) = %s %q; want %s \"\"", header, got, user, want)
		}
	}
	f("Bearer token-one", OK)
	f("bearer token-one", OK)
	f("  BEARER   token-one ", OK)
	f("Bearer token/two==", OK)
	f("", Missing)
	f("Bearer token-on", BadToken)
	f("Bearer token-one1", BadToken)
	f("Bearer token/two", BadToken)
	f("Bearer TOKEN-ONE", BadToken)
	f("Bearer", Malformed)
	f("Bearer token one", Malformed)
	f("Bearer token-one,", Malformed)
	f("   ", Malformed)
	f("B\x00 x", Malformed)
	f(testutil.BasicAuth("u", "token-one"), Unsupported)
	f("Basic !!", Unsupported)
	f(`Digest username="u", realm="scrapegate"`, Unsupported)
	f("Digest", Unsupported)
	f("Token token-one", Unsupported)

	if got := a.Challenges(); len(got) != 1 || got[0] != `Bearer realm="scrapegate"` {
		t.Fatalf("Challenges() = %q", got)
	}
}

func TestAuthNotConfigured(t *testing.T) {
	a, rs := New("", "")
	if a != nil || rs != nil {
		t.Fatalf("New(\"\", \"\") = %v, %v; want nil, nil", a, rs)
	}
}

func TestAuthReloadablesAndChallenges(t *testing.T) {
	f := func(tokens, htpasswd string, wantFlags, wantChallenges []string) {
		t.Helper()
		a, rs := New(tokens, htpasswd)
		var flags []string
		for _, r := range rs {
			flags = append(flags, r.Flag())
		}
		if fmt.Sprint(flags) != fmt.Sprint(wantFlags) {
			t.Fatalf("New(%q, %q): flags %q; want %q", tokens, htpasswd, flags, wantFlags)
		}
		if got := a.Challenges(); fmt.Sprintf("%q", got) != fmt.Sprintf("%q", wantChallenges) {
			t.Fatalf("New(%q, %q): challenges %q; want %q", tokens, htpasswd, got, wantChallenges)
		}
		// Nothing is read before the first reload: the files do not exist.
		if a.tokens.Load() != nil || a.users.Load() != nil && a.users.Load().users != nil {
			t.Fatalf("New(%q, %q) loaded something", tokens, htpasswd)
		}
	}
	bearer := `Bearer realm="scrapegate"`
	basic := `Basic realm="scrapegate", charset="UTF-8"`
	f("/nonexistent/tokens", "", []string{"auth-bearer-tokens-file"}, []string{bearer})
	f("", "/nonexistent/htpasswd", []string{"auth-htpasswd-file"}, []string{basic})
	f("/nonexistent/tokens", "/nonexistent/htpasswd", []string{"auth-bearer-tokens-file", "auth-htpasswd-file"}, []string{bearer, basic})
}

func TestAuthBothSchemes(t *testing.T) {
	a, _ := newLoadedAuthenticator(t, "tok\n", "prometheus:"+testutil.Bcrypt(t, "pw")+"\n")
	f := func(header string, want Result) {
		t.Helper()
		if got, _ := checkAsNewCaller(a, []byte(header)); got != want {
			t.Fatalf("check(%q) = %s; want %s", header, got, want)
		}
	}
	f("Bearer tok", OK)
	f(testutil.BasicAuth("prometheus", "pw"), OK)
	f("Bearer pw", BadToken)
	f(testutil.BasicAuth("prometheus", "tok"), BadPassword)
	f("Digest x", Unsupported)
	f("", Missing)
}

func TestHtpasswdLoad(t *testing.T) {
	hash := testutil.Bcrypt(t, "pw")
	ok := func(contents string, wantUsers ...string) {
		t.Helper()
		a, _ := New("", "unused")
		if err := a.loadHtpasswd([][]byte{[]byte(contents)}); err != nil {
			t.Fatalf("loadHtpasswd(%q): unexpected error: %s", contents, err)
		}
		set := a.users.Load()
		if len(set.users) != len(wantUsers) {
			t.Fatalf("loadHtpasswd(%q): %d users; want %q", contents, len(set.users), wantUsers)
		}
		for _, u := range wantUsers {
			if set.users[u] == nil {
				t.Fatalf("loadHtpasswd(%q): no user %q", contents, u)
			}
		}
	}
	ok("prometheus:"+hash, "prometheus")
	ok("# users\n\nprometheus:"+hash+"\r\nvmagent:"+hash+"\r\n", "prometheus", "vmagent")
	ok("  prometheus:"+hash+"  \n", "prometheus")
	ok("prometheus:"+strings.Replace(hash, "$2a$", "$2y$", 1), "prometheus")
	ok("prometheus:"+strings.Replace(hash, "$2a$", "$2b$", 1), "prometheus")
	ok("ü ser:"+hash, "ü ser")

	bad := func(contents string, wantErr ...string) {
		t.Helper()
		a, _ := New("", "unused")
		err := a.loadHtpasswd([][]byte{[]byte(contents)})
		if err == nil {
			t.Fatalf("loadHtpasswd(%q): no error; want %q", contents, wantErr)
		}
		for _, w := range wantErr {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("loadHtpasswd(%q) = %q; want an error containing %q", contents, err, w)
			}
		}
		if a.users.Load().users != nil {
			t.Fatalf("loadHtpasswd(%q) failed but put users in force", contents)
		}
	}
	onlyBcrypt := "only bcrypt is supported, make one with htpasswd -B"
	bad("", "the file is empty")
	bad(" \n\n", "the file is empty")
	bad("prometheus:$apr1$xyzxyzxy$3EaDQ9E0G1Y8Y4xQ9nUXb1\n", `line 1: user "prometheus"`, "apr1 MD5", onlyBcrypt)
	bad("a:"+hash+"\nprometheus:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n", `line 2: user "prometheus"`, "SHA-1", onlyBcrypt)
	bad("prometheus:plaintext\n", `line 1: user "prometheus"`, "crypt or plain text", onlyBcrypt)
	bad("prometheus:rl4ExWfqN7K/.\n", `line 1: user "prometheus"`, onlyBcrypt)
	bad("prometheus:$1$salt$hash\n", `line 1: user "prometheus"`, "MD5 crypt", onlyBcrypt)
	bad("prometheus:$6$salt$hash\n", `line 1: user "prometheus"`, "SHA crypt", onlyBcrypt)
	bad("prometheus:$2x$"+hash[4:], `line 1: user "prometheus"`, "unknown scheme", onlyBcrypt)
	bad("prometheus:\n", `line 1: user "prometheus"`, onlyBcrypt)
	bad("prometheus:"+hash[:40], `line 1: user "prometheus"`, "invalid bcrypt hash")
	bad("prometheus:"+hash+"x", `line 1: user "prometheus"`, "invalid bcrypt hash", "60 characters")
	bad("prometheus:$2a$99$"+hash[7:], `line 1: user "prometheus"`, "invalid bcrypt hash")
	bad("prometheus:"+hash+"\n# again\nprometheus:"+hash+"\n", `line 3: user "prometheus": duplicate user, first on line 1`)
	bad("prometheus\n", "line 1: not user:hash")
	bad(":"+hash+"\n", "line 1: empty user name")
	bad("pro\x1bmetheus:"+hash+"\n", "line 1: user", "control character")
}

func TestHtpasswdCheck(t *testing.T) {
	a, _ := newLoadedAuthenticator(t, "", "prometheus:"+testutil.Bcrypt(t, "s3cret")+"\nvmagent:"+testutil.Bcrypt(t, "other")+"\n")
	calls := countBcrypt(a)
	f := func(header string, want Result, wantUser string, wantBcrypt int64) {
		t.Helper()
		calls.Store(0)
		got, user := checkAsNewCaller(a, []byte(header))
		if got != want || user != wantUser {
			t.Fatalf("check(%q) = %s %q; want %s %q", header, got, user, want, wantUser)
		}
		if n := calls.Load(); n != wantBcrypt {
			t.Fatalf("check(%q) made %d bcrypt comparisons; want %d", header, n, wantBcrypt)
		}
	}
	f(testutil.BasicAuth("prometheus", "wrong"), BadPassword, "prometheus", 1)
	f(testutil.BasicAuth("prometheus", "S3CRET"), BadPassword, "prometheus", 1)
	f(testutil.BasicAuth("prometheus", ""), BadPassword, "prometheus", 1)
	f(testutil.BasicAuth("prometheus", "s3cret"), OK, "prometheus", 1)
	// Remembered: no bcrypt any more, whatever the header's spelling.
	f(testutil.BasicAuth("prometheus", "s3cret"), OK, "prometheus", 0)
	f(testutil.BasicAuth("prometheus", "s3cret"), OK, "prometheus", 0)
	f("basic "+strings.TrimRight(testutil.BasicAuth("prometheus", "s3cret")[6:], "="), OK, "prometheus", 0)
	// A wrong password is never remembered.
	f(testutil.BasicAuth("prometheus", "wrong"), BadPassword, "prometheus", 1)
	f(testutil.BasicAuth("prometheus", "wrong"), BadPassword, "prometheus", 1)
	// Each user's own credentials: prometheus's password is no good for vmagent.
	f(testutil.BasicAuth("vmagent", "s3cret"), BadPassword, "vmagent", 1)
	f(testutil.BasicAuth("vmagent", "other"), OK, "vmagent", 1)
	f(testutil.BasicAuth("vmagent", "other"), OK, "vmagent", 0)
	f(testutil.BasicAuth("prometheus", "other"), BadPassword, "prometheus", 1)
	// Unknown users cost a bcrypt comparison too.
	f(testutil.BasicAuth("nobody", "s3cret"), UnknownUser, "nobody", 1)
	f(testutil.BasicAuth("Prometheus", "s3cret"), UnknownUser, "Prometheus", 1)
	f(testutil.BasicAuth("prometheus ", "s3cret"), UnknownUser, "prometheus ", 1)
	// Malformed basic credentials are refused before any bcrypt.
	f("Basic", Malformed, "", 0)
	f("Basic !!!", Malformed, "", 0)
	f("Basic "+base64.StdEncoding.EncodeToString([]byte("prometheus")), Malformed, "", 0)
	f("Basic "+base64.StdEncoding.EncodeToString([]byte(":s3cret")), Malformed, "", 0)
	f("Basic "+base64.StdEncoding.EncodeToString([]byte("pro\x00metheus:s3cret")), Malformed, "", 0)
	f("Bearer s3cret", Unsupported, "", 0)
	f("", Missing, "", 0)

	if got := a.Challenges(); len(got) != 1 || got[0] != `Basic realm="scrapegate", charset="UTF-8"` {
		t.Fatalf("Challenges() = %q", got)
	}
}

// bcrypt ignores the bytes after the 72nd: several passwords may verify,
// and the memory of them stays bounded.
func TestBasicCacheIsBounded(t *testing.T) {
	prefix := strings.Repeat("p", 72)
	a, _ := newLoadedAuthenticator(t, "", "u:"+testutil.Bcrypt(t, prefix)+"\n")
	calls := countBcrypt(a)
	for i := range 10 {
		if got, _ := checkAsNewCaller(a, []byte(testutil.BasicAuth("u", fmt.Sprintf("%s%d", prefix, i)))); got != OK {
			t.Fatalf("check #%d = %s; want ok", i, got)
		}
	}
	if n := calls.Load(); n != 10 {
		t.Fatalf("%d bcrypt comparisons; want 10", n)
	}
	v := a.users.Load().users["u"].verified.Load()
	if v.n != maxVerifiedPerUser {
		t.Fatalf("%d credentials remembered; want %d", v.n, maxVerifiedPerUser)
	}
	// The most recent ones are remembered.
	calls.Store(0)
	for i := 10 - maxVerifiedPerUser; i < 10; i++ {
		if got, _ := checkAsNewCaller(a, []byte(testutil.BasicAuth("u", fmt.Sprintf("%s%d", prefix, i)))); got != OK {
			t.Fatalf("check #%d = %s; want ok", i, got)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("%d bcrypt comparisons for remembered credentials; want 0", n)
	}
}

// An unknown user's password is compared with a dummy hash at the highest
// cost in the file, so that it never answers faster than a known user.
func TestBasicUnknownUserDummyHash(t *testing.T) {
	// recordCosts makes a record in costs the cost of each of its bcrypt
	// comparisons.
	recordCosts := func(a *Authenticator, costs *[]int) {
		orig := a.compare
		a.compare = func(hash, password []byte) error {
			cost, err := bcrypt.Cost(hash)
			if err != nil {
				t.Errorf("bcrypt comparison with an invalid hash: %s", err)
			}
			*costs = append(*costs, cost)
			return orig(hash, password)
		}
	}
	f := func(htpasswd string, wantCost int) {
		t.Helper()
		var costs []int
		a, _ := newLoadedAuthenticator(t, "", htpasswd)
		recordCosts(a, &costs)
		for range 2 {
			if got, user := checkAsNewCaller(a, []byte(testutil.BasicAuth("nobody", "pw"))); got != UnknownUser || user != "nobody" {
				t.Fatalf("check = %s %q; want unknown_user \"nobody\"", got, user)
			}
		}
		if fmt.Sprint(costs) != fmt.Sprint([]int{wantCost, wantCost}) {
			t.Fatalf("bcrypt comparisons at costs %v; want two at %d", costs, wantCost)
		}
	}
	hashAt := func(cost int) string {
		h, err := bcrypt.GenerateFromPassword([]byte("pw"), cost)
		if err != nil {
			t.Fatal(err)
		}
		return string(h)
	}
	f("a:"+hashAt(bcrypt.MinCost)+"\n", bcrypt.MinCost)
	f("a:"+hashAt(5)+"\nb:"+hashAt(5)+"\nc:"+hashAt(bcrypt.MinCost)+"\n", 5)
	f("a:"+hashAt(5)+"\nb:"+hashAt(bcrypt.MinCost)+"\n", 5)
	// The highest cost, however rare.
	f("a:"+hashAt(bcrypt.MinCost)+"\nb:"+hashAt(bcrypt.MinCost)+"\nc:"+hashAt(6)+"\n", 6)
	f("a:"+hashAt(5)+"\nb:"+hashAt(6)+"\nc:"+hashAt(5)+"\n", 6)
	// Only comments: no user to tell apart, the cheapest dummy.
	f("# nobody\n", bcrypt.MinCost)

	// Before anything is loaded, as with only comments.
	var costs []int
	a, _ := New("", "/nonexistent")
	recordCosts(a, &costs)
	if got, _ := checkAsNewCaller(a, []byte(testutil.BasicAuth("nobody", "pw"))); got != UnknownUser {
		t.Fatalf("check before loading = %s; want unknown_user", got)
	}
	if fmt.Sprint(costs) != fmt.Sprint([]int{bcrypt.MinCost}) {
		t.Fatalf("bcrypt comparisons at costs %v; want one at %d", costs, bcrypt.MinCost)
	}
}

// No more bcrypt comparisons run at once than GOMAXPROCS, whoever asks.
func TestBasicBcryptConcurrencyIsBounded(t *testing.T) {
	a, _ := newLoadedAuthenticator(t, "", "u:"+testutil.Bcrypt(t, "pw")+"\n")
	var running, peak atomic.Int64
	orig := a.compare
	a.compare = func(hash, password []byte) error {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		return orig(hash, password)
	}

	limit := int64(runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i := range 8 * limit {
		wg.Go(func() {
			if got, _ := checkAsNewCaller(a, []byte(testutil.BasicAuth("u", fmt.Sprint("wrong", i)))); got != BadPassword {
				t.Errorf("check = %s; want bad_password", got)
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p > limit || p < 1 {
		t.Fatalf("up to %d bcrypt comparisons at once; want 1 to %d", p, limit)
	}
}

// A caller flooding wrong passwords gets 401s, then 429s, and runs one
// bcrypt comparison at a time, while another caller's good logins, none of
// them remembered, all succeed during the flood.
func TestBasicFailedLoginsAreChargedToTheCaller(t *testing.T) {
	const goodUsers = 51
	var htpasswd strings.Builder
	htpasswd.WriteString("a:" + testutil.Bcrypt(t, "right") + "\n")
	for i := range goodUsers {
		fmt.Fprintf(&htpasswd, "b%d:%s\n", i, testutil.Bcrypt(t, fmt.Sprint("pw", i)))
	}
	a, _ := newLoadedAuthenticator(t, "", htpasswd.String())
	// Two slots, whatever GOMAXPROCS: one for the flood's comparison held
	// below, one for the good caller.
	a.bcryptSem = make(chan struct{}, 2)
	callerA, callerB := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8:1:2::b")
	// The flood's comparisons (passwords starting with "wrong") are held
	// until released, so that the good caller's logins all happen while
	// the flood is on.
	floodStarted := make(chan struct{}, 1)
	release := make(chan struct{})
	var floodRunning, floodPeak, floodComparisons atomic.Int64
	orig := a.compare
	a.compare = func(hash, password []byte) error {
		if strings.HasPrefix(string(password), "wrong") {
			n := floodRunning.Add(1)
			defer floodRunning.Add(-1)
			floodComparisons.Add(1)
			for p := floodPeak.Load(); n > p && !floodPeak.CompareAndSwap(p, n); p = floodPeak.Load() {
			}
			select {
			case floodStarted <- struct{}{}:
			default:
			}
			<-release
		}
		return orig(hash, password)
	}

	const flood = 100
	floodResults := make(chan Result, flood)
	for i := range flood {
		user := "a"
		if i%2 == 1 {
			user = "nobody" // unknown users are charged alike
		}
		go func() {
			r, _ := a.Check([]byte(testutil.BasicAuth(user, fmt.Sprint("wrong", i))), callerA, 0)
			floodResults <- r
		}()
	}
	<-floodStarted

	var wg sync.WaitGroup
	for i := range goodUsers {
		wg.Go(func() {
			if r, _ := a.Check([]byte(testutil.BasicAuth(fmt.Sprint("b", i), fmt.Sprint("pw", i))), callerB, 0); r != OK {
				t.Errorf("good login b%d during the flood: %s; want ok", i, r)
			}
		})
	}
	wg.Wait()

	close(release)
	got := make(map[Result]int)
	for range flood {
		got[<-floodResults]++
	}
	if got[BadPassword]+got[UnknownUser] != loginFailureBurst || got[TooManyFailures] != flood-loginFailureBurst {
		t.Fatalf("the flood's results: %v; want %d bad_password or unknown_user, then too_many_failures", got, loginFailureBurst)
	}
	if n, p := floodComparisons.Load(), floodPeak.Load(); n != loginFailureBurst || p != 1 {
		t.Fatalf("the flood made %d bcrypt comparisons, up to %d at once; want %d, one at a time", n, p, loginFailureBurst)
	}
	// Out of failures, the flooding caller is refused even the right
	// password, until its budget refills; the other caller is not.
	if r, _ := a.Check([]byte(testutil.BasicAuth("a", "right")), callerA, 0); r != TooManyFailures {
		t.Fatalf("the right password from the flooding caller: %s; want too_many_failures", r)
	}
	if r, _ := a.Check([]byte(testutil.BasicAuth("b0", "pw0")), callerB, 0); r != OK {
		t.Fatalf("the good caller after the flood: %s; want ok", r)
	}
	if r, _ := a.Check([]byte(testutil.BasicAuth("a", "right")), callerA, int64(time.Minute)); r != OK {
		t.Fatalf("the right password a minute later: %s; want ok", r)
	}
}

// A caller that repeats the same wrong credentials, such as a Prometheus
// job with a stale password, costs one bcrypt comparison and one failed
// login per file version, so that its other jobs keep logging in; only new
// guesses are charged.
func TestBasicRepeatedFailureIsChargedOnce(t *testing.T) {
	a, rs := newLoadedAuthenticator(t, "", "prom:"+testutil.Bcrypt(t, "right")+"\n")
	calls := countBcrypt(a)
	prometheus, other := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	f := func(caller netip.Addr, user, password string, want Result, wantBcrypt int64) {
		t.Helper()
		calls.Store(0)
		if got, _ := a.Check([]byte(testutil.BasicAuth(user, password)), caller, 0); got != want {
			t.Fatalf("check(%s:%s) from %s = %s; want %s", user, password, caller, got, want)
		}
		if n := calls.Load(); n != wantBcrypt {
			t.Fatalf("check(%s:%s) from %s made %d bcrypt comparisons; want %d", user, password, caller, n, wantBcrypt)
		}
	}
	// Many more repeats than failed logins allowed, some at once.
	var wg sync.WaitGroup
	for range 5 * loginFailureBurst {
		wg.Go(func() {
			if got, _ := a.Check([]byte(testutil.BasicAuth("prom", "stale")), prometheus, 0); got != BadPassword {
				t.Errorf("a stale password = %s; want bad_password", got)
			}
			if got, _ := a.Check([]byte(testutil.BasicAuth("gone", "stale")), prometheus, 0); got != UnknownUser {
				t.Errorf("a removed user = %s; want unknown_user", got)
			}
		})
	}
	wg.Wait()
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d bcrypt comparisons for two stale credentials repeated; want 2", n)
	}
	f(prometheus, "prom", "stale", BadPassword, 0)
	f(prometheus, "prom", "right", OK, 1)
	// The memory is the caller's own: another caller's try is judged.
	f(other, "prom", "stale", BadPassword, 1)
	// New guesses are charged: 2 failures so far, 8 to go.
	for i := range loginFailureBurst - 2 {
		f(prometheus, "prom", fmt.Sprint("guess", i), BadPassword, 1)
	}
	f(prometheus, "prom", "stale", TooManyFailures, 0)
	f(prometheus, "prom", "right", TooManyFailures, 0)

	// A new file version may make the stale password right: it is
	// forgotten.
	testutil.WriteFile(t, rs[0].Paths()[0], []byte("prom:"+testutil.Bcrypt(t, "stale")+"\n"))
	if _, err := rs[0].Reload(); err != nil {
		t.Fatal(err)
	}
	f(other, "prom", "stale", OK, 1)
}

func TestFailedLoginsAreBounded(t *testing.T) {
	var f failedLogins
	login := func(i int) failedLogin {
		return failedLogin{caller: netip.MustParseAddr("192.0.2.1"), key: [sha256.Size]byte{byte(i), byte(i >> 8)}}
	}
	for i := range maxFailedLogins + 10 {
		f.add(login(i))
		f.add(login(i)) // a repeat takes no room
	}
	if len(f.set) != maxFailedLogins {
		t.Fatalf("%d failed logins remembered; want %d", len(f.set), maxFailedLogins)
	}
	for i := range 10 {
		if f.contains(login(i)) {
			t.Fatalf("failed login %d of %d is still remembered; the oldest go first", i, maxFailedLogins+10)
		}
	}
	for i := 10; i < maxFailedLogins+10; i++ {
		if !f.contains(login(i)) {
			t.Fatalf("failed login %d forgotten", i)
		}
	}
}

func TestTokenReload(t *testing.T) {
	a, rs := newLoadedAuthenticator(t, "token-a\n", "")
	r := rs[0]
	f := func(header string, want Result) {
		t.Helper()
		if got, _ := checkAsNewCaller(a, []byte(header)); got != want {
			t.Fatalf("check(%q) = %s; want %s", header, got, want)
		}
	}
	f("Bearer token-a", OK)
	f("Bearer token-b", BadToken)

	path := r.Paths()[0]
	testutil.WriteFile(t, path, []byte("token-b\n"))
	if changed, err := r.Reload(); !changed || err != nil {
		t.Fatalf("reload() = %v, %v; want true, nil", changed, err)
	}
	f("Bearer token-a", BadToken)
	f("Bearer token-b", OK)

	// Unchanged: nothing loaded.
	if changed, err := r.Reload(); changed || err != nil {
		t.Fatalf("reload() of an unchanged file = %v, %v; want false, nil", changed, err)
	}

	// Invalid contents: an error naming the line, not the token; B stays.
	testutil.WriteFile(t, path, []byte("token-c\ns3cr3t value\n"))
	changed, err := r.Reload()
	if changed || err == nil || !strings.Contains(err.Error(), "line 2") || strings.Contains(err.Error(), "s3cr3t") || !strings.Contains(err.Error(), "auth-bearer-tokens-file") {
		t.Fatalf("reload() of an invalid file = %v, %v; want an error naming the flag and line 2 only", changed, err)
	}
	f("Bearer token-b", OK)
	f("Bearer token-c", BadToken)

	// Empty, as in the middle of a write: an error; B stays.
	testutil.WriteFile(t, path, nil)
	if changed, err := r.Reload(); changed || err == nil || !strings.Contains(err.Error(), "the file is empty") {
		t.Fatalf("reload() of an empty file = %v, %v; want an error", changed, err)
	}
	f("Bearer token-b", OK)

	// Gone: an error; B stays.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if changed, err := r.Reload(); changed || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("reload() of a removed file = %v, %v; want a not-exist error", changed, err)
	}
	f("Bearer token-b", OK)
	f("Bearer token-a", BadToken)

	// Back with a new token.
	testutil.WriteFile(t, path, []byte("token-d\n"))
	if changed, err := r.Reload(); !changed || err != nil {
		t.Fatalf("reload() = %v, %v; want true, nil", changed, err)
	}
	f("Bearer token-b", BadToken)
	f("Bearer token-d", OK)
	// Only comments: a decision to refuse everyone.
	testutil.WriteFile(t, path, []byte("# all revoked\n"))
	if changed, err := r.Reload(); !changed || err != nil {
		t.Fatalf("reload() of a file with only comments = %v, %v; want true, nil", changed, err)
	}
	f("Bearer token-d", BadToken)
}

func TestHtpasswdReload(t *testing.T) {
	a, rs := newLoadedAuthenticator(t, "", "prometheus:"+testutil.Bcrypt(t, "old")+"\nvmagent:"+testutil.Bcrypt(t, "vm")+"\n")
	calls := countBcrypt(a)
	r := rs[0]
	f := func(user, password string, want Result) {
		t.Helper()
		if got, _ := checkAsNewCaller(a, []byte(testutil.BasicAuth(user, password))); got != want {
			t.Fatalf("check(%s:%s) = %s; want %s", user, password, got, want)
		}
	}
	f("prometheus", "old", OK)
	f("vmagent", "vm", OK)
	calls.Store(0)
	f("prometheus", "old", OK) // remembered
	if n := calls.Load(); n != 0 {
		t.Fatalf("%d bcrypt comparisons for remembered credentials; want 0", n)
	}

	// A new password, and vmagent removed: the remembered credentials are
	// forgotten at once.
	testutil.WriteFile(t, r.Paths()[0], []byte("prometheus:"+testutil.Bcrypt(t, "new")+"\n"))
	if changed, err := r.Reload(); !changed || err != nil {
		t.Fatalf("reload() = %v, %v; want true, nil", changed, err)
	}
	f("prometheus", "old", BadPassword)
	f("vmagent", "vm", UnknownUser)
	f("prometheus", "new", OK)

	// A bad file keeps the last good one, with what it remembers.
	calls.Store(0)
	testutil.WriteFile(t, r.Paths()[0], []byte("prometheus:$apr1$xyzxyzxy$3EaDQ9E0G1Y8Y4xQ9nUXb1\n"))
	if changed, err := r.Reload(); changed || err == nil || !strings.Contains(err.Error(), "htpasswd -B") {
		t.Fatalf("reload() of an MD5 file = %v, %v; want an error", changed, err)
	}
	f("prometheus", "new", OK)
	if n := calls.Load(); n != 0 {
		t.Fatalf("%d bcrypt comparisons after a failed reload; want 0", n)
	}
	if err := os.Remove(r.Paths()[0]); err != nil {
		t.Fatal(err)
	}
	if changed, err := r.Reload(); changed || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("reload() of a removed file = %v, %v; want a not-exist error", changed, err)
	}
	f("prometheus", "new", OK)
	f("prometheus", "old", BadPassword)
}

// Checks running while the files change see either the old or the new
// contents. Run with -race.
func TestAuthConcurrentReload(t *testing.T) {
	hashA, hashB := testutil.Bcrypt(t, "pw-a"), testutil.Bcrypt(t, "pw-b")
	tokensA, htpasswdA := "token-a\n", "u:"+hashA+"\n"
	tokensB, htpasswdB := "token-b\n", "u:"+hashB+"\n"
	a, rs := newLoadedAuthenticator(t, tokensA, htpasswdA)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	headers := []string{"Bearer token-a", "Bearer token-b", testutil.BasicAuth("u", "pw-a"), testutil.BasicAuth("u", "pw-b")}
	var oks atomic.Int64
	for i := range 8 {
		wg.Go(func() {
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				h := headers[(i+j)%len(headers)]
				got, _ := checkAsNewCaller(a, []byte(h))
				switch got {
				case OK:
					oks.Add(1)
				case BadToken, BadPassword:
				default:
					t.Errorf("check(%q) = %s", h, got)
					return
				}
			}
		})
	}
	for i := range 50 {
		tokens, htpasswd := tokensA, htpasswdA
		if i%2 == 1 {
			tokens, htpasswd = tokensB, htpasswdB
		}
		testutil.WriteFile(t, rs[0].Paths()[0], []byte(tokens))
		testutil.WriteFile(t, rs[1].Paths()[0], []byte(htpasswd))
		for _, r := range rs {
			if _, err := r.Reload(); err != nil {
				t.Errorf("reload: %s", err)
			}
		}
	}
	close(stop)
	wg.Wait()
	if oks.Load() == 0 {
		t.Fatal("no check succeeded")
	}
	// The last generation is B.
	for h, want := range map[string]Result{
		"Bearer token-a": BadToken, "Bearer token-b": OK,
		testutil.BasicAuth("u", "pw-a"): BadPassword, testutil.BasicAuth("u", "pw-b"): OK,
	} {
		if got, _ := checkAsNewCaller(a, []byte(h)); got != want {
			t.Fatalf("check(%q) = %s; want %s", h, got, want)
		}
	}
}

// The common case, a remembered or valid credential, allocates nothing.
func TestAuthCheckAllocs(t *testing.T) {
	a, _ := newLoadedAuthenticator(t, "token-a\n", "prometheus:"+testutil.Bcrypt(t, "pw")+"\n")
	f := func(header string, want Result) {
		t.Helper()
		h := []byte(header)
		caller := netip.MustParseAddr("192.0.2.1")
		if got, _ := a.Check(h, caller, 0); got != want {
			t.Fatalf("check(%q) = %s; want %s", header, got, want)
		}
		if n := testing.AllocsPerRun(100, func() { a.Check(h, caller, 0) }); n != 0 {
			t.Fatalf("check(%q): %v allocations; want 0", header, n)
		}
	}
	f("Bearer token-a", OK)
	f("Bearer token-b", BadToken)
	f(testutil.BasicAuth("prometheus", "pw"), OK)
	f("", Missing)
	f("Digest x", Unsupported)
}

func FuzzParseAuthorization(f *testing.F) {
	for _, seed := range []string{
		"Bearer abc",
		"bearer   abc==",
		"\tBasic dTpw\t",
		testutil.BasicAuth("prometheus", "s3cret"),
		testutil.BasicAuth("u", "a:b:c"),
		testutil.BasicAuth("u", ""),
		"Basic " + base64.StdEncoding.EncodeToString([]byte("u\x00:p")),
		"Basic " + base64.StdEncoding.EncodeToString([]byte(":p")),
		"Basic " + base64.RawStdEncoding.EncodeToString([]byte("user:pw")),
		"Basic dTpw=",
		"Basic ====",
		"Basic !!!!",
		`Digest username="u", realm="r", nonce="n"`,
		"Negotiate YII=",
		"",
		" ",
		"Bearer",
		"Bearer ",
		"Bearer a b",
		"Bearer a\x00b",
		"Bearer a\r\nX-Injected: 1",
		"Bearer a,b",
		"Bearer \xff\xfe",
		"Bea\x00rer x",
		"Bearér x",
		"=",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, h []byte) {
		orig := bytes.Clone(h)
		scheme, credentials, err := parseAuthorization(h)
		if !bytes.Equal(h, orig) {
			t.Fatalf("parseAuthorization(%q) modified its input", orig)
		}
		if err != nil {
			if credentials != nil {
				t.Fatalf("parseAuthorization(%q) = %q with error %v", h, credentials, err)
			}
			return
		}
		if len(credentials) == 0 || !isToken68(credentials) {
			t.Fatalf("parseAuthorization(%q): credentials %q are not a token68", h, credentials)
		}
		for _, c := range credentials {
			if !isToken68Char[c] && c != '=' {
				t.Fatalf("parseAuthorization(%q): byte %q in the credentials", h, c)
			}
		}
		if scheme != schemeBasic {
			return
		}
		user, password, ok := parseBasic(credentials)
		if !ok {
			if user != nil || password != nil {
				t.Fatalf("parseBasic(%q) failed but returned %q %q", credentials, user, password)
			}
			return
		}
		if len(user) == 0 || hasControl(user) || bytes.IndexByte(user, ':') >= 0 {
			t.Fatalf("parseBasic(%q): user %q", credentials, user)
		}
		// What was decoded encodes back to the same credentials.
		decoded := append(append(append([]byte{}, user...), ':'), password...)
		enc := base64.StdEncoding.EncodeToString(decoded)
		if string(credentials) != enc && string(credentials) != strings.TrimRight(enc, "=") {
			t.Fatalf("parseBasic(%q) = %q %q, which encodes to %q", credentials, user, password, enc)
		}
	})
}

func TestBasicBcryptQueueIsBounded(t *testing.T) {
	a, _ := newLoadedAuthenticator(t, "", "prom:"+testutil.Bcrypt(t, "right")+"\n")
	// Every comparison blocks until released: the slots fill, then the
	// queue, and the next check fails at once instead of waiting. Each
	// check comes from a caller of its own: one caller takes one slot or
	// place in the queue at most.
	started := make(chan struct{}, 1024)
	release := make(chan struct{})
	orig := a.compare
	a.compare = func(hash, password []byte) error {
		started <- struct{}{}
		<-release
		return orig(hash, password)
	}

	slots := cap(a.bcryptSem)
	results := make(chan Result, slots+maxBcryptWaiting)
	for range slots + maxBcryptWaiting {
		go func() {
			r, _ := checkAsNewCaller(a, []byte(testutil.BasicAuth("prom", "wrong")))
			results <- r
		}()
	}
	for range slots {
		<-started
	}
	// The queued ones are counted before they block on the semaphore.
	for a.bcryptWaiting.Load() != maxBcryptWaiting {
		runtime.Gosched()
	}
	if r, _ := checkAsNewCaller(a, []byte(testutil.BasicAuth("prom", "wrong"))); r != Busy {
		t.Fatalf("with %d comparisons running and %d queued: %s; want busy", slots, maxBcryptWaiting, r)
	}
	if r, _ := checkAsNewCaller(a, []byte(testutil.BasicAuth("nobody", "wrong"))); r != Busy {
		t.Fatalf("an unknown user with a full queue: %s; want busy", r)
	}
	close(release)
	for range slots + maxBcryptWaiting {
		if r := <-results; r != BadPassword {
			t.Fatalf("a queued check: %s; want bad_password", r)
		}
	}
}
