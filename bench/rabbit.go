package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"gocloud.dev/pubsub"
	"gocloud.dev/pubsub/rabbitpubsub"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/rabbitmq"
)

func rabbitAddr() string {
	if a := os.Getenv("RABBITMQ_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:5672"
}

func rabbitURL() string { return "amqp://guest:guest@" + rabbitAddr() + "/" }

// rabbitFixture is a fresh durable topic exchange with a queue bound "#":
// every confirmed message is routed, and the queue length verifies it.
type rabbitFixture struct {
	admin    *amqp.Connection
	exchange string
	queue    string
}

func newRabbitFixture() (*rabbitFixture, error) {
	admin, err := amqp.Dial(rabbitURL())
	if err != nil {
		return nil, fmt.Errorf("RabbitMQ on %s: %w (start it with rabbitmq-server -detached)", rabbitAddr(), err)
	}
	id := uuid.NewString()[:8]
	f := &rabbitFixture{admin: admin, exchange: "bench." + id, queue: "bench." + id + ".q"}
	ch, err := admin.Channel()
	if err != nil {
		return nil, err
	}
	defer ch.Close()
	if err := ch.ExchangeDeclare(f.exchange, "topic", true, false, false, false, nil); err != nil {
		return nil, err
	}
	if _, err := ch.QueueDeclare(f.queue, true, false, false, false, nil); err != nil {
		return nil, err
	}
	return f, ch.QueueBind(f.queue, "#", f.exchange, false, nil)
}

func (f *rabbitFixture) verify(confirmed int64) string {
	ch, err := f.admin.Channel()
	if err != nil {
		return "error: " + err.Error()
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(f.queue, true, false, false, false, nil)
	if err != nil {
		return "error: " + err.Error()
	}
	if int64(q.Messages) != confirmed {
		return fmt.Sprintf("no: queue holds %d, confirmed %d", q.Messages, confirmed)
	}
	return "yes"
}

func (f *rabbitFixture) teardown() {
	if ch, err := f.admin.Channel(); err == nil {
		_, _ = ch.QueueDelete(f.queue, false, false, false)
		_ = ch.ExchangeDelete(f.exchange, false, false)
		_ = ch.Close()
	}
	_ = f.admin.Close()
}

func rabbitContender(name string, open func(f *rabbitFixture) (func(context.Context) error, func(), error)) contender {
	return contender{name: name, setup: func(ctx context.Context) (func(context.Context) error, func(int64) string, func(), error) {
		f, err := newRabbitFixture()
		if err != nil {
			return nil, nil, nil, err
		}
		publish, closeFn, err := open(f)
		if err != nil {
			f.teardown()
			return nil, nil, nil, err
		}
		return publish, f.verify, func() { closeFn(); f.teardown() }, nil
	}}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func rabbitContenders() []contender {
	return []contender{
		rabbitContender("domainevents", func(f *rabbitFixture) (func(context.Context) error, func(), error) {
			cfg := broker.DefaultConfig()
			cfg.Addresses = []string{rabbitAddr()}
			cfg.Exchange = f.exchange
			b, err := rabbitmq.New(context.Background(), cfg, rabbitmq.WithLogger(quiet()))
			if err != nil {
				return nil, nil, err
			}
			return func(ctx context.Context) error {
					return b.Publish(ctx, broker.Message{ID: uuid.NewString(), Name: "order.created", Key: "o-1", Body: body, ContentType: broker.ContentTypeJSON})
				}, func() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					_ = b.Close(ctx)
				}, nil
		}),
		rabbitContender("raw-amqp091-pipelined", func(f *rabbitFixture) (func(context.Context) error, func(), error) {
			conn, ch, err := rawChannel()
			if err != nil {
				return nil, nil, err
			}
			return func(ctx context.Context) error {
				dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, f.exchange, "order.created", true, false, rawPublishing())
				if err != nil {
					return err
				}
				ok, err := dc.WaitContext(ctx)
				if err == nil && !ok {
					err = errors.New("nack")
				}
				return err
			}, func() { _ = conn.Close() }, nil
		}),
		rabbitContender("raw-amqp091-wait-each", func(f *rabbitFixture) (func(context.Context) error, func(), error) {
			conn, ch, err := rawChannel()
			if err != nil {
				return nil, nil, err
			}
			var mu = make(chan struct{}, 1) // one message in flight: publish, wait, next
			return func(ctx context.Context) error {
				mu <- struct{}{}
				defer func() { <-mu }()
				dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, f.exchange, "order.created", true, false, rawPublishing())
				if err != nil {
					return err
				}
				ok, err := dc.WaitContext(ctx)
				if err == nil && !ok {
					err = errors.New("nack")
				}
				return err
			}, func() { _ = conn.Close() }, nil
		}),
		watermillAMQP("watermill-amqp", 0),
		watermillAMQP("watermill-amqp-pool16", 16),
		rabbitContender("gocloud-rabbitpubsub", func(f *rabbitFixture) (func(context.Context) error, func(), error) {
			conn, err := amqp.Dial(rabbitURL())
			if err != nil {
				return nil, nil, err
			}
			topic := rabbitpubsub.OpenTopic(conn, f.exchange, nil)
			// gocloud sends transient messages unless told otherwise: make them
			// persistent, like every other contender.
			persistent := func(as func(any) bool) error {
				var p *amqp.Publishing
				if !as(&p) {
					return errors.New("rabbitpubsub: BeforeSend cannot reach the amqp.Publishing")
				}
				p.DeliveryMode = amqp.Persistent
				return nil
			}
			return func(ctx context.Context) error {
					return topic.Send(ctx, &pubsub.Message{Body: body, Metadata: map[string]string{"id": uuid.NewString()}, BeforeSend: persistent})
				}, func() {
					_ = topic.Shutdown(context.Background())
					_ = conn.Close()
				}, nil
		}),
	}
}

func rawChannel() (*amqp.Connection, *amqp.Channel, error) {
	conn, err := amqp.Dial(rabbitURL())
	if err != nil {
		return nil, nil, err
	}
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	returns := ch.NotifyReturn(make(chan amqp.Return, 16))
	go func() {
		for range returns { // none expected: the queue is bound "#"
		}
	}()
	return conn, ch, nil
}

func rawPublishing() amqp.Publishing {
	return amqp.Publishing{ContentType: broker.ContentTypeJSON, DeliveryMode: amqp.Persistent, MessageId: uuid.NewString(),
		Type: "order.created", Timestamp: time.Now(), Body: body}
}

// watermillAMQP publishes with Watermill's AMQP publisher, confirms on, to
// the fixture's topic exchange.
func watermillAMQP(name string, pool int) contender {
	return rabbitContender(name, func(f *rabbitFixture) (func(context.Context) error, func(), error) {
		cfg := wmamqp.NewDurablePubSubConfig(rabbitURL(), nil)
		cfg.Exchange.Type = "topic"
		cfg.Exchange.GenerateName = func(string) string { return f.exchange }
		cfg.Publish.GenerateRoutingKey = func(string) string { return "order.created" }
		cfg.Publish.ConfirmDelivery = true
		cfg.Publish.ChannelPoolSize = pool
		pub, err := wmamqp.NewPublisher(cfg, watermill.NopLogger{})
		if err != nil {
			return nil, nil, err
		}
		return func(context.Context) error {
			return pub.Publish("orders", message.NewMessage(watermill.NewUUID(), body))
		}, func() { _ = pub.Close() }, nil
	})
}
