package outbox

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/domainevents/domainevents/broker"
)

// markPublished marks the batch's rows published (those this relay still
// holds) and returns the keys that have a later row to advance to.
func (r *Relay) markPublished(ok []result) []string {
	args := make([]any, 0, len(ok)+1)
	args = append(args, r.owner)
	stmt := r.s.q.markPublished
	if r.s.dialect == Postgres {
		ids := make([]string, len(ok))
		for i, res := range ok {
			ids[i] = res.row.msg.ID
		}
		args = append(args, pgArray(ids)) // one text[]
	} else {
		for _, res := range ok {
			args = append(args, res.row.msg.ID)
		}
		stmt += r.s.q.in(1, len(ok))
	}
	ctx, cancel := context.WithTimeout(r.run, r.c.lease/2)
	defer cancel()
	res, err := r.s.db.ExecContext(ctx, stmt, args...)
	for try := 1; err != nil && try < 3 && deadlock(err) && ctx.Err() == nil; try++ {
		// The database chose this mark as a deadlock's victim and rolled
		// it back: it changed nothing; marking again is safe.
		res, err = r.s.db.ExecContext(ctx, stmt, args...)
	}
	if err != nil {
		// Unmarked rows stay leased until the lease ends, then are
		// published again: a duplicate, never a loss.
		r.setErr(dbErr("mark", err))
		r.c.logger.Warn("outbox relay: could not mark rows published; they will be published again after the lease", "owner", r.owner, "rows", len(ok), "err", err)
		return nil
	}
	n, _ := res.RowsAffected()
	r.published.Add(n)
	ids := make([]string, len(ok))
	okKeys := make([]string, len(ok))
	for i, res := range ok {
		ids[i], okKeys[i] = res.row.msg.ID, res.row.msg.Key
	}
	r.noteSuccess(ids, okKeys)
	if lost := int64(len(ok)) - n; lost > 0 {
		r.lostLeases.Add(lost)
		r.c.logger.Warn("outbox relay: lease lost before marking: another relay published or will publish these rows again", "owner", r.owner, "rows", lost)
	}
	keys := make([]string, 0, len(ok))
	seen := make(map[string]bool, len(ok))
	for _, res := range ok {
		if k := res.row.msg.Key; res.row.more && !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	return keys
}

// fail settles a failed publish by what the failure says (see classify):
// the broker's failures (unavailable, timed out, unroutable, unauthorized,
// rejected) back off, capped at WithBrokerBackoff, for as long as it
// takes; a message that can never be published (invalid, too large) is
// dead-lettered at once, one the broker already dead-lettered is marked
// dead; a failure that may be the message's own (no category, a panic)
// backs off, and is dead-lettered at the WithMaxAttempts-th. A failure
// caused by the relay's own shutdown only lets the row go.
func (r *Relay) fail(res result) {
	w := res.row
	ctx, cancel := context.WithTimeout(r.run, r.c.lease/2)
	defer cancel()
	if r.run.Err() != nil {
		return // Close gave up: the lease runs out, the row is tried again
	}
	cat := broker.Category(res.err)
	reason := truncate(res.err.Error(), 2000)
	var err error
	switch class := classify(res.err); {
	case class == failParked:
		// The broker (a retry.Broker with its own sink) already keeps it.
		err = r.markDead(ctx, w, cat, reason)
	case class == failPermanent:
		err = r.deadLetter(ctx, w, res, cat, reason)
	case class == failOwn && r.ownFault(w.msg.ID) >= r.c.maxAttempts:
		err = r.deadLetter(ctx, w, res, cat, reason)
	case class == failOwn:
		err = r.retry(ctx, w, res, cat, reason, r.c.backoff.Delay(w.attempts))
	case errors.Is(res.err, broker.ErrClosed) && !errors.Is(res.err, broker.ErrUnavailable):
		// The broker was closed under us: nothing was tried; let it go.
		r.noteBrokerFailure(class, cat, res.err, res.row.msg.Key)
		_, err = r.s.db.ExecContext(ctx, r.s.q.markRetry, r.c.poll.Microseconds(), reason, r.owner, w.msg.ID)
	default: // failUnavailable, failRefused: the broker's doing, never the row's end
		r.noteBrokerFailure(class, cat, res.err, res.row.msg.Key)
		err = r.retry(ctx, w, res, cat, reason, r.brokerPolicy().Delay(w.attempts))
	}
	if err != nil {
		err = dbErr("settle", err)
		r.setErr(err)
		r.c.logger.Warn("outbox relay: could not record a failed publish; the row is tried again after its lease", "owner", r.owner,
			"id", w.msg.ID, "err", err)
	}
}

// retry backs the row off for delay, counting and reporting the retry.
func (r *Relay) retry(ctx context.Context, w row, res result, cat, reason string, delay time.Duration) error {
	r.retried.Add(1)
	r.observe(broker.Observation{Kind: broker.ObservedRetry, MessageID: w.msg.ID, MessageName: w.msg.Name,
		Category: cat, Attempt: w.attempts, Delay: delay, Value: delay.Seconds(), Err: res.err})
	_, err := r.s.db.ExecContext(ctx, r.s.q.markRetry, delay.Microseconds(), reason, r.owner, w.msg.ID)
	return err
}

// deadLetter puts the message into the sink (if any), then marks its row
// dead so that its key moves on. If the sink fails, the row backs off and
// is tried again.
func (r *Relay) deadLetter(ctx context.Context, w row, res result, cat, reason string) error {
	if r.c.sink != nil {
		dl := broker.NewDeadLetter(w.msg, nil, w.attempts, res.when, res.when)
		dl.Reason, dl.Category = reason, cat // the relay's own words: the cause may be a panic or a size
		if err := r.c.sink.Put(ctx, dl); err != nil {
			r.c.logger.Error("outbox relay: dead-letter sink failed; the row stays pending", "id", w.msg.ID, "err", err)
			_, merr := r.s.db.ExecContext(ctx, r.s.q.markRetry, r.c.backoff.Delay(w.attempts).Microseconds(),
				truncate("dead-letter sink: "+err.Error()+"; publish: "+reason, 2000), r.owner, w.msg.ID)
			return merr
		}
	}
	return r.markDead(ctx, w, cat, reason)
}

func (r *Relay) markDead(ctx context.Context, w row, cat, reason string) error {
	res, err := r.s.db.ExecContext(ctx, r.s.q.markDead, reason, r.owner, w.msg.ID)
	if err != nil {
		return err
	}
	r.forgetFaults(w.msg.ID)
	if n, _ := res.RowsAffected(); n == 0 {
		r.lostLeases.Add(1)
		return nil
	}
	r.deadLettered.Add(1)
	r.c.logger.Error("outbox relay: message dead-lettered; its key moves on", "id", w.msg.ID, "name", w.msg.Name,
		"key", w.msg.Key, "seq", w.seq, "attempts", w.attempts, "reason", reason)
	r.observe(broker.Observation{Kind: broker.ObservedDeadLetter, MessageID: w.msg.ID, MessageName: w.msg.Name,
		Category: cat, Attempt: w.attempts})
	return nil
}

// deadlock reports a statement the database rolled back to break a
// deadlock (MySQL and MariaDB error 1213, PostgreSQL SQLSTATE 40P01), by
// its text: the library imports no driver.
func deadlock(err error) bool {
	s := err.Error()
	return strings.Contains(s, "Error 1213") || strings.Contains(s, "40P01") || strings.Contains(s, "deadlock detected")
}
