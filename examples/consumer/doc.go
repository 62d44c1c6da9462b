// Command consumer is the other side of examples/orders: it consumes the
// order events from the broker the MESSAGE_BROKER_* environment names and
// prints each one as a typed event. It writes nothing broker-specific in its
// handlers: a Subscriber feeds bridge.NewHandler, which decodes each body
// and publishes the typed event on an eventbus.
//
//	MESSAGE_BROKER_ENABLED=true MESSAGE_BROKER_TYPE=rabbitmq go run ./examples/consumer   # terminal 1
//	MESSAGE_BROKER_ENABLED=true MESSAGE_BROKER_TYPE=rabbitmq go run ./examples/orders     # terminal 2
//
// RabbitMQ: it consumes the queue EXAMPLE_QUEUE (default orders.events.all,
// the one examples/orders fills), bound with order.#; failures are retried
// in place (each order's events stay in order) and end in
// orders.events.all.dlq. Kafka:
// consumer group orders-consumer-example on the topic; failures end in
// "<topic>.dlq", which must exist. -n stops after that many events; Ctrl-C
// stops it cleanly (running handlers finish, offsets are committed).
package main
