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

// channel is one AMQP channel. The adapter's own methods (lower case) say
// what it does, with amqp091's rows of flags fixed once, in amqpChannel:
// every exchange and queue durable and kept when unused, every call
// waiting for the broker's answer, deliveries acknowledged by hand, every
// publish mandatory. The others are amqp091's methods as they are.
type channel interface {
	// declareExchange declares x as its spec says (kind, arguments), or
	// checks that it exists when x.passive; see [exchangeSpec.declare] for
	// the alternate exchange.
	declareExchange(x exchangeSpec) error
	// declareQueue declares q, shared, with its type and arguments.
	declareQueue(q Queue) error
	// bind routes the messages of exchange whose routing key matches key
	// to queue.
	bind(queue, key, exchange string) error
	// confirmMode puts the channel in publisher-confirm mode.
	confirmMode() error
	// prefetch bounds how many unacknowledged deliveries the broker pushes
	// to each consumer the channel starts next (basic.qos, per consumer).
	prefetch(n int) error
	// consume starts consuming queue as consumer tag, acknowledging each
	// delivery by hand.
	consume(queue, tag string) (<-chan amqp.Delivery, error)
	// cancel stops the consumer tag: the broker sends no more, and its
	// deliveries channel closes.
	cancel(tag string) error
	// publish publishes msg, mandatory (an unroutable message comes back
	// through NotifyReturn), on a confirm-mode channel and returns its
	// pending confirm.
	publish(exchange, key string, msg amqp.Publishing) (pendingConfirm, error)

	NotifyReturn(chan amqp.Return) chan amqp.Return
	NotifyClose(chan *amqp.Error) chan *amqp.Error
	// GetNextPublishSeqNo is the delivery tag the next publish gets.
	GetNextPublishSeqNo() uint64
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

// The flags amqpChannel passes amqp091, named.
const (
	durable    = true
	autoDelete = false // kept when unused
	internal   = false // clients may publish to an exchange
	exclusive  = false // a queue or consumer others may use too
	noWait     = false // wait for the broker's answer
	autoAck    = false // deliveries acknowledged by hand
	noLocal    = false // (unsupported by RabbitMQ)
	mandatory  = true  // an unroutable message comes back
	immediate  = false // (unsupported by RabbitMQ)
)

func (c amqpChannel) declareExchange(x exchangeSpec) error {
	if x.passive {
		return c.ExchangeDeclarePassive(x.name, x.kind, durable, autoDelete, internal, noWait, x.args)
	}
	return c.ExchangeDeclare(x.name, x.kind, durable, autoDelete, internal, noWait, x.args)
}

func (c amqpChannel) declareQueue(q Queue) error {
	_, err := c.QueueDeclare(q.Name, durable, autoDelete, exclusive, noWait, q.args())
	return err
}

func (c amqpChannel) bind(queue, key, exchange string) error {
	return c.QueueBind(queue, key, exchange, noWait, nil)
}

func (c amqpChannel) confirmMode() error { return c.Confirm(noWait) }

func (c amqpChannel) prefetch(n int) error { return c.Qos(n, 0, false) }

func (c amqpChannel) consume(queue, tag string) (<-chan amqp.Delivery, error) {
	return c.Consume(queue, tag, autoAck, exclusive, noLocal, noWait, nil)
}

func (c amqpChannel) cancel(tag string) error { return c.Cancel(tag, noWait) }

func (c amqpChannel) publish(exchange, key string, msg amqp.Publishing) (pendingConfirm, error) {
	dc, err := c.PublishWithDeferredConfirm(exchange, key, mandatory, immediate, msg)
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
