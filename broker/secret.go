package broker

import (
	"fmt"
	"strconv"
)

// Secret holds a credential that never prints: fmt verbs, JSON, slog and
// even reflection over a struct that holds it (fmt's %+v of an unexported
// field, which cannot call methods) show "[redacted]" or a pointer, never
// the value. The zero Secret is empty. Make one with [NewSecret]; adapters
// call [Secret.Reveal] to use it.
type Secret struct {
	v *string // behind a pointer: reflection prints the address, not the text
}

const redacted = "[redacted]"

// NewSecret returns a Secret holding s.
func NewSecret(s string) Secret {
	if s == "" {
		return Secret{}
	}
	return Secret{v: &s}
}

// Reveal returns the secret itself, for the code that authenticates with it.
func (s Secret) Reveal() string {
	if s.v == nil {
		return ""
	}
	return *s.v
}

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.v == nil || *s.v == "" }

func (s Secret) shown() string {
	if s.IsZero() {
		return ""
	}
	return redacted
}

// String returns "[redacted]" ("" when empty).
func (s Secret) String() string { return s.shown() }

// GoString returns "[redacted]" quoted, for %#v.
func (s Secret) GoString() string { return strconv.Quote(s.shown()) }

// Format prints "[redacted]" whatever the verb.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(s.shown())) }

// MarshalText returns "[redacted]", so JSON and text encoders never leak it.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.shown()), nil }
