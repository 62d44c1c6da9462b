package main

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	amqp "github.com/rabbitmq/amqp091-go"
	"gocloud.dev/pubsub/rabbitpubsub"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/rabbitmq"
)

// ourPrefetch is our subscriber's default prefetch (max(256, 4 × c)), which
// the raw contender uses too; tunedPrefetch is domainevents-tuned's
// WithPrefetch.
const (
	ourPrefetch   = 256
	tunedPrefetch = 1024
)

// rabbitConsumers are the consume-rabbitmq contenders. The queue is the
// publish suites' fixture: a durable classic queue bound "#" to a durable
// topic exchange, which is also the topology our subscriber declares for
// Queue{Name: queue} (it adds "<queue>.dlq"). Every event carries one of
// 1,000 order keys: ours handles them in order per key (at most one
// handler per key at a time), the raw client and the peers in any order.
func rabbitConsumers() []consumeContender {
	return []consumeContender{
		rabbitConsumer("domainevents", ourShape, func(f *rabbitFixture, c int, seen func(string)) (func() error, error) {
			return startOurs(f, c, seen)
		}),
		rabbitConsumer("domainevents-unordered", ourShape, func(f *rabbitFixture, c int, seen func(string)) (func() error, error) {
			return startOurs(f, c, seen, rabbitmq.WithUnordered())
		}),
		rabbitConsumer("domainevents-tuned", ourShape, func(f *rabbitFixture, c int, seen func(string)) (func() error, error) {
			return startOurs(f, c, seen, rabbitmq.WithPrefetch(tunedPrefetch))
		}),
		rabbitConsumer("raw-amqp091", ourShape, startRawAMQP),
		rabbitConsumer("watermill-amqp", watermillShape, startWatermillAMQP),
		rabbitConsumer("gocloud-rabbitpubsub", ourShape, startGocloud),
	}
}

// slowWork is what each handler call of the consume-rabbitmq-2ms suite
// takes: a database write.
const slowWork = 2 * time.Millisecond

// rabbitSlowConsumers are the consume-rabbitmq-2ms contenders: ours
// (ordered by key) and the raw client (unordered), each handler call
// taking slowWork. Run it with a smaller -prefill (5,000: 10 s at c = 1).
func rabbitSlowConsumers() []consumeContender {
	slow := func(start func(f *rabbitFixture, c int, seen func(string)) (func() error, error)) func(f *rabbitFixture, c int, seen func(string)) (func() error, error) {
		return func(f *rabbitFixture, c int, seen func(string)) (func() error, error) {
			return start(f, c, func(id string) { time.Sleep(slowWork); seen(id) })
		}
	}
	return []consumeContender{
		rabbitConsumer("domainevents", ourShape, slow(func(f *rabbitFixture, c int, seen func(string)) (func() error, error) {
			return startOurs(f, c, seen)
		})),
		rabbitConsumer("raw-amqp091", ourShape, slow(startRawAMQP)),
	}
}

// ourShape is how our publisher writes an event (see rabbitmq's package
// doc): message_id, type, content type, timestamp, persistent, the order
// key in the event-key header (one of 1,000, from the id).
func ourShape(id string) amqp.Publishing {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return amqp.Publishing{ContentType: broker.ContentTypeJSON, DeliveryMode: amqp.Persistent, MessageId: id,
		Type: "order.created", Timestamp: time.Now(), Body: body,
		Headers: amqp.Table{broker.HeaderKey: "order-" + strconv.Itoa(int(h.Sum32()%1000))}}
}

// watermillShape is how Watermill's DefaultMarshaler writes one: the uuid
// in a header, which its subscriber reads the id from.
func watermillShape(id string) amqp.Publishing {
	p := ourShape(id)
	p.Headers[wmamqp.DefaultMessageUUIDHeaderKey] = id
	return p
}

func rabbitConsumer(name string, shape func(string) amqp.Publishing,
	start func(f *rabbitFixture, c int, seen func(string)) (func() error, error)) consumeContender {
	return consumeContender{name: name, setup: func(ctx context.Context, c int) (*consumeRun, error) {
		f, err := newRabbitFixture()
		if err != nil {
			return nil, err
		}
		conn, ch, err := rawChannel()
		if err != nil {
			f.teardown()
			return nil, err
		}
		var pending []*amqp.DeferredConfirmation
		send := func(ctx context.Context, id string) error {
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, f.exchange, "order.created", true, false, shape(id))
			if err == nil {
				pending = append(pending, dc)
			}
			return err
		}
		flush := func(ctx context.Context) error {
			for _, dc := range pending {
				ok, err := dc.WaitContext(ctx)
				if err != nil {
					return err
				}
				if !ok {
					return errors.New("nack")
				}
			}
			pending = pending[:0]
			return nil
		}
		return &consumeRun{
			prefill: func(ctx context.Context, ids []string) error {
				for i, id := range ids {
					if err := send(ctx, id); err != nil {
						return err
					}
					if i%1000 == 999 { // a window of 1,000 unconfirmed
						if err := flush(ctx); err != nil {
							return err
						}
					}
				}
				if err := flush(ctx); err != nil {
					return err
				}
				if v := f.verify(int64(len(ids))); v != "yes" {
					return errors.New(v)
				}
				return nil
			},
			start: func(_ context.Context, c int, seen func(string)) (func() error, error) { return start(f, c, seen) },
			paced: send,
			flush: flush,
			verify: func(int64) string {
				// Every event was handled once (checked by the caller);
				// nothing may be left unacknowledged or dead-lettered.
				if v := f.verifyEmpty(f.queue); v != "yes" {
					return v
				}
				return f.verifyEmpty(f.queue + ".dlq")
			},
			teardown: func() {
				_ = conn.Close()
				if ch, err := f.admin.Channel(); err == nil {
					_, _ = ch.QueueDelete(f.queue+".dlq", false, false, false)
					_ = ch.Close()
				}
				f.teardown()
			},
		}, nil
	}}
}

