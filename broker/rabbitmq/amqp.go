package rabbitmq

import (
	"context"
	"errors"
	"net"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// The adapter talks to amqp091 through these narrow interfaces (what it
// uses, nothing more), so that its state machine can be driven by a fake
// in unit tests: every ordering of confirms, returns and connection losses,
// without a server and without sleeps. amqpConn adapts *amqp.Connection,
// amqpChannel *amqp.Channel.

// connection is one AMQP connection.
type connection interface {
	// Channel opens a channel.
	Channel() (channel, error)
	// NotifyClose registers for the connection's close: the error, then
	// the channel closes (no error on a graceful close).
	NotifyClose(chan *amqp.Error) chan *amqp.Error
	// NotifyBlocked registers for connection.blocked / unblocked.
	NotifyBlocked(chan amqp.Blocking) chan amqp.Blocking
	// CloseDeadline closes the connection, bounding the handshake (and
	// any socket write blocked on a broker that stopped reading).
	CloseDeadline(time.Time) error
	// IsClosed reports whether the connection is closed.
	IsClosed() bool
}

// channel is one AMQP channel.
type channel interface {
	ExchangeDeclare(name, kind string, durable, autoDelete, internal, noWait bool, args amqp.Table) error
	ExchangeDeclarePassive(name, kind string, durable, autoDelete, internal, noWait bool, args amqp.Table) error
	QueueDeclare(name string, durable, autoDelete, exclusive, noWait bool, args amqp.Table) (amqp.Queue, error)
	QueueBind(name, key, exchange string, noWait bool, args amqp.Table) error
	Confirm(noWait bool) error
	Qos(prefetchCount, prefetchSize int, global bool) error
	Consume(queue, consumer string, autoAck, exclusive, noLocal, noWait bool, args amqp.Table) (<-chan amqp.Delivery, error)
	Cancel(consumer string, noWait bool) error
	NotifyReturn(chan amqp.Return) chan amqp.Return
	NotifyClose(chan *amqp.Error) chan *amqp.Error
	// GetNextPublishSeqNo is the delivery tag the next publish gets.
	GetNextPublishSeqNo() uint64
	// PublishDeferred publishes msg on a confirm-mode channel and returns
	// its pending confirm.
	PublishDeferred(exchange, key string, mandatory bool, msg amqp.Publishing) (pendingConfirm, error)
	// IsClosed reports whether the channel is closed; amqp091 sets it
	// before it fails the pending confirms of a closing channel.
	IsClosed() bool
	Close() error
}

// pendingConfirm is one publish's confirm, as *amqp.DeferredConfirmation
// has it: Done is closed once the broker acked or nacked it, or the channel
// closed (Acked is then false).
//
// The publisher waits on these rather than on NotifyPublish: amqp091 makes
// one per publish in confirm mode anyway, and a NotifyPublish listener
// costs a timer per confirm on top (three allocations per message).
type pendingConfirm interface {
	Done() <-chan struct{}
	Acked() bool
}

// amqpChannel is a real *amqp.Channel as a channel.
type amqpChannel struct{ *amqp.Channel }

func (c amqpChannel) PublishDeferred(exchange, key string, mandatory bool, msg amqp.Publishing) (pendingConfirm, error) {
	dc, err := c.Channel.PublishWithDeferredConfirm(exchange, key, mandatory, false, msg)
	if err != nil {
		return nil, err
	}
	if dc == nil { // not in confirm mode: never the case for the publisher
		return nil, errors.New("channel is not in confirm mode")
	}
	return dc, nil
}

// dialFunc opens a connection to one target, within ctx.
type dialFunc func(ctx context.Context, t target) (connection, error)

// amqpConn is a real *amqp.Connection as a connection.
type amqpConn struct{ *amqp.Connection }

func (c amqpConn) Channel() (channel, error) {
	ch, err := c.Connection.Channel()
	if err != nil {
		return nil, err
	}
	return amqpChannel{ch}, nil
}

// dialAMQP is the real dialFunc: TCP (bounded by the dial timeout and by
// life, which Close cancels), then the TLS and AMQP handshakes, bounded by
// the same timeout.
func dialAMQP(o *connOptions, life context.Context) dialFunc {
	return func(ctx context.Context, t target) (connection, error) {
		cfg := amqp.Config{}
		if o.amqpConfig != nil {
			cfg = *o.amqpConfig
		}
		cfg.Heartbeat = o.heartbeat
		if o.tls != nil {
			cfg.TLSClientConfig = o.tls
		}
		if cfg.Properties == nil {
			cfg.Properties = amqp.NewConnectionProperties()
		}
		if o.connName != "" {
			cfg.Properties.SetClientConnectionName(o.connName)
		}
		if cfg.Dial == nil {
			timeout := o.dialTimeout
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
				timeout = max(time.Until(dl), time.Millisecond)
			}
			cfg.Dial = func(network, addr string) (net.Conn, error) {
				ctx, cancel := context.WithTimeout(ctx, timeout)
				defer cancel()
				stop := context.AfterFunc(life, cancel) // Close aborts a dial
				defer stop()
				conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				// Bound the TLS and AMQP handshakes; amqp091 clears it once open.
				if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
					_ = conn.Close()
					return nil, err
				}
				return conn, nil
			}
		}
		conn, err := amqp.DialConfig(t.url, cfg)
		if err != nil {
			return nil, err
		}
		return amqpConn{conn}, nil
	}
}
