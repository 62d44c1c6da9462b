package retry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/internal/backoff"
	"github.com/domainevents/domainevents/internal/lifecycle"
)

// Broker wraps a broker.Broker with retries and dead-lettering. It is itself
// a broker.Broker, safe for concurrent use.
type Broker struct {
	next           broker.Broker
	maxAttempts    int
	maxElapsed     time.Duration
	attemptTimeout time.Duration
	sinkTimeout    time.Duration
	backoff        backoff.Policy
	retryable      func(error) bool
	onAttempt      func(Attempt)
	deadLetter     broker.DeadLetterSink
	rejected       broker.DeadLetterSink
	logger         *slog.Logger
	observer       broker.Observer

	closing   lifecycle.Closing
	wake      context.Context    // ended when Close begins: no publish waits for a retry any more
	wakeAll   context.CancelFunc //
	cut       context.Context    // ended when Close runs out of time: attempts in flight are cancelled
	cutAll    context.CancelFunc //
	mu        sync.RWMutex       // guards closed against Publish's check
	closed    bool
	publishes sync.WaitGroup // Publish calls in progress

	// Test seams: the clock, the wait between attempts, the jitter.
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

// New wraps next. A nil next or a bad option is an error matching
// broker.ErrInvalid.
func New(next broker.Broker, opts ...Option) (*Broker, error) {
	if next == nil {
		return nil, &broker.Error{Op: "retry: options", Kind: broker.ErrInvalid, Err: errors.New("broker is nil")}
	}
	b := &Broker{
		next: next, maxAttempts: 5, maxElapsed: 30 * time.Second, attemptTimeout: 10 * time.Second,
		sinkTimeout: 5 * time.Second,
		backoff:     backoff.Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second}, retryable: broker.IsRetryable,
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
	b.wake, b.wakeAll = context.WithCancel(context.Background())
	b.cut, b.cutAll = context.WithCancel(context.Background())
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
// classifier calls retryable with backoff, within the attempt bound, the
// time bound ([WithMaxElapsed]: every attempt, its timeout and the waits
// between them count) and the caller's ctx. It returns nil once an attempt
// succeeded.
//
// When it gives up (or Close stops it), the message goes to the
// dead-letter sink (if any), even when ctx has ended, and the error says
// so: it matches broker.ErrDeadLettered (the message is safe and must not
// be retried) and the last attempt's error. Without a sink, or if the sink
// fails, the error is a *GiveUpError with the last error, and the message
// is the caller's to keep. A ctx already done returns ctx.Err(); after
// Close, broker.ErrClosed.
func (b *Broker) Publish(ctx context.Context, msg broker.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return &broker.Error{Op: "retry: publish", Kind: broker.ErrClosed}
	}
	b.publishes.Add(1)
	b.mu.RUnlock()
	defer b.publishes.Done()

	start := b.now()
	deadline := start.Add(b.maxElapsed)
	var first time.Time
	for n := 1; ; n++ {
		timeout := min(b.attemptTimeout, deadline.Sub(b.now()))
		actx, cancel := context.WithTimeout(ctx, max(timeout, time.Millisecond))
		stop := context.AfterFunc(b.cut, cancel) // Close out of time: stop waiting for this attempt
		err := b.next.Publish(actx, msg)
		stop()
		cancel()
		if err == nil {
			return nil
		}
		now := b.now()
		if first.IsZero() {
			first = now
		}
		retry := ctx.Err() == nil && !b.closing.Begun() && !errors.Is(err, broker.ErrClosed) &&
			b.retryable(err) && n < b.maxAttempts
		var d time.Duration
		if retry {
			d = b.delay(n)
			retry = now.Add(d).Before(deadline)
		}
		if !retry {
			d = 0
		}
		if b.onAttempt != nil {
			b.onAttempt(Attempt{ID: msg.ID, Name: msg.Name, N: n, Err: err, Delay: d})
		}
		if retry {
			b.observe(broker.Observation{Kind: broker.ObservedRetry, MessageID: msg.ID, MessageName: msg.Name, Attempt: n,
				Category: broker.Category(err), Delay: d, Value: d.Seconds(), Err: err})
			sctx, scancel := context.WithCancel(ctx)
			wake := context.AfterFunc(b.wake, scancel) // Close: no more retries
			serr := b.sleep(sctx, d)
			wake()
			scancel()
			if serr == nil && !b.closing.Begun() {
				continue
			}
		}
		return b.giveUp(ctx, msg, err, n, first, now)
	}
}

// GiveUpError is a message that was not published after Attempts attempts.
// When DeadLetter is set the message is safe there and the error matches
// broker.ErrDeadLettered.
type GiveUpError struct {
	// ID and Name identify the message (broker.Message's).
	ID, Name string
	// Attempts is how many publishes were tried.
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
	entry := broker.NewDeadLetter(msg.Clone(), err, attempts, first, last)
	var sinkErrs []error
	for _, sink := range b.sinksFor(err) {
		// Store it even if the caller gave up: that is the point of a dead letter.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.sinkTimeout)
		perr := sink.Put(sctx, entry)
		cancel()
		if perr != nil {
			sinkErrs = append(sinkErrs, fmt.Errorf("%v: %w", sink, perr))
			continue
		}
		ge.DeadLetter = fmt.Sprint(sink)
		b.logger.Warn("retry: message dead-lettered", "component", "retry", "id", msg.ID, "name", msg.Name,
			"attempts", attempts, "category", entry.Category, "to", ge.DeadLetter, "err", err)
		b.observe(broker.Observation{Kind: broker.ObservedDeadLetter, Destination: ge.DeadLetter, MessageID: msg.ID,
			MessageName: msg.Name, Attempt: attempts, Category: entry.Category, Err: err})
		return ge
	}
	ge.SinkErr = errors.Join(sinkErrs...)
	if ge.SinkErr != nil {
		b.logger.Error("retry: message not published and not dead-lettered", "component", "retry", "id", msg.ID,
			"name", msg.Name, "attempts", attempts, "err", err, "sink_err", ge.SinkErr)
	}
	return ge
}

// sinksFor lists the sinks to try in order: the broker's own dead-letter
// destination for messages it refused, then the general sink.
func (b *Broker) sinksFor(err error) []broker.DeadLetterSink {
	var sinks []broker.DeadLetterSink
	if b.rejected != nil && broker.RefusedForGood(err) {
		sinks = append(sinks, b.rejected)
	}
	if b.deadLetter != nil {
		sinks = append(sinks, b.deadLetter)
	}
	return sinks
}

func (b *Broker) observe(o broker.Observation) {
	if b.observer != nil {
		o.Component = "retry"
		b.observer.Observe(context.Background(), o)
	}
}

// Close stops the retrying at once: Publish calls waiting for their next
// attempt give up now and dead-letter their message (the callers get an
// error matching broker.ErrDeadLettered), and new ones return
// broker.ErrClosed. Attempts in flight may finish until ctx is close to
// its end; then they are cancelled and dead-lettered too, so that the
// dead-letter writes fit in ctx. Then Close closes the wrapped broker with
// what is left of ctx. It returns ctx.Err() if ctx ended before every
// Publish call returned; only a message whose dead-letter write failed is
// returned to its caller undelivered and unstored. A second Close returns
// nil.
func (b *Broker) Close(ctx context.Context) error {
	if !b.closing.Begin() {
		return nil
	}
	b.wakeAll()
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()

	done := make(chan struct{})
	go func() {
		b.publishes.Wait()
		close(done)
	}()
	cutoff, stop := lifecycle.Cutoff(ctx)
	defer stop()
	var err error
	select {
	case <-done:
	case <-cutoff:
		b.cutAll() // the attempts in flight end now; their messages are dead-lettered
		select {
		case <-done:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	b.cutAll()
	if cerr := b.next.Close(ctx); err == nil {
		err = cerr
	}
	return err
}

// Describe passes the question on to the wrapped broker (a zero
// Destination if it cannot say). It implements broker.Describer.
func (b *Broker) Describe(m broker.Message) broker.Destination {
	if d, ok := b.next.(broker.Describer); ok {
		return d.Describe(m)
	}
	return broker.Destination{}
}
