package testutil

import (
	"encoding/base64"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// Bcrypt returns a bcrypt hash of password for an htpasswd file, at the
// minimum cost, for speed.
func Bcrypt(t testing.TB, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// BasicAuth returns the value of an Authorization header with the HTTP
// basic credentials user and password.
func BasicAuth(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}
