// Package auth checks callers' credentials: a bearer token from a file of
// tokens, or HTTP basic auth against an htpasswd file of bcrypt hashes, or
// either of the two when both files are set. Both files are reload.Files, so
// that secrets rotate without a restart. For the node agent it checks
// bearer tokens with the API server instead (TokenReview, tokenreview.go). It also owns the accounting of
// failed basic-auth logins, charged to the caller that made them, and the
// results of the client certificate checks the gateway makes (NoClientCert,
// ClientCertInvalid), so that every refused credential has one Result: one
// metric label and one text.
package auth

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/crypto/bcrypt"

	"github.com/scrapegate/scrapegate/gateway/callers"
	"github.com/scrapegate/scrapegate/gateway/reload"
)

// Result is the outcome of checking one request's credentials.
type Result int

// The results, in the order of their metric series.
const (
	OK                Result = iota
	Missing                  // no credentials at all
	Malformed                // an Authorization header that cannot be parsed (bad scheme syntax, bad base64, no ':' in basic)
	Unsupported              // a scheme that is not configured (e.g. Basic when only tokens are configured, or Digest)
	BadToken                 // bearer token not in the token file
	UnknownUser              // basic user not in htpasswd
	BadPassword              // basic user known, password wrong
	NoClientCert             // mTLS is on and the caller presented no certificate
	ClientCertInvalid        // the connection's client certificate expired or lost its CA
	Busy                     // too many bcrypt comparisons waiting: not judged (503)
	TooManyFailures          // basic auth from a caller out of failed logins: not judged (429)
	NotAllowed               // a valid token, of a ServiceAccount that is not allowed (403)
	ReviewFailed             // the API server could not review the token: not judged (503)
	RefusedUnreviewed        // not a token that could pass a TokenReview: refused without one (401)
	ReviewsBusy              // too many TokenReviews in flight: not judged (503)
	NumResults               // the number of results, not one
)

var resultNames = [NumResults]string{"ok", "missing", "malformed", "unsupported", "bad_token", "unknown_user", "bad_password", "client_cert_missing", "client_cert_invalid", "busy", "too_many_failures", "serviceaccount_not_allowed", "token_review_failed", "token_refused_unreviewed", "token_reviews_busy"}

// String returns the result's name, a metric label value.
func (r Result) String() string {
	if r < 0 || r >= NumResults {
		return fmt.Sprintf("auth.Result(%d)", int(r))
	}
	return resultNames[r]
}

// resultTexts are what a refusal says; they do not tell a wrong password
// from an unknown user.
var resultTexts = [NumResults]string{
	OK:                "ok",
	Missing:           "credentials required",
	Malformed:         "malformed Authorization header",
	Unsupported:       "authentication scheme not accepted",
	BadToken:          "invalid credentials",
	UnknownUser:       "invalid credentials",
	BadPassword:       "invalid credentials",
	NoClientCert:      "a client certificate is required",
	ClientCertInvalid: "the client certificate is no longer valid (expired, or its CA is no longer trusted); reconnect",
	Busy:              "too many password checks waiting; retry",
	TooManyFailures:   "too many failed logins from this address; retry later",
	NotAllowed:        "the token's ServiceAccount is not one this node agent serves (-allowed-serviceaccounts)",
	ReviewFailed:      "the token cannot be verified now: the TokenReview with the API server failed; retry",
	RefusedUnreviewed: "invalid credentials: not an unexpired ServiceAccount token (JWT) of -allowed-serviceaccounts for -token-audiences",
	ReviewsBusy:       "too many TokenReviews in flight on this node agent; retry",
}

// Text returns what the answer refusing the caller says about r, for the
// body of a 401, 403, 407, 429 or 503.
func (r Result) Text() string { return resultTexts[r] }

const (
	flagAuthBearerTokensFile = "auth-bearer-tokens-file"
	flagAuthHtpasswdFile     = "auth-htpasswd-file"

	bearerChallenge = `Bearer realm="scrapegate"`
	basicChallenge  = `Basic realm="scrapegate", charset="UTF-8"`

	// maxVerifiedPerUser bounds the credentials remembered per htpasswd
	// user. More than one can verify: bcrypt ignores what follows the
	// 72nd byte of a password.
	maxVerifiedPerUser = 4

	// A caller (an IPv4 address or IPv6 /64) may fail loginFailureBurst
	// basic-auth logins at once and loginFailuresPerMinute more a minute;
	// past that its basic-auth requests get 429 until its budget refills.
	// Prometheus with the right password never fails; a person who
	// mistypes gets ten tries, then one every six seconds.
	loginFailureBurst      = 10
	loginFailuresPerMinute = 10

	// maxFailedLogins bounds the failed credentials remembered per
	// htpasswd file version, about 100 bytes each.
	maxFailedLogins = 1024
)

