// Command orders is the wiring a service does: configuration from the
// MESSAGE_BROKER_* environment, a broker, the forwarder, the event bus. It
// then creates an order, moves it to in_progress and cancels it: three events.
//
// Each message body the broker accepted is printed on stdout as one JSON line;
// logs go to stderr. With MESSAGE_BROKER_ENABLED unset (the default) it uses
// the noop broker, so it runs anywhere:
//
//	go run ./examples/orders
//
// With a broker:
//
//	MESSAGE_BROKER_ENABLED=true MESSAGE_BROKER_TYPE=rabbitmq go run ./examples/orders
//	MESSAGE_BROKER_ENABLED=true MESSAGE_BROKER_TYPE=kafka MESSAGE_BROKER_PORT=9092 go run ./examples/orders
//
// On RabbitMQ it declares the queue orders.events.all (bound with order.#)
// so the events have somewhere to go; on Kafka the topic orders.events must
// exist (or be auto-created by the cluster). Publishes are retried; what
// still fails is kept in the spool at DEADLETTER_DIR (see
// examples/deadletters).
//
// It exits non-zero if any publish fails.
package main
