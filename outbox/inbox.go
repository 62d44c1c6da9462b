package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/internal/lifecycle"
)

// Inbox makes a consumer's database side effects happen once per event id,
// however often the broker delivers the event, and in each key's commit
// order: see [Inbox.Handler]. It records (consumer, event id) in the
// Store's inbox table and (consumer, key, last applied sequence number) in
// its inbox-keys table, and deletes records older than its window in the
// background until [Inbox.Close]. Safe for concurrent use.
type Inbox struct {
	s        *Store
	consumer string
	c        inboxConfig

	mu      sync.Mutex
	blocked map[string]BlockedKey // keys seen blocked by a gap, until one of their events applies

	closing lifecycle.Closing
	run     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
}

// InboxOption configures [NewInbox]. Each option's doc names its default.
// Inbox options are named WithInbox...: the package's other options
// (WithLogger, WithObserver, ...) configure the relay, and one package has
// one function per name.
type InboxOption func(*inboxConfig) error

type inboxConfig struct {
	window, every   time.Duration
	logger          *slog.Logger
	observer        broker.Observer
	firstSeenStarts bool
}

// WithInboxWindow sets how long a handled event id is remembered, checking
// every interval: it must be longer than any redelivery can come late
// (the broker's retry delays and dead-letter replays included). A key's
// last applied sequence number is forgotten after the same time without
// an event, so the window must also be longer than the producer relay's
// retention and its interval (outbox.WithRetention, default 24 hours):
// by then the producer's counter of such a key has started again at
// number 1, which is what a forgotten key waits for. Default 7 days,
// every 10 minutes.
func WithInboxWindow(d, interval time.Duration) InboxOption {
	return func(c *inboxConfig) error {
		if d <= 0 || interval <= 0 {
			return fmt.Errorf("WithInboxWindow(%v, %v): both must be positive", d, interval)
		}
		c.window, c.every = d, interval
		return nil
	}
}

// WithFirstSeenStarts lets the first event of a key this consumer has
// applied nothing for start the key's sequence, whatever its number,
// instead of waiting for number 1: for a consumer that joins a running
// system (its queue did not exist when the keys' first events were
// published). Its cost: an event of such a key that overtook an earlier
// one (several consumer processes, a dead letter) is applied, and the
// earlier one then waits for ever (see [Inbox.Blocked]). Default: a key
// starts at number 1.
func WithFirstSeenStarts() InboxOption {
	return func(c *inboxConfig) error {
		c.firstSeenStarts = true
		return nil
	}
}

// WithInboxLogger sets where cleanup failures (Warn) and the duplicates
// the inbox skips (Debug) are logged. Default: slog.Default().
func WithInboxLogger(l *slog.Logger) InboxOption {
	return func(c *inboxConfig) error {
		if l == nil {
			return errors.New("WithInboxLogger: logger is nil")
		}
		c.logger = l
		return nil
	}
}

// WithInboxObserver reports each duplicate the inbox skips to o, as a
// broker.ObservedDuplicate observation (component "outbox inbox"): what
// the OpenTelemetry module counts as domainevents.inbox.duplicates.
// Default: none.
func WithInboxObserver(o broker.Observer) InboxOption {
	return func(c *inboxConfig) error {
		if o == nil {
			return errors.New("WithInboxObserver: observer is nil")
		}
		c.observer = o
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
	in := &Inbox{s: s, consumer: consumer, c: c, done: make(chan struct{}), blocked: map[string]BlockedKey{}}
	in.run, in.cancel = context.WithCancel(context.Background())
	go in.cleanupLoop()
	return in, nil
}

// Handler wraps h so that each event id is handled once for this consumer:
// in one database transaction it inserts (consumer, event id) into the
// inbox table; if the id is there already, the delivery is a duplicate and
// is acknowledged (nil) without calling h (logged at Debug, reported to
// [WithInboxObserver]); otherwise h runs with the
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
//
// # Commit order
//
// A delivery with a key and a sequence number (Delivery.Seq: the outbox's
// relay numbers each key's events in the order their transactions
// committed) is also checked against the last number applied for its key,
// in the same transaction, its key's row locked meanwhile:
//
//   - a duplicate (an id applied before) is skipped, as above;
//   - the next number, or number 1 (the key's first event; or the
//     producer's counter for the key started again, after its rows were
//     pruned), is applied, and becomes the last applied when the
//     transaction commits;
//   - any other number is ahead of a gap: the wrapper returns an error
//     matching [ErrOutOfOrder] without calling h, so the subscriber
//     retries it with backoff, holding its key, until the missing events
//     have applied (or number 1 of a restarted sequence, for a number at
//     or below the last applied with a new id). A gap that never fills
//     (its event was dead-lettered) blocks the key: [Inbox.Blocked] lists
//     it, and the operator re-drives the missing event or gives it up
//     with [Inbox.Skip].
//
// So the consumer's table follows each key's commit order across
// redeliveries, retries, restarts, re-drives, and several consumer
// processes sharing the queue (each refuses what the others have not
// applied yet). A consumer added to a running system, whose first events
// of most keys are not number 1, needs [WithFirstSeenStarts]. Deliveries
// without a sequence number (published without the outbox) are only
// deduplicated.
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
			in.duplicate(ctx, d)
			return nil // handled before: acknowledge, do nothing
		}
		ordered := d.Seq > 0 && d.Key != ""
		if ordered {
			ok, last, err := in.checkOrder(ctx, tx, d)
			switch {
			case err != nil:
				return dbErr("inbox", fmt.Errorf("event %s: key %s: %w", d.ID, d.Key, err))
			case !ok:
				return in.refuse(d, last)
			}
		}
		if err := h(WithTx(ctx, tx), d); err != nil {
			return err
		}
		if ordered {
			if err := in.advance(ctx, tx, d); err != nil {
				return dbErr("inbox", fmt.Errorf("event %s: key %s: %w", d.ID, d.Key, err))
			}
		}
		if err := tx.Commit(); err != nil {
			return dbErr("inbox", fmt.Errorf("event %s: commit: %w", d.ID, err))
		}
		committed = true
		in.s.Notify() // h may have stored messages
		if ordered {
			in.applied(d)
		}
		return nil
	}
}

// duplicate logs and reports a delivery skipped because its id was
// handled before.
func (in *Inbox) duplicate(ctx context.Context, d broker.Delivery) {
	in.c.logger.DebugContext(ctx, "outbox inbox: duplicate skipped", "component", "outbox inbox", "consumer", in.consumer,
		"id", d.ID, "name", d.Name, "key", d.Key, "source", d.Source, "attempt", d.Attempt)
	if in.c.observer != nil {
		in.c.observer.Observe(ctx, broker.Observation{Kind: broker.ObservedDuplicate, Component: "outbox inbox",
			System: d.Origin.System, Destination: d.Origin.Destination, MessageID: d.ID, MessageName: d.Name, Attempt: d.Attempt})
	}
}

// Cleanup deletes the records older than the window (event ids, and keys
// without an event for that long), 1000 per statement, and returns how
// many. The inbox calls it every interval; call it yourself to run it at
// once.
func (in *Inbox) Cleanup(ctx context.Context) (int64, error) {
	const batch = 1000
	var total int64
	for _, q := range []string{in.s.q.inboxCleanup, in.s.q.inboxKeyCleanup} {
		for {
			res, err := in.s.db.ExecContext(ctx, q, -in.c.window.Microseconds(), batch)
			if err != nil {
				return total, dbErr("inbox cleanup", err)
			}
			n, _ := res.RowsAffected()
			total += n
			if n < batch {
				break
			}
		}
	}
	return total, nil
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
