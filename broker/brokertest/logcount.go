package brokertest

import (
	"context"
	"log/slog"
	"strings"
	"sync"
)

// LogCounter is a slog.Handler that counts records by the component they
// name (the "component" attribute, given to With or to the record) and
// level, and keeps their text: for tests that a loop logs what it should,
// as often as it should. Safe for concurrent use.
type LogCounter struct {
	mu    sync.Mutex
	n     map[string]int // "component LEVEL" -> records
	lines []string
}

// Count returns how many records component logged at level.
func (l *LogCounter) Count(component string, level slog.Level) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n[component+" "+level.String()]
}

// Most returns the largest number of records one component logged at
// level.
func (l *LogCounter) Most(level slog.Level) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	most := 0
	for k, n := range l.n {
		if strings.HasSuffix(k, " "+level.String()) {
			most = max(most, n)
		}
	}
	return most
}

// String returns every record, one a line.
func (l *LogCounter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// Enabled implements slog.Handler: every level.
func (l *LogCounter) Enabled(context.Context, slog.Level) bool { return true }

// Handle implements slog.Handler.
func (l *LogCounter) Handle(_ context.Context, r slog.Record) error { return l.add("", nil, r) }

// WithAttrs implements slog.Handler.
func (l *LogCounter) WithAttrs(as []slog.Attr) slog.Handler {
	return &logCounterWith{l: l, attrs: as}
}

// WithGroup implements slog.Handler (groups are not told apart).
func (l *LogCounter) WithGroup(string) slog.Handler { return l }

func (l *LogCounter) add(component string, attrs []slog.Attr, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	each := func(a slog.Attr) bool {
		if a.Key == "component" {
			component = a.Value.String()
		}
		b.WriteString(" " + a.String())
		return true
	}
	for _, a := range attrs {
		each(a)
	}
	r.Attrs(each)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n == nil {
		l.n = map[string]int{}
	}
	l.n[component+" "+r.Level.String()]++
	l.lines = append(l.lines, b.String())
	return nil
}

type logCounterWith struct {
	l     *LogCounter
	attrs []slog.Attr
}

func (w *logCounterWith) Enabled(context.Context, slog.Level) bool { return true }
func (w *logCounterWith) Handle(_ context.Context, r slog.Record) error {
	return w.l.add("", w.attrs, r)
}
func (w *logCounterWith) WithAttrs(as []slog.Attr) slog.Handler {
	return &logCounterWith{l: w.l, attrs: append(append([]slog.Attr(nil), w.attrs...), as...)}
}
func (w *logCounterWith) WithGroup(string) slog.Handler { return w }
