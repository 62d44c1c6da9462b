package broker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/domainevents/domainevents/broker"
)

func TestErrorUnwrapsToKindAndCause(t *testing.T) {
	err := fmt.Errorf("wrapped: %w", &broker.Error{Op: "rabbitmq: publish", Kind: broker.ErrUnavailable, Err: io.ErrUnexpectedEOF})
	assert.ErrorIs(t, err, broker.ErrUnavailable)
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	assert.NotErrorIs(t, err, broker.ErrRejected)
	assert.Equal(t, "wrapped: rabbitmq: publish: broker unavailable: unexpected EOF", err.Error())
	var be *broker.Error
	assert.ErrorAs(t, err, &be)
	assert.Equal(t, "rabbitmq: publish", be.Op)
}

func TestIsRetryable(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("plain"), false},
		{context.Canceled, false},
		{context.DeadlineExceeded, false},
		{&broker.Error{Kind: broker.ErrUnavailable}, true},
		{fmt.Errorf("x: %w", &broker.Error{Kind: broker.ErrUnavailable, Err: io.EOF}), true},
		{&broker.Error{Kind: broker.ErrClosed}, false},
		{&broker.Error{Kind: broker.ErrUnroutable}, false},
		{&broker.Error{Kind: broker.ErrRejected}, false},
		{&broker.Error{Kind: broker.ErrTooLarge}, false},
		{&broker.Error{Kind: broker.ErrInvalid}, false},
		{&broker.Error{Kind: broker.ErrUnauthorized}, false},
		{errors.Join(&broker.Error{Kind: broker.ErrUnavailable}, &broker.Error{Kind: broker.ErrClosed}), false},
		{errors.Join(&broker.Error{Kind: broker.ErrUnavailable}, broker.ErrDeadLettered), false},
		{&broker.Error{Kind: broker.ErrUnavailable, Err: context.DeadlineExceeded}, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.err), func(t *testing.T) {
			assert.Equal(t, tt.want, broker.IsRetryable(tt.err))
		})
	}
}

func TestCategory(t *testing.T) {
	assert.Equal(t, "", broker.Category(nil))
	assert.Equal(t, "unavailable", broker.Category(&broker.Error{Kind: broker.ErrUnavailable, Err: context.DeadlineExceeded}))
	assert.Equal(t, "unroutable", broker.Category(fmt.Errorf("x: %w", &broker.Error{Kind: broker.ErrUnroutable})))
	assert.Equal(t, "deadline_exceeded", broker.Category(context.DeadlineExceeded))
	assert.Equal(t, "unknown", broker.Category(io.EOF))
}
