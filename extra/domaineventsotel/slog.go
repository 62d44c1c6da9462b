package domaineventsotel

import (
	"context"
	"log/slog"
	"os"

	"go.opentelemetry.io/otel/trace"
)

// Keys of the attributes [NewLogHandler] adds.
const (
	// LogKeyTraceID is the trace id, 32 hex digits.
	LogKeyTraceID = "trace_id"
	// LogKeySpanID is the span id, 16 hex digits.
	LogKeySpanID = "span_id"
)

// NewLogHandler returns a slog.Handler that adds trace_id and span_id (hex,
// as in traceparent) to every record logged with a ctx that carries a valid
// span (slog.InfoContext(ctx, ...), logger.ErrorContext(ctx, ...)), and
// otherwise passes records to next unchanged:
//
//	logger := slog.New(domaineventsotel.NewLogHandler(slog.NewJSONHandler(os.Stderr, nil)))
//
// Inside a handler wrapped with [WrapHandler], or a publish made within a
// span, the lines then name the trace to look at. The attributes are added
// where the record's own are: inside the logger's group, if it has one
// (logger.WithGroup).
//
// A nil next writes text to os.Stderr. It is not slog.Default().Handler():
// slog's built-in default handler, wrapped and made the default again with
// slog.SetDefault, deadlocks on the first record (it writes through the log
// package, which SetDefault routes back into the wrapper). For the same
// reason, do not pass slog.Default().Handler() yourself when the result is
// to become the default.
func NewLogHandler(next slog.Handler) slog.Handler {
	if next == nil {
		next = slog.NewTextHandler(os.Stderr, nil)
	}
	return logHandler{next: next}
}

type logHandler struct{ next slog.Handler }

func (h logHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h logHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String(LogKeyTraceID, sc.TraceID().String()), slog.String(LogKeySpanID, sc.SpanID().String()))
	}
	return h.next.Handle(ctx, r)
}

func (h logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return logHandler{next: h.next.WithAttrs(as)}
}

func (h logHandler) WithGroup(name string) slog.Handler {
	return logHandler{next: h.next.WithGroup(name)}
}
