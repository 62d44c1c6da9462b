package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"testing"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"

	"github.com/domainevents/domainevents/broker"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		err  error
		want error
	}{
		{sarama.ErrLeaderNotAvailable, broker.ErrUnavailable},
		{sarama.ErrNotLeaderForPartition, broker.ErrUnavailable},
		{sarama.ErrNotEnoughReplicas, broker.ErrUnavailable},
		{sarama.ErrNotEnoughReplicasAfterAppend, broker.ErrUnavailable},
		{sarama.ErrRequestTimedOut, broker.ErrUnavailable},
		{sarama.ErrOutOfBrokers, broker.ErrUnavailable},
		{sarama.Wrap(sarama.ErrOutOfBrokers, io.EOF), broker.ErrUnavailable},
		{fmt.Errorf("dial: %w", syscall.ECONNREFUSED), broker.ErrUnavailable},
		{sarama.ErrMessageSizeTooLarge, broker.ErrTooLarge},
		{sarama.ConfigurationError("Attempt to produce message larger than configured Producer.MaxMessageBytes: 2 > 1"), broker.ErrTooLarge},
		{sarama.ConfigurationError("Net.SASL.User must not be empty"), broker.ErrInvalid},
		{sarama.ErrTopicAuthorizationFailed, broker.ErrUnauthorized},
		{sarama.Wrap(sarama.ErrOutOfBrokers, sarama.Wrap(sarama.ErrSASLAuthenticationFailed, errors.New("bad password"))), broker.ErrUnauthorized},
		{sarama.ErrUnknownTopicOrPartition, broker.ErrUnroutable},
		{sarama.ErrInvalidRecord, broker.ErrInvalid},
		{sarama.ErrInvalidMessage, broker.ErrInvalid},
		{sarama.ErrClosedClient, broker.ErrClosed},
		{sarama.ErrDuplicateSequenceNumber, broker.ErrRejected},
		{context.Canceled, nil},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.err), func(t *testing.T) {
			assert.Equal(t, tt.want, classify(tt.err))
			w := wrap(opPublish, tt.err, "")
			if tt.want == nil {
				assert.Equal(t, tt.err, w)
				return
			}
			assert.ErrorIs(t, w, tt.want)
			assert.ErrorIs(t, w, tt.err, "the cause stays reachable")
		})
	}
}
