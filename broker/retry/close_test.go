package retry_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/deadletter"
	"github.com/domainevents/domainevents/broker/retry"
)

// unreachable is a broker that cannot be reached: each publish waits for a
// connection until its ctx ends, then says it was not sent, as the
// adapters do during an outage.
type unreachable struct {
	attempts atomic.Int64
	closed   atomic.Bool
}

func (u *unreachable) Publish(ctx context.Context, m broker.Message) error {
	u.attempts.Add(1)
	<-ctx.Done()
	return &broker.Error{Op: "test: publish", Kind: broker.ErrUnavailable, Err: fmt.Errorf("message %s not sent: not connected: %w", m.ID, ctx.Err())}
}

func (u *unreachable) Close(context.Context) error { u.closed.Store(true); return nil }

// TestCloseDeadLettersEverythingWaiting: 100 publishes retrying against an
// unreachable broker, some waiting in an attempt, some between attempts;
// Close with a 2s ctx returns within it, every caller gets
// ErrDeadLettered, and the spool holds all 100 ids. With short attempts
// they end by themselves; with long ones Close cuts them short.
func TestCloseDeadLettersEverythingWaiting(t *testing.T) {
	for _, attempt := range []time.Duration{300 * time.Millisecond, 10 * time.Second} {
		t.Run("attempts of "+attempt.String(), func(t *testing.T) { testCloseDeadLetters(t, attempt) })
	}
}

func testCloseDeadLetters(t *testing.T, attempt time.Duration) {
	brokertest.CheckNoLeak(t)
	spool, err := deadletter.OpenSpool(t.TempDir())
	require.NoError(t, err)
	defer spool.Close()
	next := &unreachable{}
	r, err := retry.New(next, retry.WithDeadLetter(spool), retry.WithAttemptTimeout(attempt),
		retry.WithBackoff(100*time.Millisecond, time.Second), retry.WithLogger(brokertest.Logger(t)))
	require.NoError(t, err)

	const n = 100
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		m := brokertest.NewMessage("order.created")
		ids[i] = m.ID
		wg.Go(func() { errs[i] = r.Publish(context.Background(), m) })
	}
	brokertest.WaitFor(t, 30*time.Second, "every publish trying", func() bool { return next.attempts.Load() >= n })

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	require.NoError(t, r.Close(ctx))
	took := time.Since(start)
	wg.Wait()
	assert.Less(t, took, 2*time.Second, "Close returns within its ctx")
	assert.True(t, next.closed.Load(), "Close closes the wrapped broker")

	deadLettered := 0
	for _, err := range errs {
		if errors.Is(err, broker.ErrDeadLettered) {
			deadLettered++
		} else {
			t.Errorf("a caller got %v, want ErrDeadLettered", err)
		}
	}
	have := map[string]bool{}
	_, err = spool.Scan(func(d broker.DeadLetter) error { have[d.Message.ID] = true; return nil })
	require.NoError(t, err)
	missing := 0
	for _, id := range ids {
		if !have[id] {
			missing++
		}
	}
	t.Logf("Close took %v; %d of %d callers got ErrDeadLettered; spool holds %d, %d missing", took, deadLettered, n, len(have), missing)
	assert.Equal(t, n, deadLettered)
	assert.Zero(t, missing)
	assert.ErrorIs(t, r.Publish(context.Background(), brokertest.NewMessage("order.created")), broker.ErrClosed)
	assert.NoError(t, r.Close(context.Background()), "second Close")
}

// TestCloseLetsHealthyAttemptsFinish: at Close, a publish whose attempt is
// about to succeed is not cut short: nothing is dead-lettered on a
// healthy shutdown.
func TestCloseLetsHealthyAttemptsFinish(t *testing.T) {
	release, started := make(chan struct{}), make(chan struct{})
	rec := &brokertest.Recorder{Fail: func(m broker.Message) error {
		if m.Name == "order.created" {
			close(started)
			<-release // the attempt in flight at Close
		}
		return nil // the probes below
	}}
	sink := &memSink{name: "spool"}
	r, err := retry.New(rec, retry.WithDeadLetter(sink))
	require.NoError(t, err)
	res := make(chan error, 1)
	go func() { res <- r.Publish(context.Background(), brokertest.NewMessage("order.created")) }()
	<-started
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		closed <- r.Close(ctx)
	}()
	brokertest.WaitFor(t, 5*time.Second, "Close to begin", func() bool {
		return errors.Is(r.Publish(context.Background(), brokertest.NewMessage("probe")), broker.ErrClosed)
	})
	close(release)
	require.NoError(t, <-closed)
	require.NoError(t, <-res)
	assert.Equal(t, "order.created", rec.Messages()[len(rec.Messages())-1].Name, "published, not cut short")
	assert.Empty(t, sink.entries)
}

// TestWorstCaseIsMaxElapsed: against a broker that never answers, Publish
// gives up after MaxElapsed (attempt timeouts included), not after
// MaxElapsed plus an attempt timeout. Measured, with a generous bound for a
// loaded machine; the note quotes the numbers.
func TestWorstCaseIsMaxElapsed(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []retry.Option
		want time.Duration
	}{
		{"ForRequests", []retry.Option{retry.ForRequests()}, 2 * time.Second},
		{"MaxElapsed 1s, attempts of 400ms", []retry.Option{retry.WithMaxElapsed(time.Second), retry.WithAttemptTimeout(400 * time.Millisecond),
			retry.WithMaxAttempts(100), retry.WithBackoff(10*time.Millisecond, 50*time.Millisecond)}, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spool, err := deadletter.OpenSpool(t.TempDir())
			require.NoError(t, err)
			defer spool.Close()
			r, err := retry.New(&unreachable{}, append(tc.opts, retry.WithDeadLetter(spool), retry.WithLogger(brokertest.Logger(t)))...)
			require.NoError(t, err)
			start := time.Now()
			err = r.Publish(context.Background(), brokertest.NewMessage("order.created"))
			took := time.Since(start)
			require.ErrorIs(t, err, broker.ErrDeadLettered)
			t.Logf("worst case %v against a documented %v (%+.1f%%)", took, tc.want, 100*(took.Seconds()/tc.want.Seconds()-1))
			assert.GreaterOrEqual(t, took, tc.want*9/10)
			assert.Less(t, took, tc.want*3/2)
		})
	}
}