// errEmptyAuthFile refuses a credentials file with nothing in it, which is
// more likely a write in progress than a decision. A file with only comments
// is a decision: it refuses every caller, which is how credentials are
// revoked all at once.
var errEmptyAuthFile = errors.New("the file is empty; to refuse every caller, leave a comment in it")

// Authenticator checks callers' credentials against the loaded files.
type Authenticator struct {
	tokensConfigured   bool
	htpasswdConfigured bool

	tokens atomic.Pointer[tokenSet]
	users  atomic.Pointer[htpasswdSet]

	// compare is bcrypt.CompareHashAndPassword; tests replace it to count
	// or hold comparisons.
	compare func(hash, password []byte) error

	// bcryptSem bounds the bcrypt computations in progress, so that a
	// flood of wrong passwords cannot take every core, and bcryptWaiting
	// the checks queued for one, so that the flood cannot pile up either.
	bcryptSem     chan struct{}
	bcryptWaiting atomic.Int32

	// turns lets each caller run one bcrypt comparison at a time, so that
	// one caller's flood holds at most one slot of bcryptSem and one place
	// in its queue, and waits behind itself instead of in front of others.
	turns callerTurns
	// reviewer checks bearer tokens instead of the tokens file; nil but
	// for NewTokenReview.
	reviewer *tokenReviewer
	// Failures charges failed basic-auth logins (and refused reviewed tokens) to the caller that made
	// them, whatever -caller-rate-limit says. The gateway sweeps it and
	// asks it how long a caller refused TooManyFailures has to wait (its
	// Retry-After); tests may replace it before the first Check.
	Failures *callers.RateLimiter

	challengeValues []string
}

// tokenSet is one loaded generation of the bearer tokens file.
type tokenSet struct {
	// hashes are the tokens' SHA-256: the tokens themselves are not kept.
	hashes [][sha256.Size]byte
}

// htpasswdSet is one loaded generation of the htpasswd file. The credentials
// its users remember belong to it, so a reload that changes the file forgets
// them all.
type htpasswdSet struct {
	users map[string]*htpasswdUser
	// dummyHash is what an unknown user's password is compared with. Its
	// cost is the highest in the file, so that an unknown user never
	// answers faster than a known one.
	dummyHash []byte
	// failed remembers credentials that failed, with who sent them.
	failed failedLogins
}

// failedLogins remembers the last maxFailedLogins credentials that failed
// and the caller that sent each, so that a caller repeating the same wrong
// credentials (a Prometheus job with a stale password) costs no bcrypt and
// is not charged again, and its other jobs keep logging in: only new
// guesses are charged. Keyed by caller, it tells a caller nothing about
// anyone else's logins.
type failedLogins struct {
	mu   sync.Mutex
	set  map[failedLogin]struct{}
	ring [maxFailedLogins]failedLogin // the oldest is forgotten first
	next int
}

type failedLogin struct {
	caller netip.Addr        // callers.Key
	key    [sha256.Size]byte // SHA-256(user "\x00" password)
}

func (f *failedLogins) contains(l failedLogin) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.set[l]
	return ok
}

func (f *failedLogins) add(l failedLogin) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.set[l]; ok {
		return
	}
	if f.set == nil {
		f.set = make(map[failedLogin]struct{})
	}
	if len(f.set) == maxFailedLogins {
		delete(f.set, f.ring[f.next])
	}
	f.ring[f.next] = l
	f.next = (f.next + 1) % maxFailedLogins
	f.set[l] = struct{}{}
}

type htpasswdUser struct {
	name string
	hash []byte

	// verified holds SHA-256(user "\x00" password) of passwords that
	// bcrypt verified, so that the next check of the same credentials
	// costs one hash, not one bcrypt. Read with Load; replaced under mu.
	verified atomic.Pointer[verifiedCreds]
	mu       sync.Mutex
}

