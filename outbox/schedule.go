package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/domainevents/domainevents/broker"
)

// Scheduled events: a message stored with a deliver-at time ([WithDeliverAt])
// is published by the relay at that time, not before.
//
// The row's due time (next_attempt_at, which the claim already respects
// and which retries push back) starts at the deliver-at time instead of
// now, and the deliver_at column keeps it, so that nothing makes the row
// due early (the broker's return makes only rows past their deliver-at
// time due) and [Store.Backlog] counts it from then.
//
// A scheduled row is in a lane of its own: its msg_key is
// scheduledKeyPrefix + its id, with seq 1, and the message's own Key is
// kept in the stored headers under headerScheduledKey, which the relay
// puts back (and removes) before publishing. The key's sequence counter is
// not touched: the message has no number in its key's sequence and is
// published without broker.HeaderSeq. So it neither holds its key's later
// events until its time (a head that is not due would hold the key) nor
// leaves a gap in the key's sequence that the consumers' [Inbox] would
// wait for (ErrOutOfOrder) until it came.

// scheduledKeyPrefix starts the msg_key of a scheduled row's own lane;
// [Store.Publish] refuses message keys that start with it.
const scheduledKeyPrefix = "domainevents:at:"

// headerScheduledKey holds a scheduled message's Key in its stored
// headers; the relay removes it before publishing.
const headerScheduledKey = "domainevents-outbox-key"

type deliverAtKey struct{}

// WithDeliverAt returns a ctx with which [Store.Publish] stores its
// message to be published at t, not before: "send order.payment_reminder
// in 30 minutes" is
//
//	err := store.Transact(ctx, func(ctx context.Context, tx *sql.Tx) error {
//		return eventbus.Publish(outbox.WithDeliverAt(ctx, time.Now().Add(30*time.Minute)), bus, reminder)
//	})
//
// A relay publishes it once the database's clock reaches t (t is an
// absolute time; its zone does not matter), within its poll interval
// ([WithPollInterval]) after that; a relay started later, or after a
// crash, still does. A t in the past means at once. The zero t stores
// messages unscheduled again (a ctx derived from one with a deliver-at
// time).
//
// A scheduled message is not part of its key's order: it does not hold
// the key's later events until its time, takes no number in the key's
// sequence and is published without broker.HeaderSeq, so that an [Inbox]
// applies it when it comes without waiting for it or making the key's
// other events wait. Its Key still travels (the Kafka record key, the
// RabbitMQ event-key header): consumers' per-key lanes still run it one at
// a time with the key's other events. Two scheduled messages of one key
// are not ordered between themselves either. See the package doc,
// "Scheduled events".
//
// Every message published with this ctx is scheduled: pass it to the one
// Publish (or eventbus.Publish) call that should be.
func WithDeliverAt(ctx context.Context, t time.Time) context.Context {
	return context.WithValue(ctx, deliverAtKey{}, t)
}

// DeliverAtFrom returns the deliver-at time ctx carries ([WithDeliverAt]),
// and false when there is none (or it is the zero time).
func DeliverAtFrom(ctx context.Context) (time.Time, bool) {
	t, _ := ctx.Value(deliverAtKey{}).(time.Time)
	return t, !t.IsZero()
}

// newScheduleSQL returns the insert of a scheduled message: its own lane (msg_key,
// seq 1), due and deliver_at at its time. Arguments: id, name, lane, body,
// content type, headers, occurred_at, deliver_at (twice).
func newScheduleSQL(d Dialect, t Tables, now string) string {
	q := `INSERT INTO ` + t.Outbox + ` (id, name, msg_key, seq, body, content_type, headers, occurred_at, created_at, next_attempt_at, deliver_at)
VALUES (?, ?, ?, 1, ?, ?, ?, ?, ` + now + `, ?, ?)`
	return queries{d: d}.rebind(q)
}