// verifyEmpty checks that queue q, if it exists, holds no message and has
// no consumer.
func (f *rabbitFixture) verifyEmpty(q string) string {
	ch, err := f.admin.Channel()
	if err != nil {
		return "error: " + err.Error()
	}
	defer ch.Close()
	st, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
	var aerr *amqp.Error
	if errors.As(err, &aerr) && aerr.Code == amqp.NotFound {
		return "yes" // never declared (a contender without a dead-letter queue)
	}
	if err != nil {
		return "error: " + err.Error()
	}
	if st.Messages != 0 || st.Consumers != 0 {
		return fmt.Sprintf("no: %s holds %d, %d consumers", q, st.Messages, st.Consumers)
	}
	return "yes"
}

func startOurs(f *rabbitFixture, c int, seen func(string), extra ...rabbitmq.SubscriberOption) (func() error, error) {
	cfg := broker.DefaultConfig()
	cfg.Addresses = []string{rabbitAddr()}
	cfg.Exchange = f.exchange
	opts := append([]rabbitmq.SubscriberOption{rabbitmq.WithConcurrency(c), rabbitmq.WithLogger(quiet())}, extra...)
	s, err := rabbitmq.NewSubscriber(context.Background(), cfg, rabbitmq.Queue{Name: f.queue},
		func(_ context.Context, d broker.Delivery) error { seen(d.ID); return nil }, opts...)
	if err != nil {
		return nil, err
	}
	return closeWithin(s.Close), nil
}

// startRawAMQP: one channel, our default prefetch, c goroutines
// reading the deliveries, a manual ack after each.
func startRawAMQP(f *rabbitFixture, c int, seen func(string)) (func() error, error) {
	conn, err := amqp.Dial(rabbitURL())
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Qos(max(ourPrefetch, 4*c), 0, false)
	}
	var deliveries <-chan amqp.Delivery
	if err == nil {
		deliveries, err = ch.Consume(f.queue, "raw", false, false, false, false, nil)
	}
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	var wg sync.WaitGroup
	for range c {
		wg.Go(func() {
			for d := range deliveries {
				seen(d.MessageId)
				_ = d.Ack(false)
			}
		})
	}
	return func() error {
		err := ch.Cancel("raw", false) // closes deliveries once the broker confirms
		wg.Wait()
		return errors.Join(err, conn.Close())
	}, nil
}

// startWatermillAMQP: the durable-queue subscriber config on the prefilled
// queue (Watermill's default prefetch, 1). Watermill hands a subscription's
// messages over one at a time, the next only after the Ack of the last,
// so the c goroutines reading its channel do not run handlers at once.
func startWatermillAMQP(f *rabbitFixture, c int, seen func(string)) (func() error, error) {
	cfg := wmamqp.NewDurableQueueConfig(rabbitURL())
	cfg.Queue.GenerateName = func(string) string { return f.queue }
	sub, err := wmamqp.NewSubscriber(cfg, watermill.NopLogger{})
	if err != nil {
		return nil, err
	}
	msgs, err := sub.Subscribe(context.Background(), "orders")
	if err != nil {
		_ = sub.Close()
		return nil, err
	}
	var wg sync.WaitGroup
	for range c {
		wg.Go(func() {
			for m := range msgs {
				seen(m.UUID)
				m.Ack()
			}
		})
	}
	return func() error {
		err := sub.Close() // closes msgs
		wg.Wait()
		return err
	}, nil
}

// startGocloud: OpenSubscription on the queue (gocloud's defaults: no
// prefetch limit, acks batched), c goroutines calling Receive and Ack.
func startGocloud(f *rabbitFixture, c int, seen func(string)) (func() error, error) {
	conn, err := amqp.Dial(rabbitURL())
	if err != nil {
		return nil, err
	}
	sub := rabbitpubsub.OpenSubscription(conn, f.queue, nil)
	var wg sync.WaitGroup
	for range c {
		wg.Go(func() {
			for {
				m, err := sub.Receive(context.Background())
				if err != nil {
					return // Shutdown
				}
				seen(m.LoggableID) // the AMQP message_id
				m.Ack()
			}
		})
	}
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := sub.Shutdown(ctx) // flushes the acks; Receive then fails
		wg.Wait()
		return errors.Join(err, conn.Close())
	}, nil
}
