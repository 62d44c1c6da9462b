package adapter

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/domainevents/domainevents/broker"
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
// that carries the panic value and stack. Such an error is not
// [broker.Permanent]: the delivery is retried like after any failure.
func CallHandler(ctx context.Context, h broker.Handler, d broker.Delivery) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v\n%s", ErrPanic, r, debug.Stack())
		}
	}()
	return h(ctx, d)
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
	cat := broker.CategoryHandlerFailed
	if broker.Permanent(err) {
		cat = broker.CategoryInvalid
	}
	if first.IsZero() {
		first = last
	}
	return broker.DeadLetter{Message: d.Message, Reason: err.Error(), Category: cat,
		Attempts: attempts, FirstFailure: first, LastFailure: last}
}
