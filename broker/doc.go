// Package broker is the contract between the application and a message
// broker: the [Broker] interface every adapter implements, the consuming
// side ([Subscriber], [Handler], [Delivery]), the dead-letter contract
// ([DeadLetter], [DeadLetterSink]), the error categories, the configuration
// read from MESSAGE_BROKER_* variables, the [Forwarder] that carries events
// from an eventbus to a Broker, and [BusHandler], which carries deliveries
// back into an eventbus as typed events.
//
// Retrying lives in one place, broker/retry; the local dead-letter spool in
// broker/deadletter.
//
// Adapters live in subpackages: broker/rabbitmq, broker/kafka and
// broker/noop. Applications pick one from [Config.Type] themselves; this
// package imports none of them.
//
// # Delivery semantics
//
// Publish returns nil only once the broker has durably accepted the message:
// a RabbitMQ publisher confirm of a routed persistent message, or a Kafka
// acks=all produce. Delivery is at least once: an adapter that lost its
// connection re-sends unconfirmed messages with the same id, so consumers
// deduplicate on the event id. See [Broker] for the full contract.
//
// # Errors
//
// Errors are categorised: [ErrClosed], [ErrUnavailable], [ErrUnroutable],
// [ErrRejected], [ErrTooLarge], [ErrInvalid], [ErrUnauthorized], used with
// errors.Is. Adapters return an [*Error] that unwraps to both its category
// and the native cause (errors.As reaches the client library's error).
// [IsRetryable] is true only for ErrUnavailable. Context errors are returned
// as they are.
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
//
// A bad value is an error naming the variable and the value. The password is
// a [Secret]: no fmt verb, JSON or slog output shows it.
//
// # Shutdown
//
// Close(ctx) stops accepting (Publish then returns ErrClosed), waits for the
// messages in flight, and releases the connection; it returns ctx.Err() if
// ctx ends first. A second Close returns nil.
package broker
