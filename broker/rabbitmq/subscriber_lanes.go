package rabbitmq

import (
	"context"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/internal/backoff"
	"github.com/domainevents/domainevents/internal/lanes"
)

// deadLetterTimeout bounds one attempt to publish a dead letter to
// "<queue>.dlq"; a failed one is tried again after the retry backoff.
const deadLetterTimeout = 30 * time.Second

// newLanes makes the dispatcher that runs h: [WithConcurrency] workers,
// the prefetch window as its capacity (the broker sends no more than that
// unacknowledged), a key's lane as deep as the window.
func (s *Subscriber) newLanes(h broker.Handler) (*lanes.Dispatcher[amqp.Delivery], error) {
	return lanes.New(lanes.Config[amqp.Delivery]{
		Workers:          s.opts.concurrency,
		Capacity:         s.opts.prefetch,
		MaxAttempts:      s.opts.maxAttempts,
		Backoff:          backoff.Policy{Initial: s.opts.retryMin, Max: s.opts.retryMax},
		Handler:          h,
		Logger:           s.log,
		Settle:           s.settle,
		DeadLetter:       s.deadLetter,
		Retrying:         s.retrying,
		DeadLetterFailed: s.deadLetterFailed,
	})
}

// settle acknowledges a delivery that was handled or dead-lettered. An
// abandoned one is left unacknowledged: its channel is gone (the broker
// redelivers it), or Close will close it once the running handlers are
// done, returning the abandoned deliveries to the queue then, in queue
// order, behind no later delivery of their key (a nack now could hand one
// to another consumer while an earlier delivery of its key still runs
// here).
func (s *Subscriber) settle(it *lanes.Item[amqp.Delivery], o lanes.Outcome) {
	if o == lanes.Handled || o == lanes.DeadLettered {
		_ = it.Value.Ack(false) // if the channel died, the broker redelivers: at least once
	}
}

// deadLetter publishes a dead delivery's copy to "<queue>.dlq", confirmed,
// with the reason headers and where it came from; the lane then
// acknowledges the original: never both gone, at worst both there.
func (s *Subscriber) deadLetter(ctx context.Context, it *lanes.Item[amqp.Delivery], dl broker.DeadLetter, cause error) error {
	m := dl.Annotated()
	m.Headers[HeaderOriginalRoutingKey] = it.Value.RoutingKey
	m.Headers[HeaderOriginalExchange] = it.Value.Exchange
	target := s.queue.Name + ".dlq"
	ctx, cancel := context.WithTimeout(ctx, deadLetterTimeout)
	err := s.pub.publish(ctx, target, m)
	cancel()
	if err != nil {
		return err
	}
	d := it.Delivery
	s.opts.conn.logger.Warn("rabbitmq subscriber: delivery dead-lettered", "component", s.conn.component, "queue", s.queue.Name,
		"id", d.ID, "key", d.Key, "attempts", dl.Attempts, "category", dl.Category, "to", target, "err", cause)
	s.conn.observe(broker.Observation{Kind: broker.ObservedDeadLetter, Destination: target, MessageID: d.ID, MessageName: d.Name,
		Attempt: dl.Attempts, Category: dl.Category, Err: cause})
	return nil
}

func (s *Subscriber) deadLetterFailed(it *lanes.Item[amqp.Delivery], err error, wait time.Duration) {
	s.opts.conn.logger.Error("rabbitmq subscriber: cannot dead-letter a delivery, retrying", "component", s.conn.component,
		"queue", s.queue.Name, "id", it.Delivery.ID, "key", it.Delivery.Key, "to", s.queue.Name+".dlq", "retry_in", wait, "err", err)
}

// retrying reports a handler failure that will be tried again after wait,
// its key waiting meanwhile.
func (s *Subscriber) retrying(it *lanes.Item[amqp.Delivery], err error, attempt int, wait time.Duration) {
	d := it.Delivery
	s.opts.conn.logger.Warn("rabbitmq subscriber: handler failed, retrying", "component", s.conn.component, "queue", s.queue.Name,
		"id", d.ID, "key", d.Key, "attempt", attempt, "retry_in", wait, "err", err)
	s.conn.observe(broker.Observation{Kind: broker.ObservedRetry, Destination: s.queue.Name, MessageID: d.ID, MessageName: d.Name,
		Attempt: attempt, Delay: wait, Value: wait.Seconds(), Category: broker.CategoryHandlerFailed, Err: err})
}
