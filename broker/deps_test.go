package broker_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestContractKnowsNoDomain keeps the contract at the bottom of the module:
// broker imports the standard library only (and internal/ packages), never
// events, eventbus, an adapter or a decorator.
func TestContractKnowsNoDomain(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	const self = "github.com/domainevents/domainevents/broker"
	for _, p := range strings.Fields(string(out)) {
		if p == self || strings.HasPrefix(p, "github.com/domainevents/domainevents/internal/") {
			continue
		}
		t.Errorf("package broker depends on %s: the contract must know no domain, adapter or third-party package", p)
	}
}