type verifiedCreds struct {
	n    int
	next int
	keys [maxVerifiedPerUser][sha256.Size]byte
}

// New returns nil, nil when both paths are empty (no auth configured).
// Otherwise it returns the Authenticator and its files, which the caller
// loads (reload.LoadAll) and reloads: nothing is read here.
func New(bearerTokensFile, htpasswdFile string) (*Authenticator, []*reload.Files) {
	if bearerTokensFile == "" && htpasswdFile == "" {
		return nil, nil
	}
	a := &Authenticator{
		tokensConfigured:   bearerTokensFile != "",
		htpasswdConfigured: htpasswdFile != "",
		compare:            bcrypt.CompareHashAndPassword,
		bcryptSem:          make(chan struct{}, max(1, runtime.GOMAXPROCS(0))),
		Failures:           newFailures(),
	}
	var rs []*reload.Files
	if a.tokensConfigured {
		a.challengeValues = append(a.challengeValues, bearerChallenge)
		rs = append(rs, reload.New(flagAuthBearerTokensFile, a.loadTokens, bearerTokensFile))
	}
	if a.htpasswdConfigured {
		// Until the file is loaded, as with a file of comments: nobody to
		// tell apart, so the cheapest dummy will do.
		a.users.Store(&htpasswdSet{dummyHash: dummyHash(bcrypt.MinCost)})
		a.challengeValues = append(a.challengeValues, basicChallenge)
		rs = append(rs, reload.New(flagAuthHtpasswdFile, a.loadHtpasswd, htpasswdFile))
	}
	return a, rs
}

// newFailures is the failed-login budget of each caller.
func newFailures() *callers.RateLimiter {
	return callers.NewRateLimiter(loginFailuresPerMinute/60.0, loginFailureBurst)
}

// Challenges returns the WWW-Authenticate values to send with a 401, one
// per configured scheme. The slice is shared: do not modify it.
func (a *Authenticator) Challenges() []string {
	return a.challengeValues
}

// Check checks the value of one Authorization (or Proxy-Authorization)
// header that caller sent at now (Unix nanoseconds); header is empty when
// there is none. user is the basic-auth user name when one was presented,
// for logs, or the refused user of a NotAllowed token, else "". No secret
// is returned.
func (a *Authenticator) Check(header []byte, caller netip.Addr, now int64) (result Result, user string) {
	if len(header) == 0 {
		return Missing, ""
	}
	scheme, credentials, err := parseAuthorization(header)
	if err == errAuthEmpty || err == errAuthScheme {
		return Malformed, ""
	}
	// Credentials of an unsupported scheme are not looked at: a Digest
	// header is unsupported, not malformed.
	switch {
	case scheme == schemeBearer && a.tokensConfigured:
		if err != nil {
			return Malformed, ""
		}
		if a.reviewer != nil {
			return a.checkReviewed(credentials, caller, now)
		}
		return a.checkToken(credentials), ""
	case scheme == schemeBasic && a.htpasswdConfigured:
		if err != nil {
			return Malformed, ""
		}
		return a.checkBasic(credentials, caller, now)
	default:
		return Unsupported, ""
	}
}

func (a *Authenticator) checkToken(token []byte) Result {
	set := a.tokens.Load()
	if set == nil {
		return BadToken
	}
	sum := sha256.Sum256(token)
	// Compare with every token, without stopping at a match.
	match := 0
	for i := range set.hashes {
		match |= subtle.ConstantTimeCompare(sum[:], set.hashes[i][:])
	}
	if match != 1 {
		return BadToken
	}
	return OK
}

// basicBufSize fits the decoded credentials of any sane client, on the stack.
const basicBufSize = 256

