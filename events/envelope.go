package events

import (
	"encoding/json"
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
	// Name is the event's name ("order.created"), which selects its type.
	Name string
	// ID is a UUID, unique per event, kept across redeliveries.
	ID string
	// Timestamp is when the envelope was made (the event was first
	// published), in UTC to the millisecond; required.
	Timestamp time.Time
	// Data is the event itself, encoded as JSON under "data".
	Data Event
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
