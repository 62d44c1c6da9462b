package retry

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/internal/backoff"
)

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

// WithMaxElapsed bounds the whole Publish before it gives up: every
// attempt, its timeout and the waits between attempts count. It is the
// longest a caller waits on a broker that does not answer, plus the
// dead-letter write (milliseconds for the spool; up to [WithSinkTimeout]
// for a broker-side sink). No retry starts past it, and the last attempt's
// timeout is cut to what is left. Default 30s.
func WithMaxElapsed(d time.Duration) Option {
	return func(b *Broker) error {
		if d <= 0 {
			return fmt.Errorf("WithMaxElapsed(%v): must be positive", d)
		}
		b.maxElapsed = d
		return nil
	}
}

// WithAttemptTimeout bounds each attempt (within the caller's ctx and
// what is left of [WithMaxElapsed]), so that an outage turns into retries
// and finally a dead letter instead of one long wait. Default 10s.
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
// time in [0, min(max, initial·2^(n-1))] (full jitter). Default 100ms and
// 5s.
func WithBackoff(initial, max time.Duration) Option {
	return func(b *Broker) error {
		if initial <= 0 || max < initial {
			return fmt.Errorf("WithBackoff(%v, %v): want 0 < initial <= max", initial, max)
		}
		b.backoff = backoff.Policy{Initial: initial, Max: max}
		return nil
	}
}

// ForRequests is the preset for publishing from a request path (an HTTP
// handler): a Publish takes at most 2s (attempts of at most 1s, 50ms..500ms
// between them, at most 5), then the message is dead-lettered (with a
// spool: safe on disk in milliseconds) and the handler can answer. Options
// given after it override its parts. Without it: 30s, see the others'
// defaults.
func ForRequests() Option {
	return func(b *Broker) error {
		b.maxElapsed, b.attemptTimeout, b.maxAttempts = 2*time.Second, time.Second, 5
		b.backoff = backoff.Policy{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond}
		return nil
	}
}

// WithSinkTimeout bounds each dead-letter write. Default 5s.
func WithSinkTimeout(d time.Duration) Option {
	return func(b *Broker) error {
		if d <= 0 {
			return fmt.Errorf("WithSinkTimeout(%v): must be positive", d)
		}
		b.sinkTimeout = d
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

// WithObserver reports each retry (broker.ObservedRetry, with its delay)
// and each dead letter (broker.ObservedDeadLetter, with its category and
// sink) to obs. Default: none.
func WithObserver(obs broker.Observer) Option {
	return func(b *Broker) error {
		if obs == nil {
			return errors.New("WithObserver: observer is nil")
		}
		b.observer = obs
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
