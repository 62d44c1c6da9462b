package rabbitmq

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
)

// declarations returns what the first channel opened on srv that declared
// something declared (a subscriber also connects for its dead letters,
// which declare nothing). The constructors return once they declared.
func (f *fakeServer) declarations(t *testing.T) []string {
	t.Helper()
	f.mu.Lock()
	conns := append([]*fakeConn(nil), f.made...)
	f.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		open := append([]*fakeChannel(nil), c.open...)
		c.mu.Unlock()
		for _, ch := range open {
			if d := ch.declarations(); len(d) > 0 {
				return d
			}
		}
	}
	t.Fatal("no channel declared anything")
	return nil
}

// publisherOpts and subscriberOpts give connection options to one role.
func publisherOpts(opts []Option) []PublisherOption {
	r := make([]PublisherOption, len(opts))
	for i, o := range opts {
		r[i] = o
	}
	return r
}

func subscriberOpts(opts []Option) []SubscriberOption {
	r := make([]SubscriberOption, len(opts))
	for i, o := range opts {
		r[i] = o
	}
	return r
}

// The publisher, the subscriber and the dead-letter sink build their
// exchange from one spec: given the same options, the publisher and the
// subscriber make the same declarations of the exchange and its alternate.
func TestFakeOneExchangeSpecPerDestination(t *testing.T) {
	brokertest.CheckNoLeak(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	opts := func(srv *fakeServer) []Option {
		return []Option{withDialer(srv.dial), WithAlternateExchange("orders.unroutable"), WithLogger(quietLogger()),
			WithReconnectBackoff(time.Millisecond, 5*time.Millisecond)}
	}
	exchange := []string{
		"exchange orders.unroutable fanout map[]",
		"queue orders.unroutable map[]",
		"bind orders.unroutable  orders.unroutable",
		"exchange orders.events topic map[alternate-exchange:orders.unroutable]",
	}

	pubSrv := newFakeServer()
	b, err := New(ctx, fakeConfig(), publisherOpts(opts(pubSrv))...)
	require.NoError(t, err)
	defer func() { assert.NoError(t, b.Close(ctx)) }()
	assert.Equal(t, exchange, pubSrv.declarations(t), "the publisher")

	subSrv := newFakeServer()
	s, err := NewSubscriber(ctx, fakeConfig(), Queue{Name: "billing"}, func(context.Context, broker.Delivery) error { return nil },
		subscriberOpts(opts(subSrv))...)
	require.NoError(t, err)
	defer func() { assert.NoError(t, s.Close(ctx)) }()
	sub := subSrv.declarations(t)
	require.GreaterOrEqual(t, len(sub), len(exchange))
	assert.Equal(t, exchange, sub[:len(exchange)], "the subscriber: the same exchange, declared alike")
	assert.Equal(t, []string{"queue billing map[]", "bind billing # orders.events", "queue billing.dlq map[]"}, sub[len(exchange):])

	sinkSrv := newFakeServer()
	sink, err := NewDeadLetterSink(ctx, fakeConfig(), publisherOpts(opts(sinkSrv))...)
	require.NoError(t, err)
	defer func() { assert.NoError(t, sink.Close(ctx)) }()
	assert.Equal(t, []string{"exchange orders.events.dlx topic map[]", "queue orders.events.dlq map[]", "bind orders.events.dlq # orders.events.dlx"},
		sinkSrv.declarations(t), "the sink's own exchange routes everything: no alternate")
}

// A refused declaration for a different alternate exchange says which
// option to align.
func TestMismatchHint(t *testing.T) {
	refused := &amqp.Error{Code: amqp.PreconditionFailed, Server: true,
		Reason: "PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange 'orders.events' in vhost '/': received none but current is the value 'ae' of type 'longstr'"}
	err := declareErr("exchange orders.events", mismatchHint(refused))
	assert.ErrorIs(t, err, broker.ErrInvalid)
	assert.ErrorIs(t, err, errAlternateMismatch)
	assert.Contains(t, err.Error(), "WithAlternateExchange")
	var ae *amqp.Error
	assert.ErrorAs(t, err, &ae, "the native error stays reachable")

	other := &amqp.Error{Code: amqp.PreconditionFailed, Reason: "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'orders.events'"}
	assert.NotErrorIs(t, declareErr("exchange orders.events", mismatchHint(other)), errAlternateMismatch)
}
