package contract_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLinksNoBrokerClient: a service (or a build step) writes its
// contracts without linking the RabbitMQ or Kafka client: this package
// needs events and broker only (the Kafka header names are kept equal to
// the adapter's by TestAsyncAPIKafkaHeadersAreTheAdapters).
func TestLinksNoBrokerClient(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	allowed := []string{
		"github.com/domainevents/domainevents/events",
		"github.com/domainevents/domainevents/broker",
		"github.com/domainevents/domainevents/internal/",
		"github.com/google/uuid",
	}
	for _, p := range strings.Fields(string(out)) {
		ok := false
		for _, a := range allowed {
			ok = ok || p == a || strings.HasPrefix(p, a+"/") || (strings.HasSuffix(a, "/") && strings.HasPrefix(p, a))
		}
		if !ok {
			t.Errorf("package contract depends on %s", p)
		}
	}
}
