package events

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
)

// Money is an exact, non-negative amount in minor units (cents). It never
// goes through float arithmetic: it marshals as a JSON number with exactly two
// decimals (12550.00) and parses back to the same cents.
//
// The zero value is 0.00.
type Money struct {
	cents int64
}

// Cents returns m as a Money of the given minor units. Negative amounts are
// representable so that [Money.Validate] can report them; events refuse them.
func Cents(c int64) Money { return Money{cents: c} }

// ParseMoney parses a decimal amount such as "12550", "12550.5" or "12550.00".
// At most two decimals are accepted (more would not be exact in cents); signs,
// exponents, spaces and anything non-numeric are errors.
func ParseMoney(s string) (Money, error) {
	if s == "" {
		return Money{}, fmt.Errorf("money %q: empty", s)
	}
	orig, neg := s, false
	if s[0] == '-' {
		neg = true
		s = s[1:]
	}
	intPart, frac, hasDot := strings.Cut(s, ".")
	if intPart == "" || !allDigits(intPart) || (hasDot && (frac == "" || !allDigits(frac))) {
		return Money{}, fmt.Errorf("money %q: not a decimal number", orig)
	}
	if len(frac) > 2 {
		return Money{}, fmt.Errorf("money %q: more than two decimals", orig)
	}
	for len(frac) < 2 {
		frac += "0"
	}
	whole, err := strconv.ParseInt(intPart, 10, 64)
	if err != nil || whole > (math.MaxInt64-99)/100 {
		return Money{}, fmt.Errorf("money %q: out of range", orig)
	}
	f, _ := strconv.ParseInt(frac, 10, 64) // two digits, checked above
	c := whole*100 + f
	if neg {
		c = -c
	}
	return Money{cents: c}, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// MinorUnits returns the amount in cents.
func (m Money) MinorUnits() int64 { return m.cents }

// String formats m with two decimals, e.g. "12550.00".
func (m Money) String() string { return string(m.appendText(nil)) }

func (m Money) appendText(b []byte) []byte {
	c := m.cents
	if c < 0 {
		b = append(b, '-')
		if c == math.MinInt64 {
			// -MinInt64 overflows; spell it out.
			return append(b, "92233720368547758.08"...)
		}
		c = -c
	}
	b = strconv.AppendInt(b, c/100, 10)
	b = append(b, '.')
	r := c % 100
	if r < 10 {
		b = append(b, '0')
	}
	return strconv.AppendInt(b, r, 10)
}

// MarshalJSON writes m as a JSON number with two decimals.
func (m Money) MarshalJSON() ([]byte, error) { return m.appendText(nil), nil }

// JSONSchema describes Money on the wire, for the JSON Schema documents of
// package [github.com/domainevents/domainevents/events/contract]: a
// non-negative JSON number. The two decimals are in the description only:
// "multipleOf": 0.01 would be exact in a validator with decimal arithmetic
// but refuse amounts such as 12550.07 in the many that divide in floating
// point (JavaScript's, Python's).
func (Money) JSONSchema() map[string]any {
	return map[string]any{
		"type":        "number",
		"minimum":     0,
		"description": "An exact amount written with two decimals (12550.00); at most two decimals, never negative.",
		"examples":    []any{json.Number("12550.00")},
	}
}

// UnmarshalJSON reads a JSON number (12550, 12550.5, 12550.00). Strings,
// negative amounts and more than two decimals are errors; they come back as
// a *json.UnmarshalTypeError so that encoding/json names the field.
func (m *Money) UnmarshalJSON(b []byte) error {
	s := string(b)
	fail := func(kind, problem string) error {
		return &json.UnmarshalTypeError{Value: kind + " " + truncate(s) + ": " + problem, Type: reflect.TypeFor[Money]()}
	}
	if s == "null" || len(s) == 0 || s[0] == '"' || s[0] == '{' || s[0] == '[' || s == "true" || s == "false" {
		return fail("value", "not a number")
	}
	v, err := ParseMoney(s)
	switch {
	case err != nil:
		_, problem, _ := strings.Cut(err.Error(), ": ")
		return fail("number", problem)
	case v.cents < 0:
		return fail("number", "negative")
	}
	*m = v
	return nil
}

func truncate(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}
