package retry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/internal/backoff"
)

// Broker wraps a broker.Broker with retries and dead-lettering. It is itself
// a broker.Broker, safe for concurrent use.
type Broker struct {
	next           broker.Broker
	maxAttempts    int
	maxElapsed     time.Duration
	attemptTimeout time.Duration
	backoff        backoff.Policy
	retryable      func(error) bool
	onAttempt      func(Attempt)
	deadLetter     broker.DeadLetterSink
	rejected       broker.DeadLetterSink
	logger         *slog.Logger

	// Test seams: the clock and the wait between attempts.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
	jit   func(d time.Duration) time.Duration
}

// Attempt describes one failed attempt, for [WithOnAttempt].
type Attempt struct {
	// ID and Name of the message.
	ID, Name string
	// N is the attempt number, from 1.
	N int
	// Err is the attempt's error.
	Err error
	// Delay before the next attempt; 0 when this was the last one.
	Delay time.Duration
}

// Option configures [New]. Each option's doc names its default.
type Option func(*Broker) error

// WithMaxAttempts bounds the attempts per message, the first included.
// Default 5.
func WithMaxAttempts(n int) Option {
	return func(b *Broker) error {
		if n < 1 {
			return fmt.Errorf("WithMaxAttempts(%d): must be at least 1", n)
		}
		b.maxAttempts = n
		return nil
	}
}

// WithMaxElapsed bounds the time from the first attempt to the last retry's
// start. Default 30s.
func WithMaxElapsed(d time.Duration) Option {
	return func(b *Broker) error {
		if d <= 0 {
			return fmt.Errorf("WithMaxElapsed(%v): must be positive", d)
		}
		b.maxElapsed = d
		return nil
	}
}

// WithAttemptTimeout bounds each attempt (within the caller's ctx), so that
// an outage turns into retries and finally a dead letter instead of one long
// wait. Default 10s.
func WithAttemptTimeout(d time.Duration) Option {
	return func(b *Broker) error {
		if d <= 0 {
			return fmt.Errorf("WithAttemptTimeout(%v): must be positive", d)
		}
		b.attemptTimeout = d
		return nil
	}
}

// WithBackoff sets the exponential backoff: the n-th retry waits a random
// time in [0, min(max, initial*2^(n-1))] (full jitter). Default 100ms and 5s.
func WithBackoff(initial, max time.Duration) Option {
	return func(b *Broker) error {
		if initial <= 0 || max < initial {
			return fmt.Errorf("WithBackoff(%v, %v): want 0 < initial <= max", initial, max)
		}
		b.backoff = backoff.Policy{Initial: initial, Max: max}
		return nil
	}
}

// WithClassifier decides which errors are retried. Context errors of the
// caller and broker.ErrClosed are never retried, whatever it says. Default:
// broker.IsRetryable.
func WithClassifier(retryable func(error) bool) Option {
	return func(b *Broker) error {
		if retryable == nil {
			return errors.New("WithClassifier: nil classifier")
		}
		b.retryable = retryable
		return nil
	}
}

// WithOnAttempt calls fn after each failed attempt (from the publishing
// goroutine; keep it fast). Default: none.
func WithOnAttempt(fn func(Attempt)) Option {
	return func(b *Broker) error {
		b.onAttempt = fn
		return nil
	}
}

// WithDeadLetter stores every message that finally failed in sink (usually a
// deadletter.Spool: the broker may be unreachable). Default: none, the error
// is returned and the message is the caller's to keep.
func WithDeadLetter(sink broker.DeadLetterSink) Option {
	return func(b *Broker) error {
		b.deadLetter = sink
		return nil
	}
}

// WithRejectedDeadLetter stores messages the broker refused for good
// (non-retryable: unroutable, rejected, too large...) in sink, usually the
// broker's own dead-letter queue or topic. If that fails too, the
// WithDeadLetter sink takes them. Default: the WithDeadLetter sink.
func WithRejectedDeadLetter(sink broker.DeadLetterSink) Option {
	return func(b *Broker) error {
		b.rejected = sink
		return nil
	}
}

// WithLogger logs each dead-lettered message at Warn. Default slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(b *Broker) error {
		if l == nil {
			return errors.New("WithLogger: nil logger")
		}
		b.logger = l
		return nil
	}
}

// New wraps next. A nil next or a bad option is an error matching
// broker.ErrInvalid.
func New(next broker.Broker, opts ...Option) (*Broker, error) {
	if next == nil {
		return nil, &broker.Error{Op: "retry: new", Kind: broker.ErrInvalid, Err: errors.New("broker is nil")}
	}
	b := &Broker{
		next: next, maxAttempts: 5, maxElapsed: 30 * time.Second, attemptTimeout: 10 * time.Second,
		backoff: backoff.Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second}, retryable: broker.IsRetryable,
		logger: slog.Default(), now: time.Now, sleep: sleepCtx,
		jit: func(d time.Duration) time.Duration { return rand.N(d + 1) },
	}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(b); err != nil {
			return nil, &broker.Error{Op: "retry: options", Kind: broker.ErrInvalid, Err: err}
		}
	}
	return b, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// delay is the wait before retry n (n >= 1): full jitter over the
