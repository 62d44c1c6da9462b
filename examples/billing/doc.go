// Command billing is a consumer with an inbox: it consumes the order
// events from the broker the MESSAGE_BROKER_* environment names and bills
// each order once, in a database transaction that also records the event
// id in the inbox (outbox.Inbox, through domainevents.WithInbox), so that
// a redelivered event is skipped and each order's events apply in the
// order the producer committed them. Its handlers are typed eventbus
// handlers; what keeps failing goes to the broker's dead-letter queue.
//
//	MESSAGE_BROKER_ENABLED=true go run ./examples/billing      # terminal 1
//	MESSAGE_BROKER_ENABLED=true go run ./examples/outbox       # terminal 2
//
// DATABASE_URL=postgres://... uses PostgreSQL; empty, an embedded SQLite
// file in a new temporary directory. RabbitMQ: the queue EXAMPLE_QUEUE
// (default orders.events.all, the one examples/outbox and examples/orders
// fill); Kafka: the consumer group billing-example. -n stops after that
// many orders billed; Ctrl-C stops it cleanly. Its tests run the same
// handlers on the in-memory broker (broker/memory).
package main
