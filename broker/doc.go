// Package broker is the contract between an application and a message
// broker: the [Broker] interface every adapter implements, the consuming
// side ([Subscriber], [Handler], [Delivery]), the dead-letter contract
// ([DeadLetter], [DeadLetterSink], [BrokerSink]), the error categories, and
// the configuration read from MESSAGE_BROKER_* variables. It imports the
// standard library only: it knows no event type, no bus and no adapter.
//
// Around it:
//
//   - adapters implement it: broker/rabbitmq, broker/kafka, broker/noop
//     (helpers for adapter authors in broker/adapter, the conformance suite
//     in broker/brokertest);
//   - decorators wrap it: broker/retry (the one place publishes are
//     retried), broker/deadletter (the local spool);
//   - package bridge connects it to the in-process bus (events in, typed
//     events out).
//
// Applications pick an adapter from [Config.Type] themselves.
//
// # Delivery semantics
//
// Publish returns nil only once the broker has durably accepted the message:
// a RabbitMQ publisher confirm of a routed persistent message, or a Kafka
// acks=all produce. Delivery is at least once: an adapter that lost its
// connection re-sends unconfirmed messages with the same id, so consumers
// deduplicate on the event id. See [Broker] for the full contract.
//
// Order is kept per key (Message.Key, the aggregate id): on the wire the
// key travels as the Kafka record key or the [HeaderKey] header, and the
// outbox's per-key sequence number as the [HeaderSeq] header
// ([Delivery].Seq), so that a subscriber can handle one key at a time and
// an inbox can apply a key's events in the order they committed.
//
// # Errors
//
// Errors are categorised: [ErrClosed], [ErrUnavailable], [ErrUnroutable],
// [ErrRejected], [ErrTooLarge], [ErrInvalid], [ErrUnauthorized] and
// [ErrDeadLettered], used with errors.Is. Adapters return an [*Error] that
// unwraps to both its category and the native cause (errors.As reaches the
// client library's error). [IsRetryable] is true only for ErrUnavailable;
// [Category] names the category for logs and dead-letter headers. Context
// errors of the caller's ctx are returned as they are.
//
// # Configuration
//
// [ConfigFromEnv] reads:
//
//	MESSAGE_BROKER_ENABLED    false
//	MESSAGE_BROKER_TYPE       rabbitmq (or kafka)
//	MESSAGE_BROKER_HOST       localhost
//	MESSAGE_BROKER_PORT       5672 (9092 when the type is kafka)
//	MESSAGE_BROKER_USERNAME   guest
//	MESSAGE_BROKER_PASSWORD   guest
//	MESSAGE_BROKER_ADDRESSES  (empty) host:port,host:port... replaces HOST/PORT
//	MESSAGE_BROKER_VHOST      /
//	MESSAGE_BROKER_EXCHANGE   orders.events (RabbitMQ)
//	MESSAGE_BROKER_TOPIC      orders.events (Kafka)
//	MESSAGE_BROKER_TLS        false
//	MESSAGE_BROKER_CLIENT_ID  orders-service
//	MESSAGE_BROKER_QUEUE      (empty) RabbitMQ queue Open declares and OpenSubscriber consumes
//	MESSAGE_BROKER_SPOOL_DIR  (empty) the dead-letter spool of Open; default under the temp dir
//	MESSAGE_BROKER_CLOUDEVENTS_SOURCE (empty) the CloudEvents source; when set, publishers
//	                          also write CloudEvents headers (docs/cloudevents.md)
//
// A bad value is an error naming the variable and the value (never the
// password, nor anything before an "@"). The password is a [Secret]: no fmt
// verb, JSON or slog output shows it, even through reflection.
//
// # Shutdown
//
// Close(ctx) stops accepting (Publish then returns ErrClosed), waits for the
// messages in flight, and releases the connection; it returns ctx.Err() if
// ctx ends first. A second Close returns nil.
package broker
