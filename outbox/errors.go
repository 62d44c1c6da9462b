package outbox

import (
	"context"
	"errors"

	"github.com/domainevents/domainevents/broker"
)

// ErrDatabase marks every error of the database the outbox lives in (a
// connection refused, a transaction aborted, a constraint violated), as
// opposed to the broker's: errors.Is(err, outbox.ErrDatabase). Such an
// error reads "outbox: database: <operation>: <the driver's error>",
// also matches broker.ErrUnavailable (the store could not take or give
// the message; trying the transaction again may succeed), and
// errors.As reaches the driver's own error (its SQLSTATE or error
// number tells a constraint violation from a lost connection).
var ErrDatabase = errors.New("database error")

// dbError is a database failure during op.
type dbError struct {
	op  string
	err error
}

// Error names the system that failed, the database, never the broker:
// "outbox: database: begin: failed to connect to ...". The driver's text
// is passed on as it is; the DSN is never added to it.
func (e *dbError) Error() string { return "outbox: database: " + e.op + ": " + e.err.Error() }

// Unwrap returns the database mark, the retryable category and the cause.
func (e *dbError) Unwrap() []error { return []error{ErrDatabase, broker.ErrUnavailable, e.err} }

// dbErr wraps a database failure during op; context errors are returned
// as they are.
func dbErr(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return &dbError{op: op, err: err}
}
