// Package rabbitmq is the RabbitMQ adapter of broker.Broker and
// broker.Subscriber, on github.com/rabbitmq/amqp091-go.
//
//	b, err := rabbitmq.New(ctx, cfg,
//		rabbitmq.WithQueue(rabbitmq.Queue{Name: "billing.orders", Keys: []string{"order.#"}}),
//		rabbitmq.WithLogger(logger))
//	...
//	defer b.Close(ctx)
//	err = b.Publish(ctx, msg)
//
// # Topology
//
// New declares a durable topic exchange (Config.Exchange, default
// "orders.events"), or only checks it with [WithPassive]. Messages are
// published with the mandatory flag: if no queue is bound for the routing
// key, RabbitMQ returns the message and Publish fails with
// broker.ErrUnroutable rather than reporting a success for a message that
// went nowhere. [WithQueue] declares and binds queues; [WithAlternateExchange]
// sends unroutable messages to a catch-all queue instead.
//
// # Wire mapping
//
// Routing key and AMQP type = Message.Name; message_id = Message.ID;
// delivery mode 2 (persistent); content_type = Message.ContentType;
// timestamp = Message.Time (now if zero); headers = Message.Headers.
// Message.Key is not sent (RabbitMQ has no record key).
//
// # Delivery semantics
//
// Publisher confirms are always on. Publish returns nil only once the broker
// acked a routed message; a nack is broker.ErrRejected, a returned message
// broker.ErrUnroutable. Concurrent Publish calls share one channel and are
// pipelined: up to [WithWindow] messages (default 1024) await their confirm
// at once, each caller waiting only for its own, bounded by its ctx.
//
// When the connection or channel is lost (a close notification, or three
// missed heartbeats on a silent network), the adapter reconnects by itself
// with exponential backoff and full jitter, trying the configured addresses
// in turn, re-declares its topology, then re-publishes every message whose
// confirm it had not received, in order, with the same message_id. Confirms
// are matched per connection, never across. Delivery is therefore at least
// once: a message stored just before the connection dropped is stored again,
// and consumers deduplicate on message_id (the event id).
//
// Publish calls made while disconnected wait for the reconnect. If ctx ends
// first, Publish returns an error matching both ctx.Err() and
// broker.ErrUnavailable (retryable). A message no connection ever carried is
// withdrawn then ("not sent" in the error), so a retry or dead letter does
// not duplicate it; one that was sent but not confirmed stays in flight and
// is re-published after a reconnect (the error says it may still be
// delivered).
//
// A broker that stops reading the socket (RabbitMQ blocks publishers on a
// memory or disk alarm; logged at Warn) cannot hold callers past their ctx:
// Publish waits for the connection with its ctx, and a socket write is
// bounded by the caller's ctx deadline; a write cut short breaks the
// connection, which is replaced, and the message is re-published.
//
// # Errors
//
// One table (classify) maps amqp091 and network errors: bad credentials and
// access refused are broker.ErrUnauthorized; a missing vhost, an exchange
// that exists with another type or arguments, or a missing exchange in
// passive mode are broker.ErrInvalid; connection failures are
// broker.ErrUnavailable. errors.As reaches the *amqp091.Error. Errors and
// logs name addresses, never URLs with passwords.
//
// # Shutdown
//
// Close(ctx) stops accepting (Publish returns broker.ErrClosed), waits until
// every message in flight is confirmed or failed, re-publishing across
// reconnects meanwhile, then closes the connection. If ctx ends first, the
// callers still waiting get an error matching broker.ErrClosed and
// broker.ErrUnavailable that says the message may or may not be stored.
//
// # Consuming
//
// [NewSubscriber] consumes a durable queue bound to the exchange into a
// broker.Handler, with manual acks, prefetch ([WithPrefetch]) and
// [WithConcurrency] handlers. A failed delivery is re-published (confirmed)
// to "<queue>.retry", whose TTL ([WithRetryDelay], default 1s) dead-letters
// it back to the queue with its attempt number in the "x-attempt" header;
// after [WithMaxAttempts] (default 5), or at once for an error matching
// broker.ErrInvalid, it goes to "<queue>.dlq" with the deadletter reason
// headers. The subscriber reconnects like the publisher; unacknowledged
// deliveries are redelivered (at least once).
//
// # Logging
//
// Connects, losses and reconnect attempts are logged through the caller's
// *slog.Logger ([WithLogger]) at Info and Warn (Error when reconnecting
// fails for a reason that needs a human, such as changed credentials).
package rabbitmq
