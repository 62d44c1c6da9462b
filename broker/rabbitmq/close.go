package rabbitmq

import (
	"context"
	"fmt"
	"time"

	"github.com/domainevents/domainevents/broker"
)

// Close stops accepting messages (Publish then returns broker.ErrClosed),
// waits until every message in flight is confirmed or failed
// (re-publishing across reconnects meanwhile), then closes the connection.
// If ctx ends first, it stops waiting: the messages still unconfirmed fail
// with an error matching broker.ErrClosed (and, for those already sent,
// broker.ErrUnavailable and broker.ErrOutcomeUnknown: they may or may not
// have been stored), and Close returns ctx.Err(). Every goroutine of the
// Broker has ended when Close returns. A second Close returns nil.
func (b *Broker) Close(ctx context.Context) error {
	b.mu.Lock()
	if b.state != stateOpen {
		b.mu.Unlock()
		return nil
	}
	b.state = stateClosing
	close(b.closing)
	b.mu.Unlock()

	var err error
	for range cap(b.window) { // holding every token means nothing is in flight
		select {
		case b.window <- struct{}{}:
			continue
		case <-ctx.Done():
			err = ctx.Err()
		}
		break
	}

	b.mu.Lock()
	b.state = stateClosed
	s := b.sess
	b.sess = nil
	b.mu.Unlock()
	close(b.stopped)
	b.conn.stop() // aborts a dial in progress
	if s != nil {
		deadline := time.Now().Add(time.Second)
		if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
			deadline = dl
		}
		_ = s.conn.CloseDeadline(deadline) // its watcher hands back what is unconfirmed
	}
	b.wg.Wait()
	// A connection whose channel alone was lost (the broker refused a
	// message) is kept for the supervisor to reopen a channel on; Close may
	// have stopped it first.
	b.mu.Lock()
	last := b.last
	b.mu.Unlock()
	if last != nil && !last.conn.IsClosed() {
		_ = last.conn.CloseDeadline(time.Now().Add(time.Second))
	}

	// Whatever is left was never confirmed: fail it back to its caller.
	b.mu.Lock()
	left := b.queue
	b.queue = nil
	b.mu.Unlock()
	for _, r := range left {
		if r.sent {
			b.resolve(r, &broker.Error{Op: opPublish, Kind: broker.ErrClosed,
				Err: fmt.Errorf("closed before the broker confirmed message %s (%w); it may or may not have been stored: %w",
					r.pub.MessageId, broker.ErrUnavailable, broker.ErrOutcomeUnknown)})
		} else {
			b.resolve(r, &broker.Error{Op: opPublish, Kind: broker.ErrClosed,
				Err: fmt.Errorf("closed before message %s could be sent", r.pub.MessageId)})
		}
	}
	if len(left) > 0 {
		b.log.Warn("rabbitmq publisher: closed with unconfirmed messages", "component", b.conn.component, "count", len(left))
	}
	for len(b.window) > 0 { // the tokens Close took: nothing is in flight any more
		<-b.window
	}
	b.log.Info("rabbitmq publisher: closed", "component", b.conn.component, "stats", b.Stats())
	return err
}

// Health reports whether the Broker can publish now: nil when connected;
// otherwise an error that says why (not connected, with the last
// connection error; the broker blocking publishers on a resource alarm),
// matching broker.ErrUnauthorized when RabbitMQ refused the credentials or
// the virtual host (the Broker keeps trying: an operator may fix the
// user), broker.ErrUnavailable for any other reason, or broker.ErrClosed.
// It is what a readiness probe calls; it does not touch the network.
func (b *Broker) Health(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != stateOpen {
		return errClosed
	}
	if why := b.why(); why != "" {
		kind := broker.ErrUnavailable
		if b.sess == nil {
			kind = healthKind(b.lastErr)
		}
		return &broker.Error{Op: opPublish, Kind: kind, Err: fmt.Errorf("exchange %s: %s", b.exchange.name, why)}
	}
	return nil
}

// Stats counts what happened since New.
type Stats struct {
	// Published counts messages Publish accepted (a queued one its caller
	// gave up on is withdrawn, but still counted).
	Published int64
	// Confirmed counts broker acks of routed messages.
	Confirmed int64
	// Republished counts messages handed back by a lost session, to be
	// written again on the next one.
	Republished int64
	// Returned counts messages that came back unroutable.
	Returned int64
	// Nacked counts broker nacks.
	Nacked int64
	// Reconnects counts new connections after the first.
	Reconnects int64
	// InFlight is the number of messages accepted and not yet resolved.
	InFlight int
}

// Stats returns the counters.
func (b *Broker) Stats() Stats {
	return Stats{
		Published:   b.stats.published.Load(),
		Confirmed:   b.stats.confirmed.Load(),
		Republished: b.stats.republished.Load(),
		Returned:    b.stats.returned.Load(),
		Nacked:      b.stats.nacked.Load(),
		Reconnects:  b.stats.reconnects.Load(),
		InFlight:    len(b.window),
	}
}
