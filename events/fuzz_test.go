package events_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/domainevents/domainevents/events"
)

// FuzzDecode: Decode never panics, every error has a category, and whatever
// decodes re-encodes and decodes to the same envelope.
func FuzzDecode(f *testing.F) {
	golden, _ := filepath.Glob(filepath.Join("testdata", "*.json"))
	for _, p := range golden {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		env, err := events.Decode(body)
		if err != nil {
			if !errors.Is(err, events.ErrMalformed) && !errors.Is(err, events.ErrInvalid) && !errors.Is(err, events.ErrUnknownEvent) {
				t.Fatalf("uncategorised error: %v", err)
			}
			return
		}
		out, err := events.Encode(env)
		if err != nil {
			t.Fatalf("decoded envelope does not encode: %v", err)
		}
		again, err := events.Decode(out)
		if err != nil {
			t.Fatalf("re-encoded body does not decode: %v\n%s", err, out)
		}
		out2, err := events.Encode(again)
		if err != nil || string(out) != string(out2) {
			t.Fatalf("not stable:\n%s\n%s (%v)", out, out2, err)
		}
	})
}
