package brokertest

import (
	"context"
	"fmt"
	"sync"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/events"
)

// Recorder is an in-memory [broker.Broker] for unit tests: it keeps a copy of
// every message it accepts. Fail, when set, decides each publish's outcome
// (return an error to refuse the message, e.g. &broker.Error{Kind:
// broker.ErrUnavailable}). Safe for concurrent use.
type Recorder struct {
	// Fail, if not nil, is called for each valid message; a non-nil result
	// is returned from Publish and the message is not recorded.
	Fail func(broker.Message) error

	mu     sync.Mutex
	msgs   []broker.Message
	closed bool
}

// Publish validates msg, honours ctx, and records a copy of msg.
func (r *Recorder) Publish(ctx context.Context, msg broker.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := msg.Validate(); err != nil {
		return err
	}
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return &broker.Error{Op: "recorder: publish", Kind: broker.ErrClosed}
	}
	if r.Fail != nil {
		if err := r.Fail(msg); err != nil {
			return err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, msg.Clone())
	return nil
}

// Close marks the recorder closed; later publishes return broker.ErrClosed.
func (r *Recorder) Close(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return nil
}

// Messages returns copies of the recorded messages, in publish order.
func (r *Recorder) Messages() []broker.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]broker.Message, len(r.msgs))
	for i, m := range r.msgs {
		out[i] = m.Clone()
	}
	return out
}

// Events decodes the recorded messages into their typed events, in publish
// order, with reg (nil: events.NewRegistry(), the order events): what a
// unit test of code that publishes through a bridge.Forwarder checks.
func (r *Recorder) Events(reg *events.Registry) ([]events.Envelope, error) {
	if reg == nil {
		reg = events.NewRegistry()
	}
	var out []events.Envelope
	for _, m := range r.Messages() {
		env, err := reg.Decode(m.Body)
		if err != nil {
			return out, fmt.Errorf("recorded message %s: %w", m.ID, err)
		}
		out = append(out, env)
	}
	return out, nil
}

// Reset forgets the recorded messages.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = nil
}
