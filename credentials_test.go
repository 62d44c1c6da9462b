package domainevents_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/internal/rabbittest"
)

// Open and OpenSubscriber start with a password RabbitMQ refuses, and
// their Health says so: an error matching broker.ErrUnauthorized, without
// the password.
func TestOpenWithRefusedPassword(t *testing.T) {
	admin := requireRabbit(t)
	cfg := rabbitConfig(t, admin, rabbittest.Addr())
	cfg.Password = broker.NewSecret("hunter2-wrong")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pub, err := domainevents.Open(ctx, cfg, domainevents.WithLogger(quiet()))
	require.NoError(t, err, "the service starts")
	defer pub.Close(context.Background())
	sub, err := domainevents.OpenSubscriber(ctx, cfg, func(context.Context, broker.Delivery) error { return nil }, domainevents.WithLogger(quiet()))
	require.NoError(t, err, "the consumer starts")
	defer sub.Close(context.Background())
	for name, h := range map[string]broker.HealthChecker{"Open": pub, "OpenSubscriber": sub.(broker.HealthChecker)} {
		brokertest.WaitFor(t, time.Minute, name+": Health says unauthorized", func() bool {
			err := h.Health(ctx)
			return err != nil && errors.Is(err, broker.ErrUnauthorized)
		})
		assert.NotContains(t, h.Health(ctx).Error(), "hunter2", name)
	}
}
