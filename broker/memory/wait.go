package memory

import (
	"context"
	"fmt"

	"github.com/domainevents/domainevents/broker"
)

// The waits below block until their condition holds, woken by each
// change (a publish, an acknowledgement, a dead letter), never polling or
// sleeping; they return an error wrapping ctx.Err() that says what they
// waited for and what they saw when ctx ends first. Give them a ctx with a
// deadline: context.WithTimeout(ctx, 10*time.Second).

// WaitHandled waits until the queue has acknowledged at least n deliveries
// whose handler returned nil (dead letters do not count), counting every
// subscriber the queue had.
func (s *Subscriber) WaitHandled(ctx context.Context, n int) error {
	return s.b.wait(ctx, func() bool { return len(s.q.handled) >= n },
		func() string {
			return fmt.Sprintf("%d handled deliveries on queue %q (%d so far)", n, s.q.name, len(s.q.handled))
		})
}

// WaitEvent waits until a delivery of event id has been handled (its
// handler returned nil and it was acknowledged) and returns it.
func (s *Subscriber) WaitEvent(ctx context.Context, id string) (broker.Delivery, error) {
	return s.waitFirst(ctx, fmt.Sprintf("event %s handled", id), func(d broker.Delivery) bool { return d.ID == id })
}

// WaitName waits until a delivery of an event named name (Message.Name,
// "order.created") has been handled and returns the first one.
func (s *Subscriber) WaitName(ctx context.Context, name string) (broker.Delivery, error) {
	return s.waitFirst(ctx, fmt.Sprintf("an event named %q handled", name), func(d broker.Delivery) bool { return d.Name == name })
}

func (s *Subscriber) waitFirst(ctx context.Context, what string, match func(broker.Delivery) bool) (broker.Delivery, error) {
	var got broker.Delivery
	from := 0 // the handled deliveries already looked at
	err := s.b.wait(ctx, func() bool {
		for ; from < len(s.q.handled); from++ {
			if match(s.q.handled[from]) {
				got = s.q.handled[from]
				return true
			}
		}
		return false
	}, func() string {
		return fmt.Sprintf("%s on queue %q (%d deliveries handled, none matching)", what, s.q.name, len(s.q.handled))
	})
	return clone(got), err
}

// WaitQuiet waits until the queue has settled every message published so
// far: handled, or dead-lettered after its retries. A delivery that keeps
// failing keeps the queue busy until it is dead-lettered. Publishes made
// while it waits are waited for too.
func (s *Subscriber) WaitQuiet(ctx context.Context) error {
	return s.b.wait(ctx, func() bool { return s.q.low >= len(s.b.msgs) },
		func() string {
			return fmt.Sprintf("queue %q to settle every message (%d of %d settled)", s.q.name, s.q.low, len(s.b.msgs))
		})
}

// Handled returns copies of the deliveries the queue acknowledged after
// their handler returned nil, in that order (a redelivered one that was
// handled again is there once per acknowledgement).
func (s *Subscriber) Handled() []broker.Delivery {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	out := make([]broker.Delivery, len(s.q.handled))
	for i, d := range s.q.handled {
		out[i] = clone(d)
	}
	return out
}

// Stats are a queue's counters.
type Stats struct {
	// Handled counts deliveries acknowledged after their handler returned
	// nil; DeadLettered those dead-lettered.
	Handled, DeadLettered int
	// Retries counts handler failures followed by another attempt;
	// Redelivered the deliveries made again after a Cut or a Close.
	Retries, Redelivered int
	// Pending counts the messages published and not yet settled.
	Pending int
}

// Stats returns the counters of the subscriber's queue.
func (s *Subscriber) Stats() Stats {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	return Stats{Handled: len(s.q.handled), DeadLettered: s.q.nDead, Retries: s.q.nRetries,
		Redelivered: s.q.nRedelivered, Pending: len(s.b.msgs) - s.q.low - len(s.q.settled)}
}

// clone returns a copy of d that shares nothing with it.
func clone(d broker.Delivery) broker.Delivery {
	d.Message = d.Message.Clone()
	return d
}

// WaitDeadLetter waits until a message of event id has been dead-lettered
// by any queue and returns its dead letter (see [Broker.DeadLetters]).
func (b *Broker) WaitDeadLetter(ctx context.Context, id string) (broker.Message, error) {
	var got broker.Message
	from := 0
	err := b.wait(ctx, func() bool {
		for ; from < len(b.dead); from++ {
			if b.dead[from].ID == id {
				got = b.dead[from]
				return true
			}
		}
		return false
	}, func() string {
		return fmt.Sprintf("event %s dead-lettered (%d dead letters, none of it)", id, len(b.dead))
	})
	return got.Clone(), err
}
