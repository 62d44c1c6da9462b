package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/domainevents/domainevents/broker"
)

// ErrOutOfOrder matches the error [Inbox.Handler] returns for an event
// that may not apply yet: it arrived ahead of a gap in its key's sequence.
// The subscriber retries it (it is not broker.Permanent), and it applies
// once the missing events have. See [Inbox.Blocked] and [Inbox.Skip].
var ErrOutOfOrder = errors.New("event ahead of a gap in its key's sequence")

// maxBlocked bounds the keys [Inbox.Blocked] remembers.
const maxBlocked = 10000

// BlockedKey is a key whose next event has not arrived: a later one did,
// and waits for it (see [Inbox.Blocked]).
type BlockedKey struct {
	// Key is the aggregate key.
	Key string
	// Applied is the sequence number of the key's last event applied (or
	// skipped) when the gap was last seen.
	Applied int64
	// Waiting is the lowest sequence number seen waiting for the gap.
	Waiting int64
	// EventID is the id of that waiting event.
	EventID string
	// Since is when this inbox first saw the gap; Last when it last did.
	Since, Last time.Time
	// Refusals counts the deliveries refused for this gap.
	Refusals int
}

// checkOrder locks d's key in tx and says whether d may apply now, with
// the key's last applied sequence number: it may if it is the next one,
// or number 1 (the key's first event, or the producer's counter for the
// key started again after its rows were pruned: a duplicate of an earlier
// number 1 was caught by its id already), or, with WithFirstSeenStarts,
// the first event of a key nothing was applied for. Anything else waits:
// a number further on for the ones before it, and a number at or below
// the last applied with an id never seen (the id check ran first) for
// number 1 of a counter that started again.
func (in *Inbox) checkOrder(ctx context.Context, tx *sql.Tx, d broker.Delivery) (ok bool, last int64, err error) {
	q := in.s.q
	if q.inboxKeyEnsure != "" {
		if _, err := tx.ExecContext(ctx, q.inboxKeyEnsure, in.consumer, d.Key); err != nil {
			return false, 0, err
		}
	}
	if err := tx.QueryRowContext(ctx, q.inboxKeyLock, in.consumer, d.Key).Scan(&last); err != nil {
		return false, 0, err
	}
	return d.Seq == last+1 || d.Seq == 1 || (last == 0 && in.c.firstSeenStarts), last, nil
}

// advance records d as its key's last applied event, in tx.
func (in *Inbox) advance(ctx context.Context, tx *sql.Tx, d broker.Delivery) error {
	_, err := tx.ExecContext(ctx, in.s.q.inboxKeyAdvance, d.Seq, in.consumer, d.Key)
	return err
}

// refuse records and reports an event ahead of a gap.
func (in *Inbox) refuse(d broker.Delivery, last int64) error {
	now := time.Now()
	in.mu.Lock()
	b, ok := in.blocked[d.Key]
	switch {
	case ok:
		b.Last, b.Applied = now, last
		b.Refusals++
		if d.Seq < b.Waiting {
			b.Waiting, b.EventID = d.Seq, d.ID
		}
		in.blocked[d.Key] = b
	case len(in.blocked) < maxBlocked:
		in.blocked[d.Key] = BlockedKey{Key: d.Key, Applied: last, Waiting: d.Seq, EventID: d.ID, Since: now, Last: now, Refusals: 1}
	}
	in.mu.Unlock()
	if !ok {
		in.c.logger.Warn("outbox inbox: key blocked by a gap in its sequence: its next event has not arrived, a later one waits",
			"consumer", in.consumer, "key", d.Key, "applied", last, "waiting", d.Seq, "id", d.ID, "source", d.Source)
	}
	if d.Seq <= last {
		return fmt.Errorf("outbox inbox: consumer %s, key %s: event %s is number %d, at or below the last applied %d, with an id "+
			"never applied: %w (retried: it applies once number 1 of a restarted sequence has; an event given up with "+
			"Inbox.Skip, or redelivered after the window, never does)", in.consumer, d.Key, d.ID, d.Seq, last, ErrOutOfOrder)
	}
	return fmt.Errorf("outbox inbox: consumer %s, key %s: event %s is number %d, the last applied is %d: %w "+
		"(retried; if number %d never comes, Inbox.Skip gives it up)", in.consumer, d.Key, d.ID, d.Seq, last, ErrOutOfOrder, last+1)
}

