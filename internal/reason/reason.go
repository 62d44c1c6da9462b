package reason

import (
	"fmt"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Line returns s on one line of at most limit bytes: each line break
// becomes "; ", tabs and other control characters a space, invalid UTF-8
// "?", and a longer text is cut at a character boundary and ends with
// "...".
func Line(s string, limit int) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c >= utf8.RuneSelf {
			clean = false
			break
		}
	}
	if clean && len(s) <= limit {
		return s
	}
	var b strings.Builder
	b.Grow(min(len(s), limit+1))
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		i += n
		switch {
		case r == '\r' && i < len(s) && s[i] == '\n':
			continue // the \n that follows writes the separator
		case r == '\n' || r == '\r':
			b.WriteString("; ")
		case r == utf8.RuneError && n == 1:
			b.WriteByte('?')
		case r < 0x20 || r == 0x7f:
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
		if b.Len() > limit {
			break
		}
	}
	out := b.String()
	if len(out) <= limit {
		return out
	}
	const more = "..."
	if limit < len(more) {
		return more[:max(limit, 0)]
	}
	cut := limit - len(more)
	for cut > 0 && !utf8.RuneStart(out[cut]) {
		cut--
	}
	return out[:cut] + more
}

// maxValue bounds the panic value's part of a [Panic]'s text.
const maxValue = 300

// Panic is a recovered panic as an error. Its text is one line, "<kind>:
// <value> at <function> (<file>:<line>)", naming the frame that panicked;
// the stack of the goroutine that panicked is kept for [Panic.PanicStack].
type Panic struct {
	kind  error
	what  string
	stack []byte
}

// NewPanic returns r as a *Panic matching kind (errors.Is). Call it in the
// deferred function that recovered r: the stack then still holds the
// frames that panicked.
func NewPanic(kind error, r any) *Panic {
	what := Line(fmt.Sprint(r), maxValue)
	if f, ok := panicFrame(); ok {
		what += " at " + f
	}
	return &Panic{kind: kind, what: what, stack: debug.Stack()}
}

// Error returns the one-line description.
func (p *Panic) Error() string { return p.kind.Error() + ": " + p.what }

// Unwrap returns the kind NewPanic was given.
func (p *Panic) Unwrap() error { return p.kind }

// PanicStack returns the stack of the goroutine that panicked, as
// runtime/debug.Stack formats it.
func (p *Panic) PanicStack() []byte { return p.stack }

// panicFrame names the frame that called panic (or faulted): the first
// frame below the deepest runtime.gopanic that is not the runtime's. The
// deepest: a deferred function that re-panics (an instrumentation wrapper)
// runs above the first panic, whose frames are still on the stack.
func panicFrame() (string, bool) {
	pcs := make([]uintptr, 128)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs)])
	var found string
	below := false
	for {
		f, more := frames.Next()
		switch {
		case f.Function == "runtime.gopanic":
			below, found = true, ""
		case below && found == "" && !strings.HasPrefix(f.Function, "runtime."):
			found = f.Function + " (" + filepath.Base(f.File) + ":" + strconv.Itoa(f.Line) + ")"
		}
		if !more {
			return found, found != ""
		}
	}
}

// Stacker is an error that carries the stack of a panic recovered below
// the code that returns it ([Panic], eventbus.HandlerError).
type Stacker interface {
	error
	PanicStack() []byte
}

// Stacks calls f for each error in err's tree that carries a panic's stack
// (a [Stacker] whose stack is not nil), without looking inside one that
// does: its stack is the panic's.
func Stacks(err error, f func(s Stacker)) {
	if err == nil {
		return
	}
	if s, ok := err.(Stacker); ok && s.PanicStack() != nil {
		f(s)
		return
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		Stacks(u.Unwrap(), f)
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			Stacks(e, f)
		}
	}
}
