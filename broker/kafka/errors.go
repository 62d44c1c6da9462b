package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"

	"github.com/IBM/sarama"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/adapter"
)

// The Op of every error this adapter returns: "kafka: <operation>". What
// the operation concerned (topic, addresses, record id) is in the error
// text, not in Op.
const (
	opConnect    = "kafka: connect"     // reaching the cluster, checking the topic, starting the producer or group
	opPublish    = "kafka: publish"     // Publish and the records it produced
	opSubscribe  = "kafka: subscribe"   // NewSubscriber's arguments
	opConsume    = "kafka: consume"     // a consumer-group session
	opClose      = "kafka: close"       // Close
	opOptions    = "kafka: options"     // an option's value
	opConfig     = "kafka: config"      // the sarama configuration
	opDeadLetter = "kafka: dead-letter" // producing a failed record to <topic>.dlq
)

// kinds is the mapping table, checked in order with errors.Is (sarama wraps
// broker answers in errors that errors.As cannot see through, but errors.Is
// can). Authentication comes first: a cluster that refuses every login also
// reports "run out of available brokers".
var kinds = []struct {
	kind error
	errs []error
}{
	{broker.ErrUnauthorized, []error{sarama.ErrSASLAuthenticationFailed, sarama.ErrTopicAuthorizationFailed,
		sarama.ErrClusterAuthorizationFailed, sarama.ErrIllegalSASLState, sarama.ErrUnsupportedSASLMechanism}},
	{broker.ErrTooLarge, []error{sarama.ErrMessageSizeTooLarge, sarama.ErrMessageSetSizeTooLarge}},
	{broker.ErrUnroutable, []error{sarama.ErrUnknownTopicOrPartition}},
	{broker.ErrInvalid, []error{sarama.ErrInvalidMessage, sarama.ErrInvalidTopic, sarama.ErrInvalidRequiredAcks,
		sarama.ErrInvalidRecord, sarama.ErrInvalidTimestamp, sarama.ErrUnsupportedCompressionType, sarama.ErrUnsupportedVersion}},
	{broker.ErrClosed, []error{sarama.ErrClosedClient, sarama.ErrShuttingDown}},
	{broker.ErrUnavailable, []error{sarama.ErrLeaderNotAvailable, sarama.ErrNotLeaderForPartition, sarama.ErrRequestTimedOut,
		sarama.ErrBrokerNotAvailable, sarama.ErrReplicaNotAvailable, sarama.ErrNotEnoughReplicas,
		sarama.ErrNotEnoughReplicasAfterAppend, sarama.ErrKafkaStorageError, sarama.ErrNetworkException,
		sarama.ErrNotController, sarama.ErrFencedLeaderEpoch, sarama.ErrUnknownLeaderEpoch,
		sarama.ErrThrottlingQuotaExceeded, sarama.ErrOffsetsLoadInProgress, sarama.ErrConsumerCoordinatorNotAvailable,
		sarama.ErrOutOfBrokers, sarama.ErrNotConnected}},
}

// classify maps a sarama or network error to a broker category: the one
// table of this adapter (tested in errors_test.go). sarama has already
// retried retryable errors Producer.Retry.Max times when it reports one.
func classify(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil // context errors pass through as they are
	}
	for _, k := range kinds {
		for _, e := range k.errs {
			if errors.Is(err, e) {
				return k.kind
			}
		}
	}
	var ke sarama.KError
	var ce sarama.ConfigurationError
	var certErr *tls.CertificateVerificationError
	switch {
	case errors.As(err, &ke):
		return broker.ErrRejected // the broker answered, and said no
	case errors.As(err, &ce):
		if strings.Contains(string(ce), "MaxMessageBytes") {
			return broker.ErrTooLarge
		}
		return broker.ErrInvalid
	case errors.As(err, &certErr):
		return broker.ErrUnauthorized
	}
	return broker.ErrUnavailable // network errors, timeouts, EOF...
}

// wrap classifies err into a *broker.Error with op (one of the op*
// constants) and, when format is not empty, the detail it formats before
// the cause; context errors pass through as they are.
func wrap(op string, err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	cause := err
	if format != "" {
		cause = fmt.Errorf(format+": %w", append(args, err)...)
	}
	return adapter.Wrap(op, classify(err), cause)
}
