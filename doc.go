// Package domainevents opens, in one call, everything a service needs to
// publish its domain events reliably, or to consume them: [Open] and
// [OpenSubscriber] read a broker.Config (broker.ConfigFromEnv: the
// MESSAGE_BROKER_* variables) and wire the parts that live in the
// subpackages; [OpenRelay] does the same for the relay of a transactional
// outbox (package outbox).
//
//	cfg, err := broker.ConfigFromEnv()
//	pub, err := domainevents.Open(ctx, cfg)
//	defer pub.Close(shutdownCtx)
//	pub.Attach(bus) // eventbus.Publish now publishes to RabbitMQ or Kafka
//
// The parts, for services that wire them by hand or need one alone:
// events (the event types and wire format), eventbus (the in-process bus),
// broker (the contract and configuration), broker/rabbitmq, broker/kafka
// and broker/noop (the adapters), broker/retry (the one retry layer),
// broker/deadletter (the local spool), bridge (bus to broker and back),
// outbox (publishing from a database transaction).
//
// # Where an event is
//
// At any moment an event given to a [Publisher] is in exactly one place:
// confirmed by the broker (Publish returned nil); in flight (sent, confirm
// pending; re-sent after a lost connection, same id); retrying (backoff,
// within retry.WithMaxElapsed); in the local spool (the broker could not
// be reached: Publish returned an error matching broker.ErrDeadLettered;
// replayed automatically once the broker is back); in the broker's
// dead-letter queue (refused for good: unroutable, too large); or returned
// to the caller (only if the spool itself failed, which the error says).
// broker.Safe(err) tells the last case from the others.
//
// # Starting and stopping
//
// Open returns at once, connected or not: a service starts while the
// broker is down, its events are retried and spooled meanwhile, and
// replayed when the broker comes back ([WithWaitForConnection] waits for a
// connection instead). Publisher.Close closes the parts in the order that
// loses nothing: what waits for a retry is spooled within Close's ctx.
//
// # Health
//
// [Publisher.Health] (and the subscriber's Health) is what a readiness
// probe calls: nil when connected. [Publisher.Status] adds the spool's
// depth.
//
// # The outbox relay
//
// [OpenRelay] publishes what an outbox.Store holds through the adapter
// cfg.Type names, connecting in the background so that it starts while
// the broker is down, with no retry layer and no spool in front of it:
// the outbox table is the durable store, and the relay waits for the
// broker as long as it takes. [Relay.Health] says what stops it (the
// database, the broker away, the broker refusing the messages), and
// [Relay.Close] closes the relay, then the adapter. [MaxMessageSize] is
// the configured broker's limit, for outbox.WithMaxMessageSize.
package domainevents
