package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/internal/lifecycle"
)

// Inbox makes a consumer's database side effects happen once per event id,
// however often the broker delivers the event: see [Inbox.Handler]. It
// records (consumer, event id) in the Store's inbox table and deletes
// records older than its window in the background until [Inbox.Close].
// Safe for concurrent use.
type Inbox struct {
	s        *Store
	consumer string
	c        inboxConfig

	closing lifecycle.Closing
	run     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
}

// InboxOption configures [NewInbox]. Each option's doc names its default.
type InboxOption func(*inboxConfig) error

type inboxConfig struct {
	window, every time.Duration
	logger        *slog.Logger
}

// WithWindow sets how long a handled event id is remembered, checking
// every interval: it must be longer than any redelivery can come late
// (the broker's retry delays and dead-letter replays included). Default 7
// days, every 10 minutes.
func WithWindow(d, interval time.Duration) InboxOption {
	return func(c *inboxConfig) error {
		if d <= 0 || interval <= 0 {
			return fmt.Errorf("WithWindow(%v, %v): both must be positive", d, interval)
		}
		c.window, c.every = d, interval
		return nil
	}
}

// WithInboxLogger sets where cleanup failures are logged (Warn). Default:
// slog.Default().
func WithInboxLogger(l *slog.Logger) InboxOption {
	return func(c *inboxConfig) error {
		if l == nil {
			return errors.New("WithInboxLogger: logger is nil")
		}
		c.logger = l
		return nil
	}
}

// NewInbox returns the inbox of consumer (a stable name for the consuming
// service or handler, at most 255 bytes: event ids are deduplicated per
// consumer) in s's inbox table, and starts its cleanup. An empty consumer,
// a nil store or a bad option is an error matching broker.ErrInvalid.
func NewInbox(s *Store, consumer string, opts ...InboxOption) (*Inbox, error) {
	if s == nil {
		return nil, invalid("options", errors.New("NewInbox: store is nil"))
	}
	if consumer == "" || len(consumer) > 255 {
		return nil, invalid("options", fmt.Errorf("NewInbox: consumer %q: want 1 to 255 bytes", consumer))
	}
	c := inboxConfig{window: 7 * 24 * time.Hour, every: 10 * time.Minute, logger: slog.Default()}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&c); err != nil {
			return nil, invalid("options", err)
		}
	}
	in := &Inbox{s: s, consumer: consumer, c: c, done: make(chan struct{})}
	in.run, in.cancel = context.WithCancel(context.Background())
	go in.cleanupLoop()
	return in, nil
}

// Handler wraps h so that each event id is handled once for this consumer:
// in one database transaction it inserts (consumer, event id) into the
// inbox table; if the id is there already, the delivery is a duplicate and
// is acknowledged (nil) without calling h; otherwise h runs with the
// transaction in its ctx ([TxFrom]), so that its own writes commit
// atomically with the inbox row, and the transaction commits before the
// wrapper returns nil, so the subscriber acknowledges only what committed.
// h's error rolls everything back and is returned, so the subscriber
// retries the delivery; messages h stores with [Store.Publish] in that ctx
// roll back with it too. A panic of h rolls back as well and goes on up to
// the subscriber, which recovers it (broker/adapter.CallHandler: the stack
// logged once, the delivery retried).
//
// Two deliveries of one id handled at the same time take turns: the second
// waits on the first's inbox row and, once that commits, is skipped. A
// delivery without an id is an error matching broker.ErrInvalid (the
// subscriber dead-letters it). A database failure is returned as an error
// matching broker.ErrUnavailable: the delivery is retried.
func (in *Inbox) Handler(h broker.Handler) broker.Handler {
	return func(ctx context.Context, d broker.Delivery) (err error) {
		if d.ID == "" {
			return invalid("inbox", fmt.Errorf("delivery from %s has no event id: cannot deduplicate it", d.Source))
		}
		tx, err := in.s.db.BeginTx(ctx, in.s.txOpts)
		if err != nil {
			return dbErr("inbox", fmt.Errorf("begin: %w", err))
		}
		committed := false
		defer func() {
			if !committed {
				_ = tx.Rollback()
			}
		}()
		res, err := tx.ExecContext(ctx, in.s.q.inboxInsert, in.consumer, d.ID)
		if err != nil {
			return dbErr("inbox", fmt.Errorf("event %s: %w", d.ID, err))
		}
		if n, err := res.RowsAffected(); err != nil {
			return dbErr("inbox", err)
		} else if n == 0 {
			return nil // handled before: acknowledge, do nothing
		}
		if err := h(WithTx(ctx, tx), d); err != nil {
			return err
		}
		if err := tx.Commit(); err != nil {
			return dbErr("inbox", fmt.Errorf("event %s: commit: %w", d.ID, err))
		}
		committed = true
		in.s.Notify() // h may have stored messages
		return nil
	}
}

// Cleanup deletes the records older than the window, 1000 per statement,
// and returns how many. The inbox calls it every interval; call it
// yourself to run it at once.
func (in *Inbox) Cleanup(ctx context.Context) (int64, error) {
	const batch = 1000
	var total int64
	for {
		res, err := in.s.db.ExecContext(ctx, in.s.q.inboxCleanup, -in.c.window.Microseconds(), batch)
		if err != nil {
			return total, dbErr("inbox cleanup", err)
		}
		n, _ := res.RowsAffected()
		total += n
		if n < batch {
			return total, nil
		}
	}
}

func (in *Inbox) cleanupLoop() {
	defer close(in.done)
	t := time.NewTicker(in.c.every)
	defer t.Stop()
	for {
		select {
		case <-in.closing.Done():
			return
		case <-t.C:
			if _, err := in.Cleanup(in.run); err != nil && in.run.Err() == nil {
				in.c.logger.Warn("outbox inbox: cleanup failed", "consumer", in.consumer, "err", err)
			}
		}
	}
}

// Close stops the background cleanup (cancelling one in progress when ctx
// ends). Handlers already returned by [Inbox.Handler] keep working: they
// belong to the subscriber, which you close first. A second Close returns
// nil.
func (in *Inbox) Close(ctx context.Context) error {
	if !in.closing.Begin() {
		return nil
	}
	select {
	case <-in.done:
		in.cancel()
		return nil
	case <-ctx.Done():
		in.cancel()
		<-in.done
		return ctx.Err()
	}
}
