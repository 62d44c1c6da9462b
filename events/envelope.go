package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// TimeLayout is the wire format of the envelope timestamp: ISO-8601 in UTC
// with milliseconds, as JavaScript's Date.toISOString writes it (the format
// the original Node.js service produced). Decoding accepts any RFC 3339 time.
const TimeLayout = "2006-01-02T15:04:05.000Z"

// Envelope is what goes on the wire:
//
//	{"name":"order.created","id":"<uuid>","timestamp":"<ISO-8601 UTC>","data":{...}}
//
// ID is the idempotency key consumers deduplicate on; a redelivered or
// republished event keeps its ID.
type Envelope struct {
	Name      string
	ID        string
	Timestamp time.Time
	Data      Event
}

// Stamper makes envelopes. The zero value uses a random UUID (v4) and the
// current time; tests set NewID and Now to get fixed output.
type Stamper struct {
	// NewID returns a fresh event id. Default: uuid.NewString.
	NewID func() string
	// Now returns the current time. Default: time.Now. It is converted to UTC
	// and truncated to milliseconds, the wire precision.
	Now func() time.Time
}

// Stamp wraps e in a new envelope with a fresh id and timestamp.
func (s Stamper) Stamp(e Event) Envelope {
	id := ""
	if s.NewID != nil {
		id = s.NewID()
	} else {
		id = uuid.NewString()
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	return Envelope{
		Name:      e.EventName(),
		ID:        id,
		Timestamp: now().UTC().Truncate(time.Millisecond),
		Data:      e,
	}
}

// New wraps e in an envelope with a fresh UUID and the current UTC time.
func New(e Event) Envelope { return Stamper{}.Stamp(e) }

// Validate checks the envelope and its event.
func (env Envelope) Validate() error {
	switch {
	case env.Data == nil:
		return fmt.Errorf("%w: envelope has no data", ErrInvalid)
	case env.Name != env.Data.EventName():
		return fmt.Errorf("%w: envelope name %q does not match event %q", ErrInvalid, env.Name, env.Data.EventName())
	case env.ID == "":
		return fmt.Errorf("%w: %s: envelope id is empty", ErrInvalid, env.Name)
	case env.Timestamp.IsZero():
		return fmt.Errorf("%w: %s: envelope timestamp is zero", ErrInvalid, env.Name)
	}
	return validate(env.Data)
}

// wireEnvelope fixes the key order and the timestamp format.
type wireEnvelope struct {
	Name      string          `json:"name"`
	ID        string          `json:"id"`
	Timestamp string          `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

// Encode validates env and returns its wire body. An invalid event is an
// error matching [ErrInvalid] that names the field.
func Encode(env Envelope) ([]byte, error) {
	if err := env.Validate(); err != nil {
		return nil, err
	}
	data, err := json.Marshal(env.Data)
	if err != nil {
		return nil, fmt.Errorf("events: encode %s: %w", env.Name, err)
	}
	return json.Marshal(wireEnvelope{
		Name:      env.Name,
		ID:        env.ID,
		Timestamp: env.Timestamp.UTC().Format(TimeLayout),
		Data:      data,
	})
}

// MarshalJSON is [Encode]: an envelope marshals to its wire body.
func (env Envelope) MarshalJSON() ([]byte, error) { return Encode(env) }

// Registry maps event names to the Go types bodies decode into. The zero
// value is empty; [NewRegistry] knows the order events. A Registry is safe
// for concurrent Decode once registration is done.
type Registry struct {
	decoders map[string]func([]byte) (Event, error)
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
	return nil
}

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
	if err := validate(ev); err != nil {
		return Envelope{}, err
	}
	return env, nil
}