func (a *Authenticator) checkBasic(credentials []byte, caller netip.Addr, now int64) (Result, string) {
	var buf [basicBufSize]byte
	decoded, sep, ok := decodeBasic(buf[:0], credentials)
	if !ok {
		return Malformed, ""
	}
	// A caller out of failed logins is refused before anything is
	// compared, remembered credentials included: otherwise it could go on
	// guessing at the cost of a SHA-256.
	if a.Failures.Wait(caller, now) > 0 {
		return TooManyFailures, ""
	}
	user, password := decoded[:sep], decoded[sep+1:]
	set := a.users.Load()
	u := set.users[string(user)]
	failure, hash, name := UnknownUser, set.dummyHash, ""
	if u != nil {
		failure, hash, name = BadPassword, u.hash, u.name
	} else {
		name = string(user)
	}
	// login.key = SHA-256(user "\x00" password): decoded is user ':' password.
	login := failedLogin{caller: callers.Key(caller)}
	decoded[sep] = 0
	login.key = sha256.Sum256(decoded)
	// remembered answers without a bcrypt comparison when it can.
	remembered := func() (Result, bool) {
		switch {
		case u != nil && u.isVerified(&login.key):
			return OK, true
		case set.failed.contains(login):
			return failure, true
		}
		return 0, false
	}
	if r, ok := remembered(); ok {
		return r, name
	}
	unlock := a.turns.lock(caller)
	defer unlock()
	// While this check waited for its turn, the caller's others may have
	// used up its failed logins, or checked these very credentials (a
	// Prometheus scraping many targets with the same password).
	if a.Failures.Wait(caller, now) > 0 {
		return TooManyFailures, ""
	}
	if r, ok := remembered(); ok {
		return r, name
	}
	// An unknown user's password is compared with the dummy hash, so that
	// the timing does not tell which users exist.
	switch err := a.bcrypt(hash, password); {
	case err == errBcryptBusy:
		return Busy, ""
	case u == nil || err != nil:
		a.Failures.Allow(caller, now)
		set.failed.add(login)
		return failure, name
	}
	u.remember(&login.key)
	return OK, name
}

// maxBcryptWaiting bounds the checks queued for a bcrypt slot: past it a
// check fails at once with errBcryptBusy instead of queueing behind a flood.
// With one comparison per caller at a time, it fills only when that many
// callers check passwords at once.
const maxBcryptWaiting = 64

var errBcryptBusy = errors.New("too many password checks waiting")

// bcrypt compares password with hash, waiting for a free slot first.
func (a *Authenticator) bcrypt(hash, password []byte) error {
	if a.bcryptWaiting.Add(1) > maxBcryptWaiting {
		a.bcryptWaiting.Add(-1)
		return errBcryptBusy
	}
	// A copy, so that the caller's buffer can stay on its stack.
	p := bytes.Clone(password)
	a.bcryptSem <- struct{}{}
	a.bcryptWaiting.Add(-1)
	defer func() { <-a.bcryptSem }()
	return a.compare(hash, p)
}

// callerTurns serialises the bcrypt comparisons of each caller, keyed like
// the rate limits (callers.Key).
type callerTurns struct {
	mu    sync.Mutex
	turns map[netip.Addr]*callerTurn // only callers with a check holding or waiting for a turn
}

type callerTurn struct {
	sync.Mutex     // held by the check whose turn it is
	checks     int // checks holding or waiting for the turn; under callerTurns.mu
}

// lock waits for caller's turn and returns the function that ends it.
func (c *callerTurns) lock(caller netip.Addr) (unlock func()) {
	key := callers.Key(caller)
	c.mu.Lock()
	if c.turns == nil {
		c.turns = make(map[netip.Addr]*callerTurn)
	}
	t := c.turns[key]
	if t == nil {
		t = new(callerTurn)
		c.turns[key] = t
	}
	t.checks++
	c.mu.Unlock()
	t.Lock()
	return func() {
		t.Unlock()
		c.mu.Lock()
		if t.checks--; t.checks == 0 {
			delete(c.turns, key)
		}
		c.mu.Unlock()
	}
}

func (u *htpasswdUser) isVerified(key *[sha256.Size]byte) bool {
	v := u.verified.Load()
	if v == nil {
		return false
	}
	match := 0
	for i := 0; i < v.n; i++ {
		match |= subtle.ConstantTimeCompare(key[:], v.keys[i][:])
	}
	return match == 1
}

func (u *htpasswdUser) remember(key *[sha256.Size]byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	old := u.verified.Load()
	v := new(verifiedCreds)
	if old != nil {
		*v = *old
		for i := 0; i < v.n; i++ {
			if v.keys[i] == *key {
				return
			}
		}
	}
	v.keys[v.next] = *key
	v.next = (v.next + 1) % maxVerifiedPerUser
	v.n = min(v.n+1, maxVerifiedPerUser)
	u.verified.Store(v)
}

