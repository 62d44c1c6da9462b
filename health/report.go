package health

import (
	"context"
	"time"
)

// WithStatus returns c with status as its [Reporter]: the details of the
// status document. For the Publisher of domainevents.Open (spool depth,
// forwarder counters, destination):
//
//	h.Add("publisher", health.WithStatus(pub, pub.Status))
func WithStatus[S any](c Checker, status func(context.Context) S) Checker {
	return reporter{c, func(ctx context.Context) any { return status(ctx) }}
}

// WithStats returns c with stats as its [Reporter], for parts whose
// counters take no ctx: an outbox relay, an adapter, a subscriber.
//
//	h.Add("relay", health.WithStats(relay, relay.Stats))
func WithStats[S any](c Checker, stats func() S) Checker {
	return reporter{c, func(context.Context) any { return stats() }}
}

type reporter struct {
	Checker
	report func(context.Context) any
}

func (r reporter) Report(ctx context.Context) any { return r.report(ctx) }

// Backlogger is what an outbox store reports (outbox.Store.Backlog): the
// rows waiting to be published and the age of the oldest.
type Backlogger interface {
	Backlog(ctx context.Context) (rows int64, lag time.Duration, err error)
}

// BacklogStatus is the details of a [Backlog] part.
type BacklogStatus struct {
	// Rows waiting to be published (pending, including those backing off).
	Rows int64
	// LagSeconds is the age of the oldest of them (0 when none).
	LagSeconds float64
}

// Backlog returns a part that reports an outbox's backlog and lag: ready
// when the query succeeds (the database answers), whatever the backlog,
// since a readiness probe failing on a backlog would only take the service
// out while the relay catches up. Alert on the lag instead (the
// domainevents.outbox.lag metric).
//
//	h.Add("outbox", health.Backlog(store))
func Backlog(b Backlogger) Checker { return backlog{b} }

type backlog struct{ b Backlogger }

func (b backlog) Health(ctx context.Context) error {
	_, _, err := b.b.Backlog(ctx)
	return err
}

func (b backlog) Report(ctx context.Context) any {
	rows, lag, err := b.b.Backlog(ctx)
	if err != nil {
		return nil // Health said why
	}
	return BacklogStatus{Rows: rows, LagSeconds: lag.Seconds()}
}
