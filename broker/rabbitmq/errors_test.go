package rabbitmq

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"

	"github.com/domainevents/domainevents/broker"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		err  error
		want error
	}{
		{amqp.ErrCredentials, broker.ErrUnauthorized},
		{amqp.ErrVhost, broker.ErrUnauthorized},
		{&amqp.Error{Code: amqp.AccessRefused}, broker.ErrUnauthorized},
		{&amqp.Error{Code: amqp.NotAllowed, Reason: "vhost x not found"}, broker.ErrInvalid},
		{&amqp.Error{Code: amqp.PreconditionFailed}, broker.ErrInvalid},
		{&amqp.Error{Code: amqp.NotFound}, broker.ErrUnroutable},
		{&amqp.Error{Code: amqp.ContentTooLarge}, broker.ErrTooLarge},
		{amqp.ErrFrameTooLarge, broker.ErrTooLarge},
		{&amqp.Error{Code: amqp.ConnectionForced}, broker.ErrUnavailable},
		{&amqp.Error{Code: amqp.InternalError}, broker.ErrUnavailable},
		{&amqp.Error{Code: amqp.ResourceError}, broker.ErrUnavailable},
		{amqp.ErrClosed, broker.ErrUnavailable},
		{io.EOF, broker.ErrUnavailable},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, broker.ErrUnavailable},
		{fmt.Errorf("x: %w", syscall.ECONNRESET), broker.ErrUnavailable},
		{&tls.CertificateVerificationError{Err: errors.New("bad cert")}, broker.ErrUnauthorized},
		{context.Canceled, nil},
		{context.DeadlineExceeded, nil},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.err), func(t *testing.T) {
			assert.Equal(t, tt.want, classify(tt.err))
			w := wrap("op", tt.err)
			if tt.want == nil {
				assert.Equal(t, tt.err, w, "context errors pass through")
				return
			}
			assert.ErrorIs(t, w, tt.want)
			assert.ErrorIs(t, w, tt.err, "the cause stays reachable")
		})
	}
}
