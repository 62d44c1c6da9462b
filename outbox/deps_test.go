package outbox_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestOutboxKnowsOnlyTheContract keeps the package where the layering puts
// it: above the contract, below the bridge. It imports the standard
// library (database/sql, no driver), broker and broker/adapter, and
// internal packages; never events, eventbus, bridge or an adapter.
func TestOutboxKnowsOnlyTheContract(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	const mod = "github.com/domainevents/domainevents/"
	allowed := map[string]bool{mod + "outbox": true, mod + "broker": true, mod + "broker/adapter": true}
	for _, p := range strings.Fields(string(out)) {
		if allowed[p] || strings.HasPrefix(p, mod+"internal/") {
			continue
		}
		t.Errorf("package outbox depends on %s: it may use the contract and database/sql only", p)
	}
}
