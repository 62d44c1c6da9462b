package rabbitmq

import (
	"context"
	"errors"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
)

// TestFakeLazyCredentialsRecover: a lazy publisher refused its login or
// its virtual host reports broker.ErrUnauthorized in Health while it keeps
// trying, and connects once an operator fixed the user.
func TestFakeLazyCredentialsRecover(t *testing.T) {
	for _, c := range []struct {
		name    string
		refusal *amqp.Error
		mention string
	}{
		{"login", &amqp.Error{Code: amqp.AccessRefused, Reason: "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN", Server: true}, "ACCESS_REFUSED"},
		{"vhost", &amqp.Error{Code: amqp.NotAllowed, Reason: "NOT_ALLOWED - vhost orders not found", Server: true}, "virtual host"},
	} {
		t.Run(c.name, func(t *testing.T) {
			brokertest.CheckNoLeak(t)
			srv := newFakeServer()
			srv.failDials(1000, c.refusal)
			b, err := New(context.Background(), fakeConfig(), withDialer(srv.dial), WithLogger(quietLogger()),
				WithReconnectBackoff(time.Millisecond, 5*time.Millisecond), WithLazyConnect())
			require.NoError(t, err)
			defer b.Close(context.Background())
			brokertest.WaitFor(t, time.Minute, "refused a few times", func() bool {
				err := b.Health(context.Background())
				return len(srv.addrs()) >= 3 && err != nil && errors.Is(err, broker.ErrUnauthorized)
			})
			err = b.Health(context.Background())
			assert.Contains(t, err.Error(), c.mention)
			assert.NotErrorIs(t, err, broker.ErrUnavailable)

			srv.allowDials() // the operator fixed the user
			conn := srv.nextConn(t)
			conn.nextChannel(t)
			brokertest.WaitFor(t, time.Minute, "connected", func() bool { return b.Health(context.Background()) == nil })
		})
	}
}