// dummyHashes are the hashes, one per cost, that unknown users' passwords
// are compared with; each is made when a file first needs it.
var dummyHashes [bcrypt.MaxCost + 1]struct {
	once sync.Once
	hash []byte
}

func dummyHash(cost int) []byte {
	cost = min(max(cost, bcrypt.MinCost), bcrypt.MaxCost)
	d := &dummyHashes[cost]
	d.once.Do(func() {
		h, err := bcrypt.GenerateFromPassword([]byte("scrapegate: no such user"), cost)
		if err != nil {
			panic(fmt.Sprintf("BUG: cannot make a bcrypt hash: %s", err))
		}
		d.hash = h
	})
	return d.hash
}

// loadTokens parses a bearer tokens file: one token per line, blank lines
// and lines starting with '#' ignored.
func (a *Authenticator) loadTokens(contents [][]byte) error {
	set := &tokenSet{}
	seen := make(map[[sha256.Size]byte]bool)
	err := forEachLine(contents[0], func(n int, line []byte) error {
		if !isToken68(line) {
			return fmt.Errorf("line %d: not a valid token (allowed: letters, digits, '-', '.', '_', '~', '+', '/', then optional '=' padding)", n)
		}
		sum := sha256.Sum256(line)
		if !seen[sum] {
			seen[sum] = true
			set.hashes = append(set.hashes, sum)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(set.hashes) == 0 && len(bytes.TrimSpace(contents[0])) == 0 {
		return errEmptyAuthFile
	}
	a.tokens.Store(set)
	return nil
}

// loadHtpasswd parses an htpasswd file of bcrypt hashes: "user:hash" lines,
// blank lines and lines starting with '#' ignored.
func (a *Authenticator) loadHtpasswd(contents [][]byte) error {
	set := &htpasswdSet{users: make(map[string]*htpasswdUser)}
	firstLine := make(map[string]int)
	maxCost := bcrypt.MinCost
	err := forEachLine(contents[0], func(n int, line []byte) error {
		name, hash, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return fmt.Errorf("line %d: not user:hash", n)
		}
		if len(name) == 0 {
			return fmt.Errorf("line %d: empty user name", n)
		}
		if hasControl(name) {
			return fmt.Errorf("line %d: user %q: control character in the user name", n, name)
		}
		if first, dup := firstLine[string(name)]; dup {
			return fmt.Errorf("line %d: user %q: duplicate user, first on line %d", n, name, first)
		}
		if kind := nonBcryptKind(hash); kind != "" {
			return fmt.Errorf("line %d: user %q: unsupported password hash (%s): only bcrypt is supported, make one with htpasswd -B", n, name, kind)
		}
		cost, err := bcrypt.Cost(hash)
		if err == nil && len(hash) != 60 {
			err = errors.New("a bcrypt hash is 60 characters long")
		}
		if err != nil {
			return fmt.Errorf("line %d: user %q: invalid bcrypt hash: %w", n, name, err)
		}
		firstLine[string(name)] = n
		maxCost = max(maxCost, cost)
		set.users[string(name)] = &htpasswdUser{name: string(name), hash: bytes.Clone(hash)}
		return nil
	})
	if err != nil {
		return err
	}
	if len(set.users) == 0 && len(bytes.TrimSpace(contents[0])) == 0 {
		return errEmptyAuthFile
	}
	// Made here, not at the first unknown user, whose check would take
	// longer for it.
	set.dummyHash = dummyHash(maxCost)
	a.users.Store(set)
	return nil
}

// nonBcryptKind names the kind of a password hash that is not bcrypt, for
// the error message, or returns "" for a bcrypt hash.
func nonBcryptKind(hash []byte) string {
	switch {
	case bytes.HasPrefix(hash, []byte("$2a$")), bytes.HasPrefix(hash, []byte("$2b$")), bytes.HasPrefix(hash, []byte("$2y$")):
		return ""
	case bytes.HasPrefix(hash, []byte("$apr1$")):
		return "apr1 MD5"
	case bytes.HasPrefix(hash, []byte("{SHA}")):
		return "SHA-1"
	case bytes.HasPrefix(hash, []byte("$1$")):
		return "MD5 crypt"
	case bytes.HasPrefix(hash, []byte("$5$")), bytes.HasPrefix(hash, []byte("$6$")):
		return "SHA crypt"
	case bytes.HasPrefix(hash, []byte("$")):
		return "unknown scheme"
	default:
		return "crypt or plain text"
	}
}

// forEachLine calls f with the number and trimmed contents of each line of
// b that is neither blank nor a comment.
func forEachLine(b []byte, f func(n int, line []byte) error) error {
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf")) // a UTF-8 BOM
	for n := 1; len(b) > 0; n++ {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte("\n"))
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		if err := f(n, line); err != nil {
			return err
		}
	}
	return nil
}

// authScheme is the authentication scheme of an Authorization header.
type authScheme int

const (
	schemeOther authScheme = iota
	schemeBearer
	schemeBasic
)

var (
	errAuthEmpty         = errors.New("empty Authorization header")
	errAuthScheme        = errors.New("malformed authentication scheme")
	errAuthNoCredentials = errors.New("no credentials after the authentication scheme")
	errAuthCredentials   = errors.New("credentials are not a token68")
)

// parseAuthorization splits an Authorization header value into its scheme
// (case-insensitive, RFC 9110 §11.1) and its credentials, which must be a
// token68 (RFC 9110 §11.2). Leading and trailing spaces and tabs are
// trimmed; scheme and credentials are separated by spaces (tabs accepted
// too). When the scheme is well-formed it is returned even with an error
// about the credentials; the errors are sentinels, never wrapped.
func parseAuthorization(h []byte) (scheme authScheme, credentials []byte, err error) {
	h = trimSpaceTab(h)
	if len(h) == 0 {
		return schemeOther, nil, errAuthEmpty
	}
	i := 0
	for i < len(h) && h[i] != ' ' && h[i] != '\t' {
		if !isTchar[h[i]] {
			return schemeOther, nil, errAuthScheme
		}
		i++
	}
	name, credentials := h[:i], trimSpaceTab(h[i:])
	switch {
	case bytes.EqualFold(name, []byte("bearer")):
		scheme = schemeBearer
	case bytes.EqualFold(name, []byte("basic")):
		scheme = schemeBasic
	}
	if len(credentials) == 0 {
		return scheme, nil, errAuthNoCredentials
	}
	if !isToken68(credentials) {
		return scheme, nil, errAuthCredentials
	}
	return scheme, credentials, nil
}

// decodeBasic decodes basic credentials, standard base64 with or without
// padding, into dst's storage when it is large enough (a stack buffer keeps
// them off the heap), and returns them with the index of the first ':',
// which splits user and password. The user must be non-empty and free of
// control bytes; the password may be empty.
func decodeBasic(dst, credentials []byte) (decoded []byte, sep int, ok bool) {
	enc := base64.RawStdEncoding.Strict()
	if bytes.IndexByte(credentials, '=') >= 0 {
		enc = base64.StdEncoding.Strict()
	}
	if bytes.IndexByte(credentials, '\r') >= 0 || bytes.IndexByte(credentials, '\n') >= 0 {
		return nil, 0, false // the decoder would skip them
	}
	n := enc.DecodedLen(len(credentials))
	if cap(dst) < n {
		dst = make([]byte, 0, n)
	}
	dst = dst[:n]
	n, err := enc.Decode(dst, credentials)
	if err != nil {
		return nil, 0, false
	}
	decoded = dst[:n]
	sep = bytes.IndexByte(decoded, ':')
	if sep <= 0 || hasControl(decoded[:sep]) {
		return nil, 0, false
	}
	return decoded, sep, true
}

func trimSpaceTab(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// hasControl reports whether b holds an ASCII control byte.
func hasControl(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}

// isToken68 reports whether b is a token68: 1*( ALPHA / DIGIT / "-" / "." /
// "_" / "~" / "+" / "/" ) *"=".
func isToken68(b []byte) bool {
	i := 0
	for i < len(b) && isToken68Char[b[i]] {
		i++
	}
	if i == 0 {
		return false
	}
	for ; i < len(b); i++ {
		if b[i] != '=' {
			return false
		}
	}
	return true
}

var isToken68Char = byteSet("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/")

// isTchar holds the bytes of an RFC 9110 token.
var isTchar = byteSet("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~")

func byteSet(s string) (set [256]bool) {
	for i := 0; i < len(s); i++ {
		set[s[i]] = true
	}
	return set
}
