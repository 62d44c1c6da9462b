package rabbitmq_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/rabbitmq"
)

// A lazily connecting publisher and subscriber whose password or virtual
// host RabbitMQ refuses keep trying, say so in Health (an error matching
// broker.ErrUnauthorized with RabbitMQ's reason, never the password), and
// log it once, not on every attempt.
func TestLazyRefusedCredentialsShowInHealth(t *testing.T) {
	for _, c := range []struct {
		name   string
		mutate func(*broker.Config)
		reason string
	}{
		{"wrong password", func(c *broker.Config) { c.Password = broker.NewSecret("hunter2-wrong") }, "password"},
		{"missing vhost", func(c *broker.Config) { c.VHost = "det-no-such-vhost-" + uuid.NewString()[:6] }, "virtual host"},
	} {
		t.Run(c.name, func(t *testing.T) {
			checkNoLeak(t)
			f := newFixture(t)
			p := newProxy(t)
			cfg := f.config(p.Addr())
			c.mutate(&cfg)
			logs := &brokertest.LogCounter{}
			log := slog.New(logs)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			backoff := rabbitmq.WithReconnectBackoff(10*time.Millisecond, 50*time.Millisecond)
			b, err := rabbitmq.New(ctx, cfg, rabbitmq.WithLazyConnect(), rabbitmq.WithLogger(log), backoff)
			require.NoError(t, err, "a lazy publisher starts")
			defer b.Close(context.Background())
			s, err := rabbitmq.NewSubscriber(ctx, cfg, rabbitmq.Queue{Name: f.sub()}, func(context.Context, broker.Delivery) error { return nil },
				rabbitmq.WithLazyConnect(), rabbitmq.WithLogger(log), backoff)
			require.NoError(t, err, "a lazy subscriber starts")
			defer s.Close(context.Background())

			for name, h := range map[string]broker.HealthChecker{"publisher": b, "subscriber": s} {
				waitFor(t, time.Minute, name+" health says unauthorized", func() bool {
					return errorIs(h.Health(ctx), broker.ErrUnauthorized)
				})
				err := h.Health(ctx)
				assert.NotErrorIs(t, err, broker.ErrUnavailable, "%s: one category", name)
				assert.Contains(t, err.Error(), c.reason, name)
				assert.NotContains(t, err.Error(), "hunter2", name)
			}
			// Three connections (publisher, subscriber, the subscriber's
			// retries) keep trying: two attempts each or more (RabbitMQ answers
			// a refused login after about 3s).
			waitFor(t, time.Minute, "attempts go on", func() bool { return p.Accepted() >= 6 })
			for _, comp := range []string{"rabbitmq publisher", "rabbitmq subscriber"} {
				assert.Equal(t, 1, logs.Count(comp, slog.LevelError), "%s: the first refusal logged at Error, then at most every 30s:\n%s", comp, logs)
			}
			assert.Equal(t, 1, logs.Most(slog.LevelError), "no connection logs more than once:\n%s", logs)
			assert.NotContains(t, logs.String(), "hunter2")
		})
	}
}

func errorIs(err, target error) bool { return err != nil && errors.Is(err, target) }
