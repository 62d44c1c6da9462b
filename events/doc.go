// Package events defines the order domain events and their wire format.
//
// # Events
//
// [OrderCreated], [OrderStatusUpdated] and [OrderCancelled] are plain value
// types. Each reports its stable wire name ([Event.EventName], e.g.
// "order.created"), its aggregate key ([Event.AggregateID], the order id,
// which Kafka uses as the record key) and validates itself.
//
// # Wire format
//
// An [Envelope] wraps an event with a fresh id and a timestamp:
//
//	{"name":"order.created","id":"<uuid>","timestamp":"2026-11-30T10:15:30.123Z",
//	 "data":{"orderId":"<uuid>","userId":"<uuid>","items":[{"productId":"sku-1","quantity":2,"price":5000.00}],"total":12550.00,"status":"created"}}
//
// Keys come in that order. The timestamp is UTC with milliseconds
// ([TimeLayout]). Money ([Money]) is exact: kept in cents, written as a JSON
// number with two decimals. Items are {"productId","quantity","price"} with
// price the unit price, the shape the README documents.
//
// [Encode] validates and marshals; [Decode] parses a body back into the typed
// event (events.OrderCreated, not a pointer) through a [Registry] keyed by
// name. Unknown JSON fields are ignored so producers can add fields.
//
// # Contracts
//
// The jsonschema struct tags and the JSONSchema methods of [Money] and
// [OrderStatus] describe what validation requires, for the JSON Schema and
// AsyncAPI documents package
// [github.com/domainevents/domainevents/events/contract] writes from a
// registry ([Registry.Types]). They change nothing in encoding or
// decoding.
//
// # Errors
//
// Every error from Encode and Decode matches one of [ErrInvalid] (a
// [*ValidationError] naming the field, e.g. "order.cancelled:
// data.newStatus \"created\": must be cancelled"), [ErrMalformed] or
// [ErrUnknownEvent]. Decode never panics, whatever the input (fuzzed by
// FuzzDecode).
package events
