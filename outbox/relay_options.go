package outbox

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/internal/backoff"
)

// RelayOption configures [NewRelay]. Each option's doc names its default.
type RelayOption func(*relayConfig) error

type relayConfig struct {
	owner          string
	lease          time.Duration
	publishTimeout time.Duration
	batch          int
	maxInFlight    int
	poll           time.Duration
	maxAttempts    int
	backoff        backoff.Policy
	brokerMax      time.Duration
	sink           broker.DeadLetterSink
	retention      time.Duration
	pruneEvery     time.Duration
	observer       broker.Observer
	gaugeEvery     time.Duration
	logger         *slog.Logger
}

func defaultRelayConfig() relayConfig {
	return relayConfig{
		lease:          30 * time.Second,
		publishTimeout: 10 * time.Second,
		batch:          100,
		maxInFlight:    1000,
		poll:           time.Second,
		maxAttempts:    10,
		backoff:        backoff.Policy{Initial: time.Second, Max: 5 * time.Minute},
		brokerMax:      5 * time.Second,
		retention:      24 * time.Hour,
		pruneEvery:     time.Minute,
		gaugeEvery:     10 * time.Second,
		logger:         slog.Default(),
	}
}

// WithOwner sets the id this relay writes into the rows it leases (at most
// 64 bytes): unique per running relay. Default: host name, process id and
// a random suffix.
func WithOwner(id string) RelayOption {
	return func(c *relayConfig) error {
		if id == "" || len(id) > 64 {
			return fmt.Errorf("WithOwner(%q): want 1 to 64 bytes", id)
		}
		c.owner = id
		return nil
	}
}

// WithLease sets how long a claimed row stays this relay's: past it,
// another relay may claim the row again (the takeover after a crash). It
// must exceed twice the publish timeout. Default 30s.
func WithLease(d time.Duration) RelayOption {
	return func(c *relayConfig) error {
		if d < time.Millisecond {
			return fmt.Errorf("WithLease(%v): want at least 1ms", d)
		}
		c.lease = d
		return nil
	}
}

// WithPublishTimeout bounds each publish (the wait for the broker's
// confirm); it must be shorter than half the lease, so that a row's publish
// and its settling (bounded by the other half) end before its lease can run
// out. Default 10s.
func WithPublishTimeout(d time.Duration) RelayOption {
	return func(c *relayConfig) error {
		if d <= 0 {
			return fmt.Errorf("WithPublishTimeout(%v): must be positive", d)
		}
		c.publishTimeout = d
		return nil
	}
}

// WithBatchSize sets how many rows one claim takes at most. Default 100.
func WithBatchSize(n int) RelayOption {
	return func(c *relayConfig) error {
		if n < 1 || n > 10000 {
			return fmt.Errorf("WithBatchSize(%d): want 1 to 10000", n)
		}
		c.batch = n
		return nil
	}
}

// WithMaxInFlight bounds the rows claimed and not yet settled (published,
// failed or dead-lettered): the publishing pipeline's depth (a claim and
// an advance racing may overshoot it by one batch). Default 1000.
func WithMaxInFlight(n int) RelayOption {
	return func(c *relayConfig) error {
		if n < 1 {
			return fmt.Errorf("WithMaxInFlight(%d): must be positive", n)
		}
		c.maxInFlight = n
		return nil
	}
}

// WithPollInterval sets how often the relay looks for due rows when
// nothing woke it ([Store.Notify], [Store.Transact], a settled row):
// the fallback for rows committed by other processes and for rows backing
// off. Default 1s.
func WithPollInterval(d time.Duration) RelayOption {
	return func(c *relayConfig) error {
		if d <= 0 {
			return fmt.Errorf("WithPollInterval(%v): must be positive", d)
		}
		c.poll = d
		return nil
	}
}

