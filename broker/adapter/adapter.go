package adapter

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/internal/reason"
)

// Wrap returns a *broker.Error for op ("<adapter>: <operation>"), kind and
// cause, except that a context error with no kind is returned as it is
// (callers test it with errors.Is), as the contract requires.
func Wrap(op string, kind, cause error) error {
	if kind == nil && cause != nil && (errors.Is(cause, context.Canceled) || errors.Is(cause, context.DeadlineExceeded)) {
		return cause
	}
	return &broker.Error{Op: op, Kind: kind, Err: cause}
}

// SeqOf reads the [broker.HeaderSeq] header of h: the message's number in
// its key's sequence, or 0 when it has none (or not a positive number).
// Adapters fill broker.Delivery.Seq with it.
func SeqOf(h map[string]string) int64 {
	v, ok := h[broker.HeaderSeq]
	if !ok {
		return 0
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// ErrPanic matches the error [CallHandler] makes of a handler's panic.
var ErrPanic = errors.New("handler panicked")

// CallHandler runs h, turning a panic into an error matching [ErrPanic]
// whose text is one line, "handler panicked: <value> at <function>
// (<file>:<line>)", naming the frame that panicked; that text is what the
// subscriber's retry logs and the dead letter's reason carry. The stack is
// logged here, once, at Error on log with the delivery's source, id, name
// and attempt. An error h returns that carries the stack of a panic
// recovered further down (an eventbus handler's, behind bridge.NewHandler:
// eventbus.HandlerError has a PanicStack method) has that stack logged
// here too. A nil log is slog.Default().
//
// A panic is not [broker.Permanent]: the delivery is retried like after
// any failure.
func CallHandler(ctx context.Context, log *slog.Logger, h broker.Handler, d broker.Delivery) (err error) {
	defer func() {
		if r := recover(); r != nil {
			p := reason.NewPanic(ErrPanic, r)
			logPanic(log, d, p)
			err = p
		}
	}()
	err = h(ctx, d)
	if err != nil {
		reason.Stacks(err, func(s reason.Stacker) { logPanic(log, d, s) })
	}
	return err
}

func logPanic(log *slog.Logger, d broker.Delivery, p reason.Stacker) {
	if log == nil {
		log = slog.Default()
	}
	log.Error("handler panicked", "source", d.Source, "id", d.ID, "name", d.Name, "attempt", d.Attempt,
		"panic", p.Error(), "stack", string(p.PanicStack()))
}

// Outcome says what a subscriber does with a delivery whose handler
// returned err (non-nil) on attempt (from 1) of maxAttempts: dead-letter it
// now (true) when err is [broker.Permanent] or the attempts are used up,
// otherwise retry it later (false).
func Outcome(err error, attempt, maxAttempts int) (deadLetter bool) {
	return broker.Permanent(err) || attempt >= maxAttempts
}

// DeadLetterOf is the dead letter of a delivery whose handler failed with
// err after attempts attempts, between first and last: category
// broker.CategoryInvalid for a [broker.Permanent] error (poison),
// broker.CategoryHandlerFailed otherwise. A zero first is taken as last.
func DeadLetterOf(d broker.Delivery, err error, attempts int, first, last time.Time) broker.DeadLetter {
	dl := broker.NewDeadLetter(d.Message, err, attempts, first, last)
	dl.Category = broker.CategoryHandlerFailed
	if broker.Permanent(err) {
		dl.Category = broker.CategoryInvalid
	}
	return dl
}
