package reason_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/internal/reason"
)

func TestLine(t *testing.T) {
	for _, c := range []struct {
		name, in string
		limit    int
		want     string
	}{
		{"short and clean", "connection reset", 512, "connection reset"},
		{"line breaks", "a\nb\r\nc\rd", 512, "a; b; c; d"},
		{"tabs and control characters", "a\tb\x00c\x7fd", 512, "a b c d"},
		{"invalid UTF-8", "a\xffb", 512, "a?b"},
		{"cut", strings.Repeat("x", 20), 10, "xxxxxxx..."},
		{"cut at a character boundary", "ééééé", 8, "éé..."}, // é is 2 bytes
		{"tiny limit", "abcdef", 2, ".."},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := reason.Line(c.in, c.limit)
			assert.Equal(t, c.want, got)
			assert.LessOrEqual(t, len(got), c.limit)
			assert.True(t, utf8.ValidString(got))
		})
	}
}

var errKind = errors.New("handler panicked")

func recovered(f func()) (p *reason.Panic) {
	defer func() {
		if r := recover(); r != nil {
			p = reason.NewPanic(errKind, r)
		}
	}()
	f()
	return nil
}

func boom() { panic("boom\nsecond line") }

func nilMap() {
	var m map[string]int
	m["x"] = 1
}

// rewrapped re-panics from a deferred function, as an instrumentation
// wrapper does.
func rewrapped() {
	defer func() {
		if r := recover(); r != nil {
			panic(r)
		}
	}()
	boom()
}

func TestNewPanic(t *testing.T) {
	for _, c := range []struct {
		name  string
		f     func()
		value string
		frame string
	}{
		{"panic call", boom, "boom; second line", "reason_test.boom (reason_test.go:"},
		{"runtime fault", nilMap, "assignment to entry in nil map", "reason_test.nilMap (reason_test.go:"},
		{"re-panicked by a wrapper", rewrapped, "boom; second line", "reason_test.boom (reason_test.go:"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := recovered(c.f)
			require.NotNil(t, p)
			assert.ErrorIs(t, p, errKind)
			msg := p.Error()
			assert.True(t, strings.HasPrefix(msg, "handler panicked: "+c.value+" at "), msg)
			assert.Contains(t, msg, c.frame)
			assert.NotContains(t, msg, "\n")
			assert.Contains(t, string(p.PanicStack()), "goroutine ", "the stack is kept")
		})
	}
}

func TestNewPanicBoundsTheValue(t *testing.T) {
	p := recovered(func() { panic(strings.Repeat("v", 10_000)) })
	assert.Less(t, len(p.Error()), 512)
}

func TestStacks(t *testing.T) {
	p1 := recovered(boom)
	p2 := recovered(nilMap)
	err := fmt.Errorf("event x: %w", errors.Join(errors.New("plain"), fmt.Errorf("h1: %w", p1), p2))
	var got []string
	reason.Stacks(err, func(s reason.Stacker) { got = append(got, s.Error()) })
	assert.Equal(t, []string{p1.Error(), p2.Error()}, got)

	reason.Stacks(errors.New("no panic"), func(reason.Stacker) { t.Error("called for an error without a stack") })
	reason.Stacks(nil, func(reason.Stacker) { t.Error("called for nil") })
}