// WithMaxAttempts bounds the failures that may be the message's own: a
// row whose publish fails n times in this relay process with an error of
// no category (from a broker or middleware that does not classify its
// errors as broker.Broker's contract asks) or with a panic in Publish is
// dead-lettered, and its key moves on. Nothing else counts: the broker's
// failures (unavailable, timed out, closed, unroutable, unauthorized,
// rejected) never make a row dead however long they last, and a message
// that can never be published (broker.ErrInvalid, broker.ErrTooLarge) is
// dead at its first failure. The count is kept in memory: a row tried by
// several relays, or across restarts, may fail more often than n. (The
// attempts column counts every claim, for observability.) Default 10.
func WithMaxAttempts(n int) RelayOption {
	return func(c *relayConfig) error {
		if n < 1 {
			return fmt.Errorf("WithMaxAttempts(%d): must be positive", n)
		}
		c.maxAttempts = n
		return nil
	}
}

// WithBackoff sets the wait before a failed row is tried again: full
// jitter, up to initial·2^(attempt-1) capped at max. The rows the broker
// held back (unavailable, unroutable...) are capped lower, at
// [WithBrokerBackoff]. Default 1s, 5m.
func WithBackoff(initial, max time.Duration) RelayOption {
	return func(c *relayConfig) error {
		if initial <= 0 || max < initial {
			return fmt.Errorf("WithBackoff(%v, %v): want 0 < initial <= max", initial, max)
		}
		c.backoff = backoff.Policy{Initial: initial, Max: max}
		return nil
	}
}

// WithBrokerBackoff caps the backoff of rows that failed because of the
// broker, not of the message: unavailable, timed out, outcome unknown,
// unroutable, unauthorized, rejected. Such a row is tried again at least
// every max (plus the poll interval), whatever its attempts, so that it
// goes out within about max once the broker is back or its configuration
// is fixed. A broker that implements broker.HealthChecker lets the relay
// do better after an outage: when its Health turns nil, every row backing
// off is made due at once. Default 5s.
func WithBrokerBackoff(max time.Duration) RelayOption {
	return func(c *relayConfig) error {
		if max <= 0 {
			return fmt.Errorf("WithBrokerBackoff(%v): must be positive", max)
		}
		c.brokerMax = max
		return nil
	}
}

// WithDeadLetter puts each dead row's message into sink (with its reason,
// category and attempts) before marking the row dead; if the sink fails,
// the row stays pending and is tried again later. Default: none: the row
// is only marked dead in the table (state 2, dead_at, last_error), where
// it stays until you deal with it, and reported to the logger and
// observer.
func WithDeadLetter(sink broker.DeadLetterSink) RelayOption {
	return func(c *relayConfig) error {
		if sink == nil {
			return errors.New("WithDeadLetter: sink is nil")
		}
		c.sink = sink
		return nil
	}
}

// WithRetention deletes published rows once they are older than d,
// checking every interval ([Store.Prune]). Pending and dead rows are never
// deleted. d = 0 keeps published rows forever. Default 24h, every minute.
func WithRetention(d, interval time.Duration) RelayOption {
	return func(c *relayConfig) error {
		if d < 0 || interval <= 0 {
			return fmt.Errorf("WithRetention(%v, %v): want d >= 0 and a positive interval", d, interval)
		}
		c.retention, c.pruneEvery = d, interval
		return nil
	}
}

// WithObserver reports retries, dead letters, and every
// [WithBacklogInterval] the backlog (ObservedOutboxBacklog, in rows) and
// the age of the oldest pending row (ObservedOutboxLag, in seconds), to o,
// like every other part's WithObserver. Default: none.
func WithObserver(o broker.Observer) RelayOption {
	return func(c *relayConfig) error {
		if o == nil {
			return errors.New("WithObserver: observer is nil")
		}
		c.observer = o
		return nil
	}
}

// WithBacklogInterval sets how often [WithObserver]'s observer gets the
// backlog and the lag (each report counts the pending rows: one query).
// Default 10s.
func WithBacklogInterval(d time.Duration) RelayOption {
	return func(c *relayConfig) error {
		if d <= 0 {
			return fmt.Errorf("WithBacklogInterval(%v): must be positive", d)
		}
		c.gaugeEvery = d
		return nil
	}
}

// WithLogger sets where database errors (Warn) and dead letters (Error)
// are logged. Default: slog.Default().
func WithLogger(l *slog.Logger) RelayOption {
	return func(c *relayConfig) error {
		if l == nil {
			return errors.New("WithLogger: logger is nil")
		}
		c.logger = l
		return nil
	}
}
