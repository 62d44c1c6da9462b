// Package testenv holds the module's test-tier switch.
//
// The README's test command (go test -race ./...) runs the behaviour tests:
// quick enough for a busy two-core machine. The long tier (fault injection
// through long outages, crash tests that SIGKILL processes, RabbitMQ
// clusters, soaks) runs only when DOMAINEVENTS_LONG_TESTS=1, which CI
// (.ci/run) sets:
//
//	DOMAINEVENTS_LONG_TESTS=1 go test -race -timeout 60m ./...
//
// A long test calls [Long] first. A test whose size makes it long (events,
// orders, processes) runs a quick variant in the default tier and its full
// size in the long tier: n := testenv.Count(2_000, 20_000).
package testenv

import (
	"os"
	"testing"
)

// LongEnv is the variable that turns the long tier on.
const LongEnv = "DOMAINEVENTS_LONG_TESTS"

// LongEnabled reports whether the long tier runs.
func LongEnabled() bool {
	v := os.Getenv(LongEnv)
	return v != "" && v != "0" && v != "false"
}

// Long skips t unless the long tier is on. what says what the test does
// that makes it long ("a 5-minute broker outage", "SIGKILLs relays").
func Long(t testing.TB, what string) {
	t.Helper()
	if !LongEnabled() {
		t.Skipf("long test (%s): runs with %s=1 (CI sets it)", what, LongEnv)
	}
}

// Count returns full in the long tier, quick otherwise: the size (events,
// orders) of a test that runs a quick variant by default.
func Count(quick, full int) int {
	if LongEnabled() {
		return full
	}
	return quick
}
