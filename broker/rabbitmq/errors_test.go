package rabbitmq

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
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
		{&amqp.Error{Code: amqp.NoRoute}, broker.ErrUnroutable},
		{&amqp.Error{Code: amqp.ResourceLocked}, broker.ErrInvalid},
		{&amqp.Error{Code: amqp.PreconditionFailed, Reason: "PRECONDITION_FAILED - message size 2097152 is larger than configured max size 1048576"}, broker.ErrTooLarge},
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
			w := wrap(opPublish, "message m-1", tt.err)
			if tt.want == nil {
				assert.Equal(t, tt.err, w, "context errors pass through")
				return
			}
			assert.ErrorIs(t, w, tt.want)
			assert.ErrorIs(t, w, tt.err, "the cause stays reachable")
			assert.Contains(t, w.Error(), "rabbitmq: publish: ")
			assert.Contains(t, w.Error(), "message m-1")
		})
	}
}

// TestDeclareErrorsUseTheTable: a failed declaration gets the category of
// the one table, plus its hint.
func TestDeclareErrorsUseTheTable(t *testing.T) {
	err := declareErr("exchange x", &amqp.Error{Code: amqp.NotFound, Reason: "NOT_FOUND - no exchange 'x'"})
	assert.ErrorIs(t, err, broker.ErrUnroutable)
	assert.Contains(t, err.Error(), "rabbitmq: declare: message unroutable: exchange x: it does not exist")
	err = declareErr("queue q", &amqp.Error{Code: amqp.PreconditionFailed, Reason: "inequivalent arg"})
	assert.ErrorIs(t, err, broker.ErrInvalid)
	assert.Contains(t, err.Error(), "different type or arguments")
}

func TestServerMaxSize(t *testing.T) {
	for reason, want := range map[string]int{
		"PRECONDITION_FAILED - message size 2097152 is larger than configured max size 1048576": 1048576,
		"PRECONDITION_FAILED - inequivalent arg 'durable'":                                      0,
		"PRECONDITION_FAILED - message size 5 is larger than configured max size x":             0,
	} {
		n, ok := serverMaxSize(&amqp.Error{Code: amqp.PreconditionFailed, Reason: reason})
		assert.Equal(t, want, n, reason)
		assert.Equal(t, want > 0, ok, reason)
	}
	_, ok := serverMaxSize(&amqp.Error{Code: amqp.NotFound, Reason: "larger than configured max size 10"})
	assert.False(t, ok, "only a precondition failure carries the size")
}

// A URL that does not parse is reported without any part of it: the part
// net/url would quote may be a password.
func TestURLErrorsQuoteNothing(t *testing.T) {
	for _, u := range []string{
		"amqp://user:hunter2@host:5672/%zzhunter2",
		"amqp://user:hunter2@host:56x72",
		"amqp://user:hunter2",
		"amqp://user:hunter2@ho%st",
		"http://user:hunter2@host",
		"amqp://user:hunter2@host /",
		"amqp://user:hunter2@host/?heartbeat=hunter2",
		"amqp://user:hunter2@[::1",
		"amqp://user:hun\x7fter2@host",
	} {
		_, err := amqp.ParseURI(u)
		if err == nil {
			t.Fatalf("%q parsed; the case tests nothing", u)
		}
		got := redactURLError(err)
		if strings.Contains(got, "hunter2") || strings.Contains(got, "host") && !strings.Contains(got, "in host") {
			t.Errorf("redactURLError(ParseURI(%q)) = %q: quotes the URL", u, got)
		}
	}
}

// TLS asked for (by option or MESSAGE_BROKER_TLS) and an amqp:// URL would
// connect in plain text: amqp091 applies TLS to amqps:// only. It is refused.
func TestTLSRefusesPlainURLs(t *testing.T) {
	cfg := broker.Config{Type: broker.RabbitMQ, Host: "127.0.0.1", Port: 5671, VHost: "/", Username: "u", Exchange: "x"}
	for _, tc := range []struct {
		name  string
		tls   bool // WithTLS(nil)
		env   bool // cfg.TLS
		url   string
		fails bool
	}{
		{"WithTLS, amqp://", true, false, "amqp://u:hunter2@h:5672/", true},
		{"cfg.TLS, amqp://", false, true, "amqp://u:hunter2@h:5672/", true},
		{"WithTLS, amqps://", true, false, "amqps://u:hunter2@h:5671/", false},
		{"no TLS, amqp://", false, false, "amqp://u:hunter2@h:5672/", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := defaultConnOptions()
			opts := []Option{WithURLs("amqps://u:p@other:5671/", tc.url)}
			if tc.tls {
				opts = append(opts, WithTLS(nil))
			}
			for _, opt := range opts {
				if err := opt.(connOption)(&o); err != nil {
					t.Fatal(err)
				}
			}
			c := cfg
			c.TLS = tc.env
			_, err := prepare(c, &o)
			if !tc.fails {
				if err != nil {
					t.Fatalf("prepare: %v", err)
				}
				return
			}
			if !errors.Is(err, broker.ErrInvalid) || !strings.Contains(err.Error(), "URL #2") || strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("prepare = %v; want ErrInvalid naming URL #2 without its password", err)
			}
		})
	}
}