// policy's exponential ceiling (the jitter is a test seam).
func (b *Broker) delay(n int) time.Duration {
	return b.jit(b.backoff.Ceiling(n))
}

// Publish publishes msg through the wrapped broker, retrying errors the
// classifier calls retryable with backoff, within the attempt and elapsed
// bounds and the caller's ctx. It returns nil once an attempt succeeded.
//
// When it gives up, the message goes to the dead-letter sink (if any), even
// when ctx has ended, and the error says so: it matches broker.ErrDeadLettered
// (the message is safe and must not be retried) and the last attempt's
// error. Without a sink, or if the sink fails, the error is a *GiveUpError
// with the last error, and the message is the caller's to keep.
func (b *Broker) Publish(ctx context.Context, msg broker.Message) error {
	var first time.Time
	for n := 1; ; n++ {
		actx, cancel := context.WithTimeout(ctx, b.attemptTimeout)
		err := b.next.Publish(actx, msg)
		cancel()
		if err == nil {
			return nil
		}
		now := b.now()
		if first.IsZero() {
			first = now
		}
		retry := ctx.Err() == nil && !errors.Is(err, broker.ErrClosed) && b.retryable(err) && n < b.maxAttempts
		var d time.Duration
		if retry {
			d = b.delay(n)
			retry = now.Add(d).Sub(first) <= b.maxElapsed
		}
		if !retry {
			d = 0
		}
		if b.onAttempt != nil {
			b.onAttempt(Attempt{ID: msg.ID, Name: msg.Name, N: n, Err: err, Delay: d})
		}
		if retry && b.sleep(ctx, d) == nil {
			continue
		}
		return b.giveUp(ctx, msg, err, n, first, now)
	}
}

// GiveUpError is a message that was not published after Attempts attempts.
// When DeadLetter is set the message is safe there and the error matches
// broker.ErrDeadLettered.
type GiveUpError struct {
	ID, Name string
	Attempts int
	// Err is the last attempt's error.
	Err error
	// DeadLetter names where the message was stored ("" if nowhere).
	DeadLetter string
	// SinkErr is why storing it failed, if it did.
	SinkErr error
}

// Error reads like: retry: order.created 6f1c...: gave up after 5 attempts,
// dead-lettered to spool /var/spool/orders: rabbitmq: publish: broker unavailable: ...
func (e *GiveUpError) Error() string {
	s := fmt.Sprintf("retry: %s %s: gave up after %d attempt(s)", e.Name, e.ID, e.Attempts)
	switch {
	case e.DeadLetter != "":
		s += ", dead-lettered to " + e.DeadLetter
	case e.SinkErr != nil:
		s += ", and dead-lettering failed (" + e.SinkErr.Error() + ")"
	}
	return s + ": " + e.Err.Error()
}

// Unwrap returns the last error, and broker.ErrDeadLettered when the message
// was stored.
func (e *GiveUpError) Unwrap() []error {
	errs := []error{e.Err}
	if e.DeadLetter != "" {
		errs = append(errs, broker.ErrDeadLettered)
	}
	if e.SinkErr != nil {
		errs = append(errs, e.SinkErr)
	}
	return errs
}

func (b *Broker) giveUp(ctx context.Context, msg broker.Message, err error, attempts int, first, last time.Time) error {
	ge := &GiveUpError{ID: msg.ID, Name: msg.Name, Attempts: attempts, Err: err}
	entry := broker.DeadLetter{Message: msg.Clone(), Reason: err.Error(), Category: broker.Category(err),
		Attempts: attempts, FirstFailure: first, LastFailure: last}
	// Store it even if the caller gave up: that is the point of a dead letter.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var sinkErrs []error
	for _, sink := range b.sinksFor(err) {
		if perr := sink.Put(sctx, entry); perr != nil {
			sinkErrs = append(sinkErrs, fmt.Errorf("%v: %w", sink, perr))
			continue
		}
		ge.DeadLetter = fmt.Sprint(sink)
		b.logger.Warn("retry: message dead-lettered", "id", msg.ID, "name", msg.Name, "attempts", attempts,
			"category", entry.Category, "to", ge.DeadLetter, "err", err)
		return ge
	}
	ge.SinkErr = errors.Join(sinkErrs...)
	return ge
}

// sinksFor lists the sinks to try in order: the broker's own dead-letter
// destination for messages it refused, then the general sink.
func (b *Broker) sinksFor(err error) []broker.DeadLetterSink {
	var sinks []broker.DeadLetterSink
	if b.rejected != nil && !broker.IsRetryable(err) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		sinks = append(sinks, b.rejected)
	}
	if b.deadLetter != nil {
		sinks = append(sinks, b.deadLetter)
	}
	return sinks
}

// Close closes the wrapped broker.
func (b *Broker) Close(ctx context.Context) error { return b.next.Close(ctx) }
