package kafka_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/kafka"
)

// Options per role: a connection Option goes to both constructors; a
// publisher option does not implement SubscriberOption and a subscriber
// option does not implement PublisherOption, so passing one to the other
// constructor does not compile:
//
//	kafka.NewSubscriber(ctx, cfg, "g", h, kafka.WithTopicPerEvent())
//	// cannot use kafka.WithTopicPerEvent() (value of interface type
//	// kafka.PublisherOption) as kafka.SubscriberOption value
func TestOptionRoles(t *testing.T) {
	conn := map[string]kafka.Option{
		"WithLogger": kafka.WithLogger(discardLogger()), "WithObserver": kafka.WithObserver(broker.ObserverFunc(func(context.Context, broker.Observation) {})),
		"WithSaramaConfig": kafka.WithSaramaConfig(sarama.NewConfig()), "WithTLS": kafka.WithTLS(nil),
		"WithSASL": kafka.WithSASL(kafka.SASLPlain), "WithConnectBackoff": kafka.WithConnectBackoff(time.Second, time.Second),
		"WithLazyConnect": kafka.WithLazyConnect(),
	}
	for name, o := range conn {
		var p kafka.PublisherOption = o
		var s kafka.SubscriberOption = o
		assert.NotNil(t, p, name)
		assert.NotNil(t, s, name)
	}
	for name, o := range map[string]kafka.PublisherOption{
		"WithFNVPartitioner": kafka.WithFNVPartitioner(), "WithTopicPerEvent": kafka.WithTopicPerEvent(),
	} {
		_, ok := o.(kafka.SubscriberOption)
		assert.False(t, ok, "%s must not be a SubscriberOption", name)
	}
	for name, o := range map[string]kafka.SubscriberOption{
		"WithMaxAttempts": kafka.WithMaxAttempts(3), "WithRetryBackoff": kafka.WithRetryBackoff(time.Second, time.Second),
		"WithStartAtNewest": kafka.WithStartAtNewest(), "WithConcurrency": kafka.WithConcurrency(16),
	} {
		_, ok := o.(kafka.PublisherOption)
		assert.False(t, ok, "%s must not be a PublisherOption", name)
	}
}

// unreachable is a config whose cluster refuses connections at once.
func unreachable() broker.Config {
	cfg := broker.DefaultConfig()
	cfg.Type = broker.Kafka
	cfg.Addresses = []string{"127.0.0.1:1"}
	return cfg
}

// A bad option value is refused before connecting, naming the option,
// with Op "kafka: options".
func TestBadOptions(t *testing.T) {
	ctx := context.Background()
	ok := func(context.Context, broker.Delivery) error { return nil }
	for _, tc := range []struct {
		name string
		err  func() error
	}{
		{"WithLogger", func() error { _, err := kafka.New(ctx, unreachable(), kafka.WithLogger(nil)); return err }},
		{"WithObserver", func() error { _, err := kafka.New(ctx, unreachable(), kafka.WithObserver(nil)); return err }},
		{"WithSaramaConfig", func() error { _, err := kafka.New(ctx, unreachable(), kafka.WithSaramaConfig(nil)); return err }},
		{"WithSASL", func() error {
			_, err := kafka.NewDeadLetterSink(ctx, unreachable(), kafka.WithSASL("GSSAPI"))
			return err
		}},
		{"WithConnectBackoff", func() error {
			_, err := kafka.New(ctx, unreachable(), kafka.WithConnectBackoff(2*time.Second, time.Second))
			return err
		}},
		{"WithMaxAttempts", func() error {
			_, err := kafka.NewSubscriber(ctx, unreachable(), "g", ok, kafka.WithMaxAttempts(0))
			return err
		}},
		{"WithRetryBackoff", func() error {
			_, err := kafka.NewSubscriber(ctx, unreachable(), "g", ok, kafka.WithRetryBackoff(0, time.Second))
			return err
		}},
		{"WithConcurrency", func() error {
			_, err := kafka.NewSubscriber(ctx, unreachable(), "g", ok, kafka.WithConcurrency(0))
			return err
		}},
		{"WithConcurrency", func() error {
			_, err := kafka.NewSubscriber(ctx, unreachable(), "g", ok, kafka.WithConcurrency(5000))
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.err()
			require.Error(t, err)
			assert.ErrorIs(t, err, broker.ErrInvalid)
			assert.False(t, broker.IsRetryable(err))
			assert.Contains(t, err.Error(), tc.name)
			assertOp(t, err, "kafka: options")
		})
	}
}

func assertOp(t *testing.T, err error, op string) {
	t.Helper()
	var be *broker.Error
	require.True(t, errors.As(err, &be), "%v is a *broker.Error", err)
	assert.Equal(t, op, be.Op)
	assert.Equal(t, 1, strings.Count(err.Error(), "kafka: "), "one Op, details in the text: %v", err)
}

// Each operation's errors carry the one Op scheme "kafka: <operation>",
// with what it concerned in the text.
func TestOpScheme(t *testing.T) {
	ctx := context.Background()
	ok := func(context.Context, broker.Delivery) error { return nil }

	_, err := kafka.NewSubscriber(ctx, unreachable(), "", ok)
	assertOp(t, err, "kafka: subscribe")
	assert.Contains(t, err.Error(), "groupID")
	_, err = kafka.NewSubscriber(ctx, unreachable(), "g", nil)
	assertOp(t, err, "kafka: subscribe")
	assert.Contains(t, err.Error(), "handler")

	sc := sarama.NewConfig() // acks=1: not durable
	_, err = kafka.New(ctx, unreachable(), kafka.WithSaramaConfig(sc))
	assertOp(t, err, "kafka: config")
	assert.Contains(t, err.Error(), "RequiredAcks")

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err = kafka.New(short, unreachable(), kafka.WithLogger(discardLogger()), kafka.WithConnectBackoff(10*time.Millisecond, 50*time.Millisecond))
	assertOp(t, err, "kafka: connect")
	assert.Contains(t, err.Error(), "127.0.0.1:1")

	topic := uniqueTopic()
	c := newCluster(t, []string{topic})
	_, err = kafka.New(ctx, c.config("no.such.topic"), kafka.WithLogger(discardLogger()))
	assertOp(t, err, "kafka: connect")
	assert.Contains(t, err.Error(), `"no.such.topic"`)

	b := c.open(t, topic, kafka.WithTopicPerEvent())
	err = b.Publish(ctx, broker.Message{ID: "1", Name: "no.such.event"})
	assertOp(t, err, "kafka: publish")
	assert.Contains(t, err.Error(), `"no.such.event"`)
	require.NoError(t, b.Close(ctx))
	assertOp(t, b.Publish(ctx, broker.Message{ID: "1", Name: "order.created"}), "kafka: publish")
}

// DefaultMaxRecordSize is what it says: sarama's default limit.
func TestDefaultMaxRecordSize(t *testing.T) {
	assert.Equal(t, sarama.NewConfig().Producer.MaxMessageBytes, kafka.DefaultMaxRecordSize)
}
