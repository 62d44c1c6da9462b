package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/domainevents/domainevents/broker"
)

// opRedrive is the Op of Redrive's errors.
const opRedrive = "rabbitmq: redrive"

// Redrive moves the dead letters o selects from the queue dlq back to
// where they were first published: "<queue>.dlq" of a [Subscriber], or
// "<exchange>.dlq" of a [NewDeadLetterSink]. Each goes to its original
// exchange with its original routing key (the event name), read from
// [HeaderOriginalExchange] and [HeaderOriginalRoutingKey]; a message
// without them (dead-lettered by an older version, or by RabbitMQ itself)
// goes to the exchange of its first death (x-first-death-exchange) or
// cfg.Exchange, with its type (the event name) as the routing key.
//
// A moved message keeps its body and properties (message id, type,
// timestamp, content type, persistence) and its headers, except those
// saying why and where it died (broker.HeaderDeadLetter*, the original
// exchange and routing key, the subscriber's retry headers, RabbitMQ's
// x-death): it goes back as it was first published, and a consumer
// handles it from attempt 1.
//
// Each selected message is re-published (mandatory, on a confirm-mode
// channel) and removed from dlq only after RabbitMQ confirmed it as
// routed: at least once, a crash in between leaves a duplicate, never a
// loss. A message that comes back unroutable or nacked stays in dlq, with
// the reason in its [broker.Redriven].Err. Messages not selected, and
// every message in a dry run, go back to dlq in their place when Redrive
// returns (it reads them without acknowledging; a quorum queue counts a
// delivery for each). Messages that reach dlq while Redrive runs, or that
// a previous run is still handing back, are left for the next run.
//
// cfg says how to connect (opts: TLS, URLs, a logger...; lazy connect is
// ignored). A missing queue is an error matching broker.ErrUnroutable; a
// connection failure one of the connect errors of [New]; bad options
// broker.ErrInvalid. Context errors are returned as they are. The result
// says what was done until then.
func Redrive(ctx context.Context, cfg broker.Config, dlq string, o broker.RedriveOptions, opts ...Option) (broker.RedriveResult, error) {
	var res broker.RedriveResult
	if err := o.Validate(); err != nil {
		return res, err
	}
	if dlq == "" {
		return res, &broker.Error{Op: opRedrive, Kind: broker.ErrInvalid, Err: errors.New("dead-letter queue name is empty")}
	}
	po := defaultPublisherOptions()
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt.applyPublisher(&po); err != nil {
			return res, optionsError(err)
		}
	}
	cfg, err := prepare(cfg, &po.conn)
	if err != nil {
		return res, err
	}
	c := newConnector("rabbitmq redrive", cfg, &po.conn)
	defer c.stop()
	var conn connection
	err = c.eachOnce(ctx, func(ctx context.Context) error {
		var err error
		conn, _, err = c.connect(ctx)
		return err
	})
	if err != nil {
		return res, err
	}
	defer func() { _ = conn.CloseDeadline(time.Now().Add(time.Second)) }()
	stop := context.AfterFunc(ctx, func() { _ = conn.CloseDeadline(time.Now().Add(time.Second)) }) // ctx ends a wait on the broker
	defer stop()
	ac, ok := conn.(amqpConn)
	if !ok {
		return res, &broker.Error{Op: opRedrive, Kind: broker.ErrInvalid, Err: errors.New("needs a real AMQP connection")}
	}
	r := redriver{dlq: dlq, exchange: cfg.Exchange, opts: o}
	return r.run(ctx, ac.Connection)
}

type redriver struct {
	dlq      string
	exchange string // where a message that does not say goes
	opts     broker.RedriveOptions
	ch       *amqp.Channel
	returns  chan amqp.Return
	closed   chan *amqp.Error
}

// errChannelClosed marks a move that ended the channel (a missing
// exchange, say): nothing more can be moved on it.
var errChannelClosed = errors.New("channel closed")

func (r *redriver) fail(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return wrap(opRedrive, what, err)
}

func (r *redriver) run(ctx context.Context, conn *amqp.Connection) (broker.RedriveResult, error) {
	var res broker.RedriveResult
	// A passive declare of a missing queue closes its channel: its own.
	probe, err := conn.Channel()
	if err != nil {
		return res, r.fail(ctx, "open channel", err)
	}
	q, err := probe.QueueDeclarePassive(r.dlq, true, false, false, false, nil)
	if err != nil {
		return res, r.fail(ctx, "queue "+r.dlq, err)
	}
	_ = probe.Close()
	if r.ch, err = conn.Channel(); err != nil {
		return res, r.fail(ctx, "open channel", err)
	}
	defer func() { _ = r.ch.Close() }() // what was read and not acknowledged goes back to the queue
	if !r.opts.DryRun {
		if err := r.ch.Confirm(false); err != nil {
			return res, r.fail(ctx, "confirm mode", err)
		}
		r.returns = r.ch.NotifyReturn(make(chan amqp.Return, 1))
		r.closed = r.ch.NotifyClose(make(chan *amqp.Error, 1))
	}
	// Only the messages there at the start: those re-published to an
	// exchange that routes back here, or dead-lettered meanwhile, wait.
	for res.Scanned < q.Messages && (r.opts.Limit == 0 || len(res.Selected) < r.opts.Limit) {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		d, ok, err := r.ch.Get(r.dlq, false)
		if err != nil {
			return res, r.fail(ctx, "get from "+r.dlq, err)
		}
		if !ok {
			break
		}
		res.Scanned++
		item := r.inspect(d)
		if !r.opts.Matches(item.DeadLetter) {
			continue
		}
		if !r.opts.DryRun {
			item.Err = r.move(ctx, d, item.To)
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			if item.Err == nil {
				res.Moved++
			}
		}
		res.Selected = append(res.Selected, item)
		if errors.Is(item.Err, errChannelClosed) {
			return res, item.Err
		}
	}
	return res, nil
}

