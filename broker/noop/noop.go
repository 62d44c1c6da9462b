package noop

import (
	"context"
	"sync/atomic"

	"github.com/domainevents/domainevents/broker"
)

// Broker accepts every valid message and discards it. Safe for concurrent use.
type Broker struct {
	closed    atomic.Bool
	published atomic.Int64
}

// New returns a noop broker.
func New() *Broker { return &Broker{} }

// Publish validates msg and discards it. It returns ctx.Err() for a done ctx,
// an error matching broker.ErrInvalid for an invalid message and
// broker.ErrClosed after Close, like a real adapter.
func (b *Broker) Publish(ctx context.Context, msg broker.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.closed.Load() {
		return &broker.Error{Op: "noop: publish", Kind: broker.ErrClosed}
	}
	if err := msg.Validate(); err != nil {
		return err
	}
	b.published.Add(1)
	return nil
}

// Close makes later publishes fail with broker.ErrClosed. It has nothing to
// flush; calling it again returns nil.
func (b *Broker) Close(context.Context) error {
	b.closed.Store(true)
	return nil
}

// Published returns how many messages were accepted.
func (b *Broker) Published() int64 { return b.published.Load() }
