// Command orders is the wiring a service does: configuration from the
// MESSAGE_BROKER_* environment, one domainevents.Open, an event bus. It then
// creates an order, moves it to in_progress and cancels it: three events.
//
// With MESSAGE_BROKER_ENABLED unset (the default) it prints each event's
// wire body on stdout as one JSON line, so it runs anywhere; logs go to
// stderr:
//
//	go run ./examples/orders
//
// With a broker:
//
//	MESSAGE_BROKER_ENABLED=true MESSAGE_BROKER_TYPE=rabbitmq go run ./examples/orders
//	MESSAGE_BROKER_ENABLED=true MESSAGE_BROKER_TYPE=kafka MESSAGE_BROKER_PORT=9092 go run ./examples/orders
//
// On RabbitMQ it declares the queue MESSAGE_BROKER_QUEUE (default here
// orders.events.all), bound to every routing key, so the events have
// somewhere to go; on Kafka the topic orders.events must exist (or be
// auto-created by the cluster). It starts even if the broker is down: the
// events are retried, then kept in the spool (MESSAGE_BROKER_SPOOL_DIR) and
// replayed when the broker is back; "domainevents spool list" (cmd/domainevents) lists the
// spool.
//
// With EXAMPLE_STATUS_ADDR set (127.0.0.1:8081, say) it also serves the
// readiness probe and status page of package health, /healthz and
// /status, and keeps serving after the three events until interrupted:
//
//	EXAMPLE_STATUS_ADDR=127.0.0.1:8081 go run ./examples/orders &
//	curl -i 127.0.0.1:8081/healthz; curl 127.0.0.1:8081/status
//
// It exits non-zero if an event is neither published nor spooled.
package main