// applied forgets a key's gap once one of its events applied.
func (in *Inbox) applied(d broker.Delivery) {
	in.mu.Lock()
	b, ok := in.blocked[d.Key]
	if ok {
		delete(in.blocked, d.Key)
	}
	in.mu.Unlock()
	if ok {
		in.c.logger.Info("outbox inbox: key unblocked", "consumer", in.consumer, "key", d.Key, "applied", d.Seq,
			"blocked_for", time.Since(b.Since).Round(time.Millisecond))
	}
}

// Blocked lists the keys this inbox saw blocked by a gap and that have not
// moved on since, oldest first: an event of the key arrived ahead of
// another one that has not (still in flight, or dead-lettered), and is
// refused until that one applies. A gap that lasts longer than the
// subscriber's retries is one that will not fill by itself: the refused
// events end in the dead-letter queue too, after their attempts. The
// operator then re-drives the missing event (and the refused ones after
// it), or gives it up with [Inbox.Skip]. The list is this process's view
// (at most 10,000 keys); each key is also logged at Warn when it blocks and
// at Info when it moves on.
func (in *Inbox) Blocked() []BlockedKey {
	in.mu.Lock()
	out := make([]BlockedKey, 0, len(in.blocked))
	for _, b := range in.blocked {
		out = append(out, b)
	}
	in.mu.Unlock()
	slices.SortFunc(out, func(a, b BlockedKey) int {
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		return strings.Compare(a.Key, b.Key)
	})
	return out
}

// Skip gives up the events of key up to number seq: it records seq as
// the key's last applied, so that event seq+1 applies next. A skipped
// event that arrives later (a re-drive) is refused like one ahead of a
// gap: it is never applied out of order. Skip never moves the key back: a
// seq at or below the last applied changes nothing. An empty key or a seq
// below 1 is an error matching broker.ErrInvalid.
func (in *Inbox) Skip(ctx context.Context, key string, seq int64) error {
	if key == "" || seq < 1 {
		return invalid("inbox skip", fmt.Errorf("key %q, seq %d: want a key and a seq of at least 1", key, seq))
	}
	tx, err := in.s.db.BeginTx(ctx, in.s.txOpts)
	if err != nil {
		return dbErr("inbox skip", fmt.Errorf("begin: %w", err))
	}
	defer func() { _ = tx.Rollback() }()
	d := broker.Delivery{Message: broker.Message{Key: key}, Seq: seq}
	_, last, err := in.checkOrder(ctx, tx, d)
	if err != nil {
		return dbErr("inbox skip", err)
	}
	if seq <= last {
		return nil
	}
	if err := in.advance(ctx, tx, d); err != nil {
		return dbErr("inbox skip", err)
	}
	if err := tx.Commit(); err != nil {
		return dbErr("inbox skip", fmt.Errorf("commit: %w", err))
	}
	in.c.logger.Warn("outbox inbox: events skipped by the operator", "consumer", in.consumer, "key", key, "from", last+1, "to", seq)
	in.mu.Lock()
	if b, ok := in.blocked[key]; ok && b.Waiting <= seq+1 {
		delete(in.blocked, key)
	}
	in.mu.Unlock()
	return nil
}

// Applied returns the sequence number of key's last event this consumer
// applied (or skipped), 0 when none.
func (in *Inbox) Applied(ctx context.Context, key string) (int64, error) {
	var last int64
	err := in.s.db.QueryRowContext(ctx, in.s.q.inboxKeyGet, in.consumer, key).Scan(&last)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, dbErr("inbox", err)
	}
	return last, nil
}
