package kafka_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/kafka"
)

// A lazily connecting publisher and subscriber whose SASL password the
// cluster refuses keep trying, say so in Health (an error matching
// broker.ErrUnauthorized with the cluster's reason, never the password),
// log it once rather than on every attempt, and connect once an operator
// gave the user the password the service has.
func TestLazyRefusedPasswordShowsInHealth(t *testing.T) {
	checkNoLeak(t)
	topic := uniqueTopic()
	const password = "s3cret-pass"
	c := newCluster(t, []string{topic, topic + ".dlq"}, kfake.EnableSASL(), kfake.Superuser(kafka.SASLPlain, "svc", password))
	c.needFake(t)
	// kfake only closes the connection on a wrong password; Kafka answers
	// SASL_AUTHENTICATION_FAILED (58) first. Answer as Kafka does, with the
	// password the "operator" set for the user.
	var accepted atomic.Value
	accepted.Store("an-older-password")
	var refused atomic.Int64
	c.fake.ControlKey(int16(kmsg.SASLAuthenticate), func(req kmsg.Request) (kmsg.Response, error, bool) {
		auth := req.(*kmsg.SASLAuthenticateRequest).SASLAuthBytes // PLAIN: \0user\0password
		if parts := bytes.Split(auth, []byte{0}); len(parts) == 3 && string(parts[2]) == accepted.Load().(string) {
			return nil, nil, false // kfake checks it as usual
		}
		c.fake.KeepControl()
		refused.Add(1)
		resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
		resp.ErrorCode = int16(sarama.ErrSASLAuthenticationFailed)
		msg := "Authentication failed during authentication due to invalid credentials with SASL mechanism PLAIN"
		resp.ErrorMessage = &msg
		return resp, nil, true
	})
	cfg := c.config(topic)
	cfg.Username, cfg.Password = "svc", broker.NewSecret(password)
	logs := &brokertest.LogCounter{}
	log := slog.New(logs)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	backoff := kafka.WithConnectBackoff(10*time.Millisecond, 50*time.Millisecond)
	b, err := kafka.New(ctx, cfg, kafka.WithSASL(kafka.SASLPlain), kafka.WithLazyConnect(), kafka.WithLogger(log), backoff)
	require.NoError(t, err, "a lazy publisher starts")
	defer b.Close(context.Background())
	s, err := kafka.NewSubscriber(ctx, cfg, "creds", func(context.Context, broker.Delivery) error { return nil },
		kafka.WithSASL(kafka.SASLPlain), kafka.WithLazyConnect(), kafka.WithLogger(log), backoff)
	require.NoError(t, err, "a lazy subscriber starts")
	defer s.Close(context.Background())

	for name, h := range map[string]broker.HealthChecker{"publisher": b, "subscriber": s} {
		waitFor(t, time.Minute, name+" health says unauthorized", func() bool {
			err := h.Health(ctx)
			return err != nil && errors.Is(err, broker.ErrUnauthorized)
		})
		err := h.Health(ctx)
		assert.Contains(t, err.Error(), "SASL", name)
		assert.NotContains(t, err.Error(), password, name)
	}
	waitFor(t, time.Minute, "attempts go on", func() bool { return refused.Load() >= 6 })
	for _, comp := range []string{"kafka publisher", "kafka subscriber"} {
		assert.Equal(t, 1, logs.Count(comp, slog.LevelError), "%s: the first refusal logged at Error, then at most every 30s:\n%s", comp, logs)
	}
	assert.NotContains(t, logs.String(), password)

	accepted.Store(password) // the operator fixed the user
	for name, h := range map[string]broker.HealthChecker{"publisher": b, "subscriber": s} {
		waitFor(t, time.Minute, name+" connected", func() bool { return h.Health(ctx) == nil })
	}
}
