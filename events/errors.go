package events

import (
	"errors"
	"strconv"
)

// Error categories, for use with errors.Is.
var (
	// ErrInvalid: an event failed validation. The error is a *ValidationError.
	ErrInvalid = errors.New("invalid event")
	// ErrMalformed: a body is not the JSON envelope, or a field has the wrong type.
	ErrMalformed = errors.New("malformed event body")
	// ErrUnknownEvent: a body names an event no registry entry knows.
	ErrUnknownEvent = errors.New("unknown event name")
)

// ValidationError names the field that is wrong and why. It matches
// [ErrInvalid] with errors.Is.
type ValidationError struct {
	// Event is the event name, e.g. "order.cancelled".
	Event string
	// Field is the JSON path inside data, e.g. "items[2].price".
	Field string
	// Value is the offending value as text ("" when missing).
	Value string
	// Problem says what is wrong, e.g. "required".
	Problem string
}

func invalid(field, value, problem string) *ValidationError {
	return &ValidationError{Field: field, Value: value, Problem: problem}
}

// Error reads like: order.cancelled: data.newStatus "created": must be cancelled.
func (e *ValidationError) Error() string {
	s := e.Event
	if s != "" {
		s += ": "
	}
	s += "data." + e.Field
	if e.Value != "" {
		s += " " + strconv.Quote(e.Value)
	}
	return s + ": " + e.Problem
}

// Is reports whether target is [ErrInvalid].
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// validate runs ev.Validate and stamps the event name into a *ValidationError.
func validate(ev Event) error {
	err := ev.Validate()
	var ve *ValidationError
	if errors.As(err, &ve) && ve.Event == "" {
		ve.Event = ev.EventName()
	}
	return err
}
