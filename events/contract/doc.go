// Package contract writes machine-readable contracts of the events a
// service publishes, for consumers in any language: a JSON Schema (draft
// 2020-12) of each event's wire body, and an AsyncAPI 3.0.0 document of
// the service (channels, operations, messages with their headers).
//
//	files, err := contract.JSONSchemas(reg)                     // reg: the *events.Registry consumers decode with
//	api, err := contract.AsyncAPIFile(reg, contract.Service{
//		Title: "orders-service", Version: "1.4.0", Broker: cfg, // cfg: broker.Config: Type, Exchange or Topic
//	})
//	err = contract.WriteFiles("contracts", append(files, api)...)
//
// The domainevents command writes them for the order events
// (domainevents contracts --format jsonschema|asyncapi --out DIR); a service
// with events of its own calls this package from its own code with its own
// registry, as the package Example does.
//
// # JSON Schema from Go types
//
// Each schema describes the envelope ({"name", "id", "timestamp", "data"},
// see package events) with the event's JSON encoding under "data", found by
// reflection as encoding/json encodes the type: json tags, omitempty,
// ",string", embedded structs, time.Time as a date-time string, []byte as
// base64, a type with MarshalText as a string. A nil slice, map or pointer
// makes its field accept null, unless the zero value's encoding shows
// otherwise (events.OrderCreated writes no items as []). Unknown fields are
// allowed: producers may add fields, as the decoder ignores them.
//
// Reflection cannot see what Validate requires. A field says it with a
// jsonschema tag, a comma-separated list of:
//
//	required        the key must be there
//	minLength=N     a string of at least N characters (required strings: minLength=1)
//	minimum=N       a number of at least N
//	format=NAME     a JSON Schema format: uuid, date-time, email, ...
//	const=VALUE     exactly this value
//
// A type whose encoding reflection cannot know (its own MarshalJSON, rules
// of its own) implements [Schemer]; events.Money (a JSON number with two
// decimals, never negative) and events.OrderStatus (the known statuses) do.
// A type with a MarshalJSON and no JSONSchema is an error naming the field,
// except a struct whose zero value encodes to an object with every one of
// its fields (the MarshalJSON of events.OrderCreated only replaces a nil
// slice).
//
// Formats are annotations in 2020-12: a validator checks uuid or date-time
// only when told to. What no portable schema can say is in descriptions:
// money's two decimals ("multipleOf": 0.01 fails 12550.07 in validators
// that divide in floating point). The timestamp's pattern asks for UTC,
// which producers write; the decoder of this module also accepts an
// offset.
//
// # AsyncAPI
//
// [AsyncAPI] describes a service publishing every event of a registry (see
// its doc for the channels, messages, headers and bindings). Message
// payloads are the same schemas, under components.schemas, as AsyncAPI
// Schema Objects (the keywords used mean the same in draft 07). The
// document is JSON; AsyncAPI tools read it as they read YAML.
//
// The test suite validates both outputs against the published
// meta-schemas (JSON Schema 2020-12, AsyncAPI 3.0.0; vendored in testdata)
// and checks that events.Encode's output validates against the schemas,
// and that broken events do not.
package contract
