// Command domainevents is the tool that goes with the library.
//
//	go install github.com/domainevents/domainevents/cmd/domainevents@latest
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
