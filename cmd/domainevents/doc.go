// Command domainevents is the tool that goes with the library: it lists
// and re-drives what a service parked (its local spool, its outbox's dead
// rows, the broker's dead-letter queues), and writes the contracts of the
// order events for their consumers.
//
//	go install github.com/domainevents/domainevents/cmd/domainevents@latest
//	domainevents <command> <subcommand> [flags]   # -h on any of them lists its flags
//
// It reads the same MESSAGE_BROKER_* variables as the service, so it finds
// the same spool and broker. It never prints a password, nor the part of a
// database URL that holds one.
//
// # spool
//
//	domainevents spool list     # one line per spooled event, with its reason; works while the service runs
//	domainevents spool replay   # publish them; remove what the broker confirmed
//
// The spool is MESSAGE_BROKER_SPOOL_DIR, or the default named after
// MESSAGE_BROKER_CLIENT_ID. A running service owns its spool and replays
// it by itself once the broker is back: replay refuses then, naming the
// service's pid. Events the broker refuses for good go to its dead-letter
// queue; those that still cannot be delivered stay in the spool with their
// new reason, and replay exits non-zero.
//
// # outbox
//
//	domainevents outbox list --reason "too large"             # dead rows, with their last error
//	domainevents outbox redrive --key 6f1e7c2a-... --dry-run  # what would be re-driven
//	domainevents outbox redrive --older-than 1h               # back to pending: the relays publish them
//
// The database is --database-url or DATABASE_URL: postgres://...,
// mysql://user:pass@tcp(host:3306)/db, or a SQLite file:path; the table
// --outbox-table (default domainevents_outbox). Filters: --key, --id,
// --name, --reason (a substring of the last error, ignoring case),
// --older-than, --limit (list: 100 by default; redrive: all). A re-driven
// row is published after the rows of its key that were published while it
// was dead, and before those still pending (outbox.Store.Redrive).
//
// # dlq
//
//	domainevents dlq list                          # the dead letters, with their reason and destination
//	domainevents dlq redrive --name order.created --dry-run
//	domainevents dlq redrive --reason handler_failed
//
// The dead-letter queue or topic is --dlq, by default on RabbitMQ
// "$MESSAGE_BROKER_QUEUE.dlq" (a subscriber's), or "<exchange>.dlq" (the
// publisher's) without a queue, and on Kafka "<topic>.dlq". A message goes
// back to the exchange and routing key (RabbitMQ) or the topic (Kafka) it
// was first published to, with its body, id and headers, and leaves the
// dead-letter queue or topic only once the broker confirmed it
// (rabbitmq.Redrive, kafka.Redrive). Filters: --name, --id, --reason (of
// the reason or the category), --limit; --sasl for a Kafka cluster with
// SASL.
//
// # contracts
//
// domainevents contracts writes the contracts of the order events
// (order.created, order.status.updated, order.cancelled) for their
// consumers: a JSON Schema (draft 2020-12) of each event's wire body, and
// an AsyncAPI 3.0.0 document of the service publishing them.
//
//	domainevents contracts --out contracts                   # both, as files: <event>.schema.json, asyncapi.json
//	domainevents contracts --format asyncapi --broker kafka  # the AsyncAPI document on stdout
//	domainevents contracts --format jsonschema --event order.created
//
// Flags: --format jsonschema|asyncapi|all (default all), --out DIR (default:
// stdout; several schemas then print as one JSON object keyed by file
// name), --event NAME (one schema), --broker rabbitmq|kafka, --service
// NAME and --version V (the document's info; default
// MESSAGE_BROKER_CLIENT_ID and 1.0.0), --topic-per-event (Kafka). The
// exchange, virtual host and topic come from the MESSAGE_BROKER_*
// variables, as for the service.
//
// A service with events of its own writes their contracts from its own
// code, with its registry: the command cannot see it. See package
// github.com/domainevents/domainevents/events/contract.
package main
