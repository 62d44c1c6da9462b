package health_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestStandardLibraryOnly: a service can serve its probes without linking
// anything but the standard library through this package.
func TestStandardLibraryOnly(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if p != "github.com/domainevents/domainevents/health" {
			t.Errorf("package health depends on %s: it must use the standard library only", p)
		}
	}
}