// publishScheduled stores msg (checked, its hook applied) in tx to be
// published at at, in a lane of its own.
func (s *Store) publishScheduled(ctx context.Context, tx *sql.Tx, msg broker.Message, at time.Time) error {
	lane := scheduledKeyPrefix + msg.ID
	if len(lane) > maxField {
		return invalid("publish", fmt.Errorf("message %.64s: ID is %d bytes, at most %d are allowed for a scheduled message (WithDeliverAt)",
			msg.ID, len(msg.ID), maxField-len(scheduledKeyPrefix)))
	}
	h := make(map[string]string, len(msg.Headers)+1)
	for k, v := range msg.Headers {
		h[k] = v
	}
	h[headerScheduledKey] = msg.Key
	headers, err := json.Marshal(h)
	if err != nil {
		return invalid("publish", fmt.Errorf("message %s: headers: %w", msg.ID, err))
	}
	occurred := msg.Time
	if occurred.IsZero() {
		occurred = time.Now()
	}
	body := msg.Body
	if body == nil {
		body = []byte{} // NOT NULL
	}
	occ, due := s.timeArg(occurred), s.timeArg(at)
	if _, err := tx.ExecContext(ctx, s.scheduleSQL, msg.ID, msg.Name, lane, body, msg.ContentType, string(headers), occ, due, due); err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return ctx.Err()
		}
		return dbErr("publish", fmt.Errorf("message %s %s (scheduled): %w", msg.Name, msg.ID, err))
	}
	return nil
}

// checkScheduledKey refuses a message Key that would read as a scheduled
// row's lane.
func checkScheduledKey(msg broker.Message) error {
	if strings.HasPrefix(msg.Key, scheduledKeyPrefix) {
		return invalid("publish", fmt.Errorf("message %s: Key %.64q starts with %q, which the outbox reserves for scheduled messages", msg.ID, msg.Key, scheduledKeyPrefix))
	}
	return nil
}

// unschedule turns a claimed scheduled row's message back into the one
// Publish stored: its own Key instead of its lane, without the header
// that kept it. It reports whether the row was scheduled (such a message
// gets no broker.HeaderSeq).
func unschedule(m *broker.Message) bool {
	if !strings.HasPrefix(m.Key, scheduledKeyPrefix) {
		return false
	}
	if k, ok := m.Headers[headerScheduledKey]; ok {
		m.Key = k
		delete(m.Headers, headerScheduledKey)
	}
	return true
}

// Schema upgrades: columns added after the first release, which
// CREATE TABLE IF NOT EXISTS does not add to an existing table.

// execQuerier is a transaction or a connection of Migrate.
type execQuerier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// upgrade adds the deliver_at column to an outbox table made before it
// existed. It runs under Migrate's lock, after the DDL: a concurrent
// caller waits, then finds the column.
func (s *Store) upgrade(ctx context.Context, db execQuerier) error {
	o := s.tables.Outbox
	var n int
	var err error
	switch s.dialect {
	case Postgres:
		err = db.QueryRowContext(ctx, `SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = 'deliver_at' AND NOT attisdropped`, o).Scan(&n)
	case MySQL:
		var schema any // the connection's database unless the name says
		name := o
		if i := strings.IndexByte(o, '.'); i >= 0 {
			schema, name = o[:i], o[i+1:]
		}
		err = db.QueryRowContext(ctx, `SELECT count(*) FROM information_schema.columns WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ? AND column_name = 'deliver_at'`, schema, name).Scan(&n)
	case SQLite:
		err = db.QueryRowContext(ctx, `SELECT count(*) FROM pragma_table_info(?) WHERE name = 'deliver_at'`, o).Scan(&n)
	}
	if err != nil {
		return fmt.Errorf("upgrade %s: %w", o, err)
	}
	if n > 0 {
		return nil
	}
	if _, err := db.ExecContext(ctx, `ALTER TABLE `+o+` ADD COLUMN `+deliverAtColumn[s.dialect]); err != nil {
		return fmt.Errorf("upgrade %s: %w", o, err)
	}
	return nil
}

// deliverAtColumn is the deliver_at column's definition per dialect, as
// CREATE TABLE has it and upgrade adds it.
var deliverAtColumn = map[Dialect]string{
	Postgres: "deliver_at TIMESTAMPTZ",
	MySQL:    "deliver_at DATETIME(6) NULL",
	SQLite:   "deliver_at INTEGER",
}
