// Package testutil holds what the tests of several packages share, so that
// there is one copy of each: a test PKI (pki.go), an https pod (tlspod.go),
// credentials (credentials.go), files (files.go), loopback listeners
// (net.go), log capture (log.go), polling (wait.go) and a fake
// TokenReview API (tokenreview.go). Only tests import
// it, and it listens on loopback addresses only.
package testutil
