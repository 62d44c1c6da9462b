package rabbitmq

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"syscall"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/adapter"
)

// The Op of every error this adapter returns: "rabbitmq: <operation>".
// What and where (address, exchange, queue, message id) go in the text.
const (
	opConnect    = "rabbitmq: connect"
	opDeclare    = "rabbitmq: declare"
	opPublish    = "rabbitmq: publish"
	opSubscribe  = "rabbitmq: subscribe"
	opConsume    = "rabbitmq: consume"
	opClose      = "rabbitmq: close"
	opOptions    = "rabbitmq: options"
	opDeadLetter = "rabbitmq: dead-letter"
)

// replyCodes is the adapter's one error table: each AMQP reply code the
// broker closes a channel or connection with, its category, and what to do
// about it when a declaration fails with it. Codes not listed
// (connection-forced, internal-error, resource-error, frame errors...) are
// broker.ErrUnavailable: a new connection may succeed.
var replyCodes = map[int]struct {
	kind error
	hint string
}{
	amqp.AccessRefused:      {broker.ErrUnauthorized, "the user may not use it (check the user's permissions on the vhost)"},
	amqp.NotFound:           {broker.ErrUnroutable, "it does not exist (passive mode declares nothing)"},
	amqp.NoRoute:            {broker.ErrUnroutable, ""},
	amqp.ContentTooLarge:    {broker.ErrTooLarge, ""},
	amqp.NotAllowed:         {broker.ErrInvalid, "not allowed (does the vhost exist?)"},
	amqp.PreconditionFailed: {broker.ErrInvalid, "it exists with a different type or arguments (delete it or change the name)"},
	amqp.InvalidPath:        {broker.ErrInvalid, ""},
	amqp.SyntaxError:        {broker.ErrInvalid, ""},
	amqp.CommandInvalid:     {broker.ErrInvalid, ""},
	amqp.NotImplemented:     {broker.ErrInvalid, ""},
	amqp.ResourceLocked:     {broker.ErrInvalid, "it is exclusive to another connection"},
}

// classify maps an amqp091 or network error to a broker category (nil for
// context errors, which pass through as they are).
func classify(err error) error {
	var ae *amqp.Error
	switch {
	case err == nil, errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return nil
	case errors.Is(err, amqp.ErrCredentials), errors.Is(err, amqp.ErrSASL), errors.Is(err, amqp.ErrVhost):
		return broker.ErrUnauthorized
	case errors.Is(err, amqp.ErrFrameTooLarge):
		return broker.ErrTooLarge
	case errors.As(err, &ae):
		if _, ok := serverMaxSize(ae); ok {
			return broker.ErrTooLarge // 406 "message size ... is larger than configured max size ..."
		}
		if c, ok := replyCodes[ae.Code]; ok {
			return c.kind
		}
		return broker.ErrUnavailable
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return broker.ErrUnavailable
	}
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &certErr) {
		return broker.ErrUnauthorized // a wrong certificate does not fix itself
	}
	return broker.ErrUnavailable // network errors, timeouts, anything unknown
}

// wrap classifies err into a *broker.Error with op, what failed in its
// text; context errors pass through as they are.
func wrap(op, what string, err error) error {
	if err == nil {
		return nil
	}
	kind := classify(err)
	if kind == nil {
		return err
	}
	if what != "" {
		err = fmt.Errorf("%s: %w", what, err)
	}
	return adapter.Wrap(op, kind, err)
}

// connectErr is wrap for a failed dial of addr. RabbitMQ answers
// connection.open for a virtual host the user may not open (it does not
// exist, the user has no permission on it) with 530 NOT_ALLOWED: like a
// refused login, that needs a human, so it matches broker.ErrUnauthorized.
func connectErr(addr string, err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.NotAllowed {
		return adapter.Wrap(opConnect, broker.ErrUnauthorized,
			fmt.Errorf("%s: the user may not open the virtual host (does it exist? has the user permissions on it?): %w", addr, err))
	}
	return wrap(opConnect, addr, err)
}

// healthKind is the category of Health's error while the adapter is not
// connected and last is the last attempt's error: broker.ErrUnauthorized
// when the credentials or the virtual host were refused (a human must fix
// them; the adapter keeps trying), broker.ErrUnavailable otherwise.
func healthKind(last error) error {
	if errors.Is(last, broker.ErrUnauthorized) {
		return broker.ErrUnauthorized
	}
	return broker.ErrUnavailable
}

// declareErr is wrap for a failed declaration, with the table's hint.
func declareErr(what string, err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		if c, ok := replyCodes[ae.Code]; ok && c.hint != "" {
			return adapter.Wrap(opDeclare, c.kind, fmt.Errorf("%s: %s: %w", what, c.hint, err))
		}
	}
	return wrap(opDeclare, what, err)
}

// serverMaxSize reads the server's limit from the reason RabbitMQ closes a
// channel with when a message exceeds max_message_size:
// "PRECONDITION_FAILED - message size 2097152 is larger than configured
// max size 1048576".
func serverMaxSize(ae *amqp.Error) (int, bool) {
	if ae == nil || ae.Code != amqp.PreconditionFailed {
		return 0, false
	}
	const marker = "larger than configured max size "
	i := strings.Index(ae.Reason, marker)
	if i < 0 {
		return 0, false
	}
	digits := ae.Reason[i+len(marker):]
	if j := strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' }); j >= 0 {
		digits = digits[:j]
	}
	n, err := strconv.Atoi(digits)
	return n, err == nil && n > 0
}

// publishFault reports whether a channel closed with err because of a
// message it was given (a soft, channel-level exception after
// basic.publish), as opposed to the connection going away.
func publishFault(err *amqp.Error) bool {
	return err != nil && err.Server && err.Recover
}
