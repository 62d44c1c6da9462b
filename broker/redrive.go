package broker

import (
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"
)

// ParseDeadLetter is the inverse of [DeadLetter.Annotated]: it reads the
// dead-letter headers of m (a message read back from a broker-side
// dead-letter destination) into a DeadLetter whose Message no longer
// carries them. ok is false when m has no [HeaderDeadLetterReason] nor
// [HeaderDeadLetterCategory]: it was not dead-lettered by this library
// (the other fields are then zero and Message is m). m.Headers is not
// modified.
func ParseDeadLetter(m Message) (d DeadLetter, ok bool) {
	reason, hasReason := m.Headers[HeaderDeadLetterReason]
	category, hasCategory := m.Headers[HeaderDeadLetterCategory]
	if !hasReason && !hasCategory {
		return DeadLetter{Message: m}, false
	}
	d.Reason, d.Category = reason, category
	d.Attempts, _ = strconv.Atoi(m.Headers[HeaderDeadLetterAttempts])
	d.FirstFailure, _ = time.Parse(time.RFC3339Nano, m.Headers[HeaderDeadLetterFirstFailure])
	d.LastFailure, _ = time.Parse(time.RFC3339Nano, m.Headers[HeaderDeadLetterLastFailure])
	h := maps.Clone(m.Headers)
	for _, k := range []string{HeaderDeadLetterReason, HeaderDeadLetterCategory, HeaderDeadLetterAttempts,
		HeaderDeadLetterFirstFailure, HeaderDeadLetterLastFailure} {
		delete(h, k)
	}
	if len(h) == 0 {
		h = nil
	}
	m.Headers = h
	d.Message = m
	return d, true
}

// RedriveOptions select the dead letters a re-drive moves from a
// broker-side dead-letter destination back to where they were going
// (rabbitmq.Redrive, kafka.Redrive). Every field that is set must match;
// the zero value selects every dead letter.
type RedriveOptions struct {
	// Name selects one event name.
	Name string
	// ID selects one event id.
	ID string
	// Reason selects dead letters whose reason or category contains it,
	// ignoring case: "handler_failed", "invalid", "inventory service".
	Reason string
	// Limit is how many dead letters at most are selected; 0 means all.
	Limit int
	// DryRun reports what would be re-driven and moves nothing.
	DryRun bool
}

// Validate reports a bad field (an error matching [ErrInvalid] naming it).
func (o RedriveOptions) Validate() error {
	if o.Limit < 0 {
		return &Error{Op: "redrive", Kind: ErrInvalid, Err: fmt.Errorf("RedriveOptions.Limit %d: want 0 (all) or more", o.Limit)}
	}
	return nil
}

// Matches reports whether d is selected (Limit aside).
func (o RedriveOptions) Matches(d DeadLetter) bool {
	if o.Name != "" && d.Message.Name != o.Name {
		return false
	}
	if o.ID != "" && d.Message.ID != o.ID {
		return false
	}
	if o.Reason != "" {
		r := strings.ToLower(o.Reason)
		if !strings.Contains(strings.ToLower(d.Reason), r) && !strings.Contains(strings.ToLower(d.Category), r) {
			return false
		}
	}
	return true
}

// Redriven is one dead letter a re-drive selected.
type Redriven struct {
	// DeadLetter is what the dead-letter destination held: the message
	// without the dead-letter headers, and why it died.
	DeadLetter
	// To is where it goes back to: the exchange and routing key, or the
	// topic, it was first published to.
	To Destination
	// Err says why it could not be moved (it stays in the dead-letter
	// destination); nil when it was moved, or would be by a dry run.
	Err error
}

// RedriveResult says what a re-drive did.
type RedriveResult struct {
	// Scanned counts the dead letters read.
	Scanned int
	// Selected are those that matched, in the order they were read.
	Selected []Redriven
	// Moved counts those re-published (confirmed by the broker) and then
	// removed from the dead-letter destination; 0 in a dry run.
	Moved int
}

// Failed counts the selected dead letters that could not be moved.
func (r RedriveResult) Failed() int {
	n := 0
	for _, s := range r.Selected {
		if s.Err != nil {
			n++
		}
	}
	return n
}

// Err joins the errors of the dead letters that could not be moved (nil
// when there are none).
func (r RedriveResult) Err() error {
	var errs []error
	for _, s := range r.Selected {
		if s.Err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", s.Message.Name, s.Message.ID, s.Err))
		}
	}
	return errors.Join(errs...)
}
