package rabbitmq_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/rabbitmq"
)

// A delivery that fails every attempt lands in the dead-letter queue with
// the exchange and routing key it was first published with (the dead
// letter itself travels through the default exchange to "<queue>.dlq"),
// and every attempt's handler sees that origin.
func TestDeadLetterKeepsOriginalRoutingKey(t *testing.T) {
	for _, typ := range []rabbitmq.QueueType{rabbitmq.Classic, rabbitmq.Quorum} {
		t.Run(string(typ), func(t *testing.T) {
			checkNoLeak(t)
			f := newFixture(t)
			b := f.open(t, rabbitAddr())
			var mu sync.Mutex
			var origins []broker.Origin
			f.subscribeType(t, rabbitAddr(), typ, func(_ context.Context, d broker.Delivery) error {
				mu.Lock()
				origins = append(origins, d.Origin)
				mu.Unlock()
				return errors.New("inventory service down")
			}, rabbitmq.WithMaxAttempts(3), rabbitmq.WithRetryBackoff(20*time.Millisecond, 40*time.Millisecond))
			m := brokertest.NewMessage("order.status.updated")
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			require.NoError(t, b.Publish(ctx, m))

			got, err := f.dlqReceiver(t)(ctx, []string{m.ID})
			require.NoError(t, err)
			dl := got[m.ID]
			assert.Equal(t, "3", dl.Headers[broker.HeaderDeadLetterAttempts], "failed every attempt")
			assert.Equal(t, "order.status.updated", dl.Headers[rabbitmq.HeaderOriginalRoutingKey])
			assert.Equal(t, f.exchange, dl.Headers[rabbitmq.HeaderOriginalExchange])
			mu.Lock()
			defer mu.Unlock()
			require.Len(t, origins, 3)
			for i, o := range origins {
				assert.Equal(t, "order.status.updated", o.RoutingKey, "attempt %d", i+1)
				assert.Equal(t, f.exchange, o.Exchange, "attempt %d", i+1)
				assert.Equal(t, f.sub(), o.Destination)
			}
		})
	}
}
