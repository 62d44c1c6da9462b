// Command outbox shows an order and its events committed together, and a
// rolled-back order producing no event, through the transactional outbox:
// the service writes the order row and publishes its events on the bus in
// one database transaction (Store.Transact); a relay, opened with
// domainevents.OpenRelay from the same MESSAGE_BROKER_* configuration as
// domainevents.Open, publishes the events once the transaction has
// committed. The relay starts while the broker is down: the events wait
// in the table until it is back.
//
// On a fresh clone, with nothing installed, it uses an embedded SQLite file
// in a new temporary directory and prints each event body the relay
// publishes as one JSON line on stdout (logs go to stderr):
//
//	go run ./examples/outbox
//
// Against real servers (the schema is created if missing):
//
//	DATABASE_URL=postgres://postgres@127.0.0.1:5432/test MESSAGE_BROKER_ENABLED=true go run ./examples/outbox
//	DATABASE_URL='root@tcp(127.0.0.1:3306)/test' MESSAGE_BROKER_ENABLED=true MESSAGE_BROKER_TYPE=kafka go run ./examples/outbox
//
// With RabbitMQ it declares the queue EXAMPLE_QUEUE (default
// orders.events.all, bound with order.#) so the events have somewhere to
// go. It exits non-zero if the committed order's events are not published
// within 30 seconds.
package main