// move re-publishes d to its destination and, once RabbitMQ confirmed it
// as routed, acknowledges it in the dead-letter queue.
func (r *redriver) move(ctx context.Context, d amqp.Delivery, to broker.Destination) error {
	p := amqp.Publishing{
		Headers: originalHeaders(d.Headers), ContentType: d.ContentType, ContentEncoding: d.ContentEncoding,
		DeliveryMode: d.DeliveryMode, Priority: d.Priority, CorrelationId: d.CorrelationId, ReplyTo: d.ReplyTo,
		Expiration: d.Expiration, MessageId: d.MessageId, Timestamp: d.Timestamp, Type: d.Type, UserId: d.UserId,
		AppId: d.AppId, Body: d.Body,
	}
	dc, err := r.ch.PublishWithDeferredConfirmWithContext(ctx, to.Name, to.RoutingKey, true, false, p)
	if err != nil {
		return r.fail(ctx, "publish", err)
	}
	select {
	case <-dc.Done():
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case ret, ok := <-r.returns: // sent before the ack: here by now (closed with the channel)
		if ok {
			return &broker.Error{Op: opRedrive, Kind: broker.ErrUnroutable,
				Err: fmt.Errorf("exchange %q has no queue bound for routing key %q: %d %s", to.Name, to.RoutingKey, ret.ReplyCode, ret.ReplyText)}
		}
	default:
	}
	if !dc.Acked() {
		if r.ch.IsClosed() {
			var reason error = errors.New("closed")
			select {
			case e := <-r.closed:
				if e != nil {
					reason = e
				}
			default:
			}
			err := wrap(opRedrive, fmt.Sprintf("exchange %q", to.Name), reason)
			return fmt.Errorf("%w: %w", errChannelClosed, err)
		}
		return &broker.Error{Op: opRedrive, Kind: broker.ErrUnavailable, Err: fmt.Errorf("exchange %q: nacked", to.Name)}
	}
	if err := d.Ack(false); err != nil {
		return r.fail(ctx, "ack in "+r.dlq+" (the message was re-published: it may be moved again, a duplicate)", err)
	}
	return nil
}

// inspect reads a dead letter and where it goes back to.
func (r *redriver) inspect(d amqp.Delivery) broker.Redriven {
	m := broker.Message{ID: d.MessageId, Name: d.Type, Body: d.Body, ContentType: d.ContentType, Time: d.Timestamp,
		Headers: stringHeaders(d.Headers)}
	to := broker.Destination{System: "rabbitmq", Name: r.exchange, RoutingKey: m.Name}
	if x, ok := d.Headers["x-first-death-exchange"].(string); ok && x != "" {
		to.Name = x
	}
	if x, ok := d.Headers[HeaderOriginalExchange].(string); ok {
		to.Name = x
	}
	if x, ok := d.Headers[HeaderOriginalRoutingKey].(string); ok && x != "" {
		to.RoutingKey = x
	}
	if m.Name == "" {
		m.Name = to.RoutingKey
	}
	dl, ours := broker.ParseDeadLetter(m)
	dl.Message.Headers = stringHeaders(originalHeaders(d.Headers))
	if !ours {
		dl.Reason = deathReason(d.Headers)
	}
	return broker.Redriven{DeadLetter: dl, To: to}
}

// deathReason says why RabbitMQ itself dead-lettered a message (no
// dead-letter headers of ours): "rejected", "expired", "delivery_limit".
func deathReason(h amqp.Table) string {
	if r, ok := h["x-first-death-reason"].(string); ok {
		q, _ := h["x-first-death-queue"].(string)
		return "dead-lettered by RabbitMQ: " + r + " in queue " + q
	}
	return ""
}

// originalHeaders are h without the headers a dead letter and its retries
// gained: the message's headers as first published.
func originalHeaders(h amqp.Table) amqp.Table {
	out := amqp.Table{}
	for k, v := range h {
		switch {
		case strings.HasPrefix(k, "dead-letter-"), strings.HasPrefix(k, "x-first-death-"), strings.HasPrefix(k, "x-last-death-"),
			k == "x-death", k == "x-delivery-count", k == "x-attempt", k == "x-first-failure", // the retry headers of earlier versions
			k == HeaderOriginalExchange, k == HeaderOriginalRoutingKey:
			continue
		}
		out[k] = v
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func stringHeaders(h amqp.Table) map[string]string {
	if len(h) == 0 {
		return nil
	}
	out := make(map[string]string, len(h))
	for k, v := range h {
		if s, ok := v.(string); ok {
			out[k] = s
		} else {
			out[k] = fmt.Sprint(v)
		}
	}
	return out
}
