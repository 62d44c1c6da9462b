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
// # Options
//
// Options have a role, so that a misplaced one does not compile:
//
//	Option (both)        WithLogger, WithObserver, WithTLS, WithHeartbeat, WithConnectionName,
//	                     WithURLs, WithPassive, WithAlternateExchange, WithAMQPConfig,
//	                     WithDialTimeout, WithReconnectBackoff, WithLazyConnect
//	PublisherOption      WithQueue, WithWindow, WithMaxMessageSize, WithCloudEvents
//	SubscriberOption     WithPrefetch, WithConcurrency, WithUnordered, WithMaxAttempts,
//	                     WithRetryBackoff
//
// The ctx given to [New] and [NewSubscriber] bounds connecting only; it is
// not kept.
//
// # Topology
//
// New declares a durable topic exchange (Config.Exchange, default
// "orders.events"), or only checks it with [WithPassive], on every
// (re)connect. Messages are published with the mandatory flag: if no queue
// is bound for the routing key, RabbitMQ returns the message and Publish
// fails with broker.ErrUnroutable rather than reporting a success for a
// message that went nowhere. [WithQueue] declares and binds queues;
// [WithAlternateExchange] sends unroutable messages to a catch-all queue
// instead.
//
// An exchange has one declaration: New and [NewSubscriber] build it from
// Config.Exchange and the connection options ([WithAlternateExchange],
// [WithPassive]) alike and declare it the same way. RabbitMQ refuses a
// declaration whose arguments differ from the exchange's, so give every
// publisher and subscriber of an exchange the same such options (a
// subscriber not given the exchange's alternate binds to it as it is).
//
// # Wire mapping
//
// Routing key and AMQP type = Message.Name; message_id = Message.ID;
// delivery mode 2 (persistent); content_type = Message.ContentType;
// timestamp = Message.Time (now if zero); headers = Message.Headers, plus
// Message.Key in the broker.HeaderKey header ("event-key"; RabbitMQ has no
// record key). The subscriber reads that header back into Delivery.Key,
// and the broker.HeaderSeq header (the outbox's per-key sequence number)
// into Delivery.Seq.
//
// # CloudEvents
//
// With a source ([WithCloudEvents], or Config.CloudEventsSource from
// MESSAGE_BROKER_CLOUDEVENTS_SOURCE) messages are also CloudEvents in
// binary content mode: the headers cloudEvents:id, cloudEvents:source,
// cloudEvents:specversion ("1.0"), cloudEvents:type (the event name),
// cloudEvents:time (RFC 3339 UTC, where the timestamp property has whole
// seconds) and cloudEvents:partitionkey (the key) are added; content_type
// is the data's media type and the body, the data, stays this library's
// envelope. The prefix is the CloudEvents AMQP binding's, which RabbitMQ 4
// hands to AMQP 1.0 consumers as the application-properties the binding
// names; Spring's CloudEvents converter reads it too. The subscriber
// reads CloudEvents whoever published them, under that prefix,
// cloudEvents_ (Spring AMQP) or ce- (Knative's RabbitMQ broker): id, type
// and partitionkey fill Delivery.ID, Name and Key where the properties
// and this library's headers are absent, time the Time (a string or an
// AMQP timestamp); the headers stay in Delivery.Headers. Mapping, the
// reasons for the prefix, and the interop tests: docs/cloudevents.md.
//
// # Delivery semantics
//
// Publisher confirms are always on. Publish returns nil only once the broker
// acked a routed message; a returned message is broker.ErrUnroutable. A
// nack is broker.ErrUnavailable, retryable: a quorum queue nacks while it
// elects a leader (a few hundred publishes per failover, measured on a
// 3-node cluster), a queue with overflow=reject-publish while it is full;
// both pass, and the retry layer bounds how long to wait. A channel that
// nacks everything for a second is replaced by a new one on the same
// connection: RabbitMQ 3.10 keeps nacking a channel opened during a quorum
// queue's leader election. Concurrent Publish calls share one channel and are
// pipelined: up to [WithWindow] messages (default 1024) are in flight at
// once, each caller waiting only for its own, bounded by its ctx. Confirms
// are applied in publish order: one the broker sends ahead of an earlier
// message's (it may, e.g. for an unroutable message behind a persisted
// one) takes effect when the earlier one's arrives.
//
// When the connection is lost (a close notification, or three missed
// heartbeats on a silent network), the adapter reconnects by itself, trying
// the configured addresses in turn with backoff (each wait a random draw up
// to [WithReconnectBackoff]'s max, 1s by default, so a broker that comes
// back is found within about a second), re-declares its topology, then
// re-publishes every message whose confirm it had not received, in order,
// with the same message_id. Confirms are matched per channel, never across.
// Delivery is therefore at least once: a message stored just before the
// connection dropped is stored again, and consumers deduplicate on
// message_id (the event id).
//
// When the broker closes the channel because of a message it was given (a
// body over its max_message_size, a deleted exchange, no write
// permission), that message fails alone and the others continue on a new
// channel of the same connection: a size refusal fails the too-large
// messages at once with broker.ErrTooLarge and the server's limit applies
// from then on, before sending ([WithMaxMessageSize]); otherwise the
// unconfirmed messages are written again one at a time until the one that
// closes the channel is known, and it fails with the category of the
// broker's reply.
//
// Publish calls made while disconnected wait for the connection. If ctx
// ends first, Publish returns an error matching both ctx.Err() and
// broker.ErrUnavailable (retryable). A message no connection carried is
// withdrawn then ("not sent" in the error), so a retry or dead letter does
// not duplicate it; one that was written but not confirmed also matches
// broker.ErrOutcomeUnknown: it stays in flight and is re-published after a
// reconnect, so it may still be delivered.
//
// A broker that stops reading the socket (RabbitMQ blocks publishers on a
// memory or disk alarm; logged at Warn, and reported by [Broker.Health])
// cannot hold callers past their ctx: one writer goroutine does the socket
// writes, and callers only ever wait on their ctx.
//
// # Starting while the broker is down
//
// By default New waits for a first connection and fails if no address
// answers. With [WithLazyConnect] it returns at once and connects in the
// background; publishes wait for the connection (up to their ctx), and
// [Broker.Health] says why it is not ready. [NewSubscriber] does the same.
//
// # Health
//
// [Broker.Health] and [Subscriber.Health] implement broker.HealthChecker:
// nil when connected, otherwise an error matching broker.ErrUnavailable
// with the last connection error (or broker.ErrClosed). A readiness probe
// calls them; they do not touch the network. [Broker.Stats] counts
// publishes, confirms, re-publishes and reconnects, and what is in flight.
//
// # Errors
//
// One table (replyCodes) maps the broker's AMQP reply codes to categories:
// access refused is broker.ErrUnauthorized; a missing exchange or queue,
// and no route, broker.ErrUnroutable; an exchange that exists with another
// type or arguments, or a missing vhost, broker.ErrInvalid; a message over
// max_message_size broker.ErrTooLarge; anything else, and network failures,
// broker.ErrUnavailable. Bad credentials are broker.ErrUnauthorized.
// Errors read "rabbitmq: <operation>: <category>: <what and where>";
// errors.As reaches the *amqp091.Error. Errors and logs name addresses,
// never URLs with passwords.
//
// # Shutdown
//
// Close(ctx) stops accepting (Publish returns broker.ErrClosed), waits until
// every message in flight is confirmed or failed, re-publishing across
// reconnects meanwhile, then closes the connection. If ctx ends first, the
// callers still waiting get an error matching broker.ErrClosed (and, for a
// message already written, broker.ErrUnavailable and
// broker.ErrOutcomeUnknown: it may or may not be stored). Every goroutine
// of the Broker has ended when Close returns.
//
// # Consuming
//
// [NewSubscriber] consumes a durable queue bound to the exchange into a
// broker.Handler, with manual acks and prefetch ([WithPrefetch]). Up to
// [WithConcurrency] handlers run at once (default 1), never two deliveries
// of one key at once, and each key's deliveries in queue order: the
// deliveries go to lanes by Delivery.Key (the broker.HeaderKey header),
// and a lane runs one delivery at a time. [WithUnordered] drops the key
// constraint for handlers that do not care; deliveries without a key are
// not ordered among themselves either way.
//
// A failed delivery holds its lane: it stays unacknowledged in the
// subscriber and is handled again after a backoff with full jitter
// ([WithRetryBackoff], default 100ms doubling to 5s), its Delivery.Attempt
// one higher, while its key's later deliveries wait and the other keys go
// on (a waiting lane takes no handler). After [WithMaxAttempts] (default
// 5), or at once for an error matching broker.ErrInvalid, its copy goes to
// "<queue>.dlq" with the broker.HeaderDeadLetter* reason headers and
// "x-original-routing-key" / "x-original-exchange" (the event name and the
// exchange it was published to), confirmed before the original is
// acknowledged, and its key moves on to the next delivery. A consumer whose
// table must follow the producer's commit order even then checks the
// sequence number (Delivery.Seq), as outbox.Inbox does.
//
// Lanes hold at most the prefetch window (the broker sends no more than
// that unacknowledged), and one key's lane may fill it: a key whose
// delivery is retried keeps receiving its later deliveries, and if they
// take the whole window the other keys wait until it moves on (at most
// its retry budget). The default prefetch, 256 or 4 × WithConcurrency,
// keeps n handlers busy unless few keys fill the queue.
//
// The subscriber reconnects like the publisher. The broker redelivers
// every unacknowledged delivery of the lost connection, in queue order:
// those of the old session not started yet, or waiting for a retry, leave
// their lanes at once, so that a lane never runs a later delivery of the
// old session after an earlier one came back; one running goes on, and the
// redelivered copy of its key waits behind it. Delivery is at least once.
//
// # Retries across a crash
//
// Retries happen in the subscriber, on both queue types: nothing is
// re-published or parked in the broker meanwhile, and the delivery stays
// unacknowledged, so the broker keeps it, persistent on a durable queue:
// if the subscriber's process or connection dies, or the broker restarts,
// the broker delivers it again (at least once; a duplicate is possible,
// loss is not). What a crash loses is the attempt count: on a [Classic]
// queue the redelivered message starts again at attempt 1, so a message
// whose handler crashes the process is redelivered without end; a
// [Quorum] queue (Queue.Type; replicated, the type RabbitMQ 4 recommends)
// counts the returns (x-delivery-count, added to Delivery.Attempt: an
// upper bound of the handler's attempts, which prefetched deliveries
// returned by a reconnect increase too) and dead-letters, at least once,
// a delivery returned 2 × WithMaxAttempts + 5 times without finishing
// (x-delivery-limit, x-dead-letter-strategy=at-least-once; RabbitMQ >=
// 3.10 with the stream_queue feature flag on, which fresh nodes have).
// RabbitMQ's dead-lettering from classic queues is at most once (measured:
// a third of the messages waiting in a TTL queue were gone after a node's
// SIGKILL, docs/rabbitmq-retry-experiment.md), which is why retries do not
// wait in a broker-side delay queue.
//
// Either way, consumers deduplicate on the event id.
//
// [Redrive] moves dead letters from "<queue>.dlq" (or the publisher's
// "<exchange>.dlq") back to their exchange and routing key, selected by
// name, id or reason, with a dry run; the command domainevents runs it
// ("domainevents dlq redrive").
//
// # Logging
//
// Connects, losses and reconnect attempts are logged through the caller's
// *slog.Logger ([WithLogger]) at Info and Warn (Error when reconnecting
// fails for a reason that needs a human, such as changed credentials); a
// loop that keeps failing logs its first failure and then at most every
// 30s. Every line carries "component" (rabbitmq publisher, rabbitmq
// subscriber, rabbitmq dead-letter sink) so that the connections of one
// process can be told apart.
package rabbitmq
