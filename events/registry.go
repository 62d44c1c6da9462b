package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"time"
)

// Registry maps event names to the Go types bodies decode into. The zero
// value knows no event; [NewRegistry] knows the order events. Register your
// own event types in either with [Register]. A Registry is safe for
// concurrent Decode once registration is done.
type Registry struct {
	decoders map[string]func([]byte) (Event, error)
	types    map[string]reflect.Type
}

// NewRegistry returns a registry that knows OrderCreated, OrderStatusUpdated
// and OrderCancelled.
func NewRegistry() *Registry {
	r := &Registry{}
	// The names are distinct constants: these cannot fail.
	_ = Register[OrderCreated](r)
	_ = Register[OrderStatusUpdated](r)
	_ = Register[OrderCancelled](r)
	return r
}

var defaultRegistry = NewRegistry()

// Register teaches r to decode bodies named E's EventName into an E. E must
// be a value type whose zero value reports its name. Registering a name twice
// is an error. Not safe to call concurrently with Decode.
func Register[E Event](r *Registry) error {
	var zero E
	name := zero.EventName()
	if name == "" {
		return fmt.Errorf("events: register %T: EventName of the zero value is empty", zero)
	}
	if r.decoders == nil {
		r.decoders = map[string]func([]byte) (Event, error){}
		r.types = map[string]reflect.Type{}
	}
	if _, dup := r.decoders[name]; dup {
		return fmt.Errorf("events: register %T: name %q already registered", zero, name)
	}
	r.decoders[name] = func(data []byte) (Event, error) {
		var e E
		if err := json.Unmarshal(data, &e); err != nil {
			return nil, err
		}
		return e, nil
	}
	r.types[name] = reflect.TypeFor[E]()
	return nil
}

// Types returns the Go type registered under each event name (a copy: changing
// it changes nothing in r), for tools that describe the events on the wire:
// package [github.com/domainevents/domainevents/events/contract] writes
// their JSON Schema and AsyncAPI documents from it.
func (r *Registry) Types() map[string]reflect.Type { return maps.Clone(r.types) }

// Decode parses a wire body with the order-event registry. See [Registry.Decode].
func Decode(body []byte) (Envelope, error) { return defaultRegistry.Decode(body) }

// Decode parses a wire body into an envelope whose Data is the registered
// value type (e.g. events.OrderCancelled, not a pointer), then validates it.
//
// Errors match, with errors.Is: [ErrMalformed] for bodies that are not the
// envelope or whose fields have the wrong JSON type, [ErrUnknownEvent] for a
// name the registry lacks, [ErrInvalid] for an event that fails validation.
// Unknown JSON fields are ignored, so producers can add fields.
func (r *Registry) Decode(body []byte) (Envelope, error) {
	var w wireEnvelope
	if err := json.Unmarshal(body, &w); err != nil {
		return Envelope{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	switch {
	case w.Name == "":
		return Envelope{}, fmt.Errorf("%w: field name is missing or empty", ErrMalformed)
	case w.ID == "":
		return Envelope{}, fmt.Errorf("%w: %s: field id is missing or empty", ErrMalformed, w.Name)
	case len(w.Data) == 0 || bytes.Equal(w.Data, []byte("null")):
		return Envelope{}, fmt.Errorf("%w: %s: field data is missing", ErrMalformed, w.Name)
	}
	ts, err := time.Parse(time.RFC3339Nano, w.Timestamp)
	if err != nil {
		return Envelope{}, fmt.Errorf("%w: %s: field timestamp %q is not an ISO-8601 time", ErrMalformed, w.Name, truncate(w.Timestamp))
	}
	dec, ok := r.decoders[w.Name]
	if !ok {
		return Envelope{}, fmt.Errorf("%w: %q", ErrUnknownEvent, truncate(w.Name))
	}
	ev, err := dec(w.Data)
	if err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return Envelope{}, fmt.Errorf("%w: %s: data.%s: want %s, got JSON %s", ErrMalformed, w.Name, te.Field, te.Type, te.Value)
		}
		return Envelope{}, fmt.Errorf("%w: %s: data: %v", ErrMalformed, w.Name, err)
	}
	env := Envelope{Name: w.Name, ID: w.ID, Timestamp: ts.UTC(), Data: ev}
	if err := env.Validate(); err != nil { // what Encode would refuse, Decode refuses too
		return Envelope{}, err
	}
	return env, nil
}
