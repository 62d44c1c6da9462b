package rabbitmq

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"syscall"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/adapter"
)

// classify maps an amqp091 or network error to a broker category. It is the
// one table of this adapter (tested in errors_test.go).
func classify(err error) error {
	var ae *amqp.Error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return nil // passed through as is
	case errors.Is(err, amqp.ErrCredentials), errors.Is(err, amqp.ErrSASL), errors.Is(err, amqp.ErrVhost):
		return broker.ErrUnauthorized
	case errors.As(err, &ae):
		switch ae.Code {
		case amqp.AccessRefused:
			return broker.ErrUnauthorized
		case amqp.NotAllowed: // e.g. "vhost not found"
			return broker.ErrInvalid
		case amqp.NotFound, amqp.NoRoute:
			return broker.ErrUnroutable
		case amqp.PreconditionFailed, amqp.InvalidPath, amqp.SyntaxError, amqp.CommandInvalid, amqp.NotImplemented, amqp.ResourceLocked:
			return broker.ErrInvalid
		case amqp.ContentTooLarge:
			return broker.ErrTooLarge
		case amqp.FrameError:
			if errors.Is(err, amqp.ErrFrameTooLarge) {
				return broker.ErrTooLarge
			}
			return broker.ErrUnavailable
		default: // ConnectionForced, ChannelError (closed), ResourceError, InternalError, UnexpectedFrame...
			return broker.ErrUnavailable
		}
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

// wrap classifies err into a *broker.Error with op; context errors pass
// through as they are.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return adapter.Wrap("rabbitmq: "+op, classify(err), err)
}
