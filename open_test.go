package domainevents_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/deadletter"
	"github.com/domainevents/domainevents/broker/retry"
	"github.com/domainevents/domainevents/events"
	"github.com/domainevents/domainevents/internal/rabbittest"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func requireRabbit(t *testing.T) *amqp.Connection { return rabbittest.RequireRabbit(t) }

// rabbitConfig is a configuration for a fresh exchange and queue, cleaned
// up after the test, reaching RabbitMQ at addr.
func rabbitConfig(t *testing.T, admin *amqp.Connection, addr string) broker.Config {
	exchange := "det.open." + strconv.FormatInt(time.Now().UnixNano(), 36)
	t.Cleanup(func() {
		ch, err := admin.Channel()
		if err != nil {
			return
		}
		defer ch.Close()
		for _, q := range []string{exchange + ".q", exchange + ".dlq"} {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		_ = ch.ExchangeDelete(exchange, false, false)
		_ = ch.ExchangeDelete(exchange+".dlx", false, false)
	})
	cfg := broker.DefaultConfig()
	cfg.Enabled = true
	cfg.Addresses = []string{addr}
	cfg.Exchange = exchange
	cfg.Queue = exchange + ".q"
	cfg.SpoolDir = t.TempDir()
	return cfg
}

// freeAddr is a loopback address nothing listens on (yet).
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// forward starts relaying addr to RabbitMQ: the broker "comes up" there.
func forward(t *testing.T, addr string) {
	var ln net.Listener
	require.Eventually(t, func() bool {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err == nil
	}, 5*time.Second, 20*time.Millisecond)
	var wg sync.WaitGroup
	var conns sync.Map
	t.Cleanup(func() {
		_ = ln.Close()
		conns.Range(func(k, _ any) bool { _ = k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", "127.0.0.1:5672")
			if err != nil {
				_ = c.Close()
				continue
			}
			conns.Store(c, true)
			conns.Store(s, true)
			wg.Go(func() { _, _ = io.Copy(s, c); _ = s.Close() })
			wg.Go(func() { _, _ = io.Copy(c, s); _ = c.Close() })
		}
	})
}

func order(i int) events.OrderStatusUpdated {
	return events.OrderStatusUpdated{OrderID: fmt.Sprintf("o-%04d", i), UserID: "u", OldStatus: events.StatusCreated, NewStatus: events.StatusInProgress}
}

// drainIDs reads message ids from queue until want are all seen or the
// deadline passes.
func drainIDs(t *testing.T, admin *amqp.Connection, queue string, want int, within time.Duration) map[string]int {
	t.Helper()
	ch, err := admin.Channel()
	require.NoError(t, err)
	defer ch.Close()
	got := map[string]int{}
	deadline := time.Now().Add(within)
	for len(got) < want && time.Now().Before(deadline) {
		d, ok, err := ch.Get(queue, true)
		require.NoError(t, err)
		if !ok {
			time.Sleep(20 * time.Millisecond) // polling an empty queue, bounded by the deadline
			continue
		}
		got[d.MessageId]++
	}
	return got
}

func TestOpenDisabled(t *testing.T) {
	rec := &brokertest.Recorder{}
	pub, err := domainevents.Open(context.Background(), broker.DefaultConfig(), domainevents.WithDisabledBroker(rec), domainevents.WithLogger(quiet()))
	require.NoError(t, err)
	require.NoError(t, pub.Forward(context.Background(), order(1)))
	require.Len(t, rec.Messages(), 1)
	require.NoError(t, pub.Health(context.Background()))
	require.NoError(t, pub.Close(context.Background()))
	require.NoError(t, pub.Close(context.Background()), "second Close")
	assert.ErrorIs(t, pub.Health(context.Background()), broker.ErrClosed)
}

func TestOpenBadInput(t *testing.T) {
	cfg := broker.DefaultConfig()
	cfg.Type = "redis"
	_, err := domainevents.Open(context.Background(), cfg)
	assert.ErrorIs(t, err, broker.ErrInvalid)
	assert.ErrorContains(t, err, "MESSAGE_BROKER_TYPE")
	_, err = domainevents.Open(context.Background(), broker.DefaultConfig(), domainevents.WithLogger(nil))
	assert.ErrorIs(t, err, broker.ErrInvalid)
	assert.ErrorContains(t, err, "WithLogger")
	_, err = domainevents.OpenSubscriber(context.Background(), broker.DefaultConfig(), func(context.Context, broker.Delivery) error { return nil })
	assert.ErrorIs(t, err, broker.ErrInvalid, "disabled: nothing to consume from")
	cfg = broker.DefaultConfig()
	cfg.Enabled = true
	_, err = domainevents.OpenSubscriber(context.Background(), cfg, func(context.Context, broker.Delivery) error { return nil })
	assert.ErrorContains(t, err, "MESSAGE_BROKER_QUEUE")
}

// TestStartWhileBrokerDown: a service opened while the broker is down
// accepts 1,000 events (each spooled after its retry budget); the broker
// comes up; without a restart, all 1,000 end confirmed in the queue.
func TestStartWhileBrokerDown(t *testing.T) {
	brokertest.CheckNoLeak(t, "go-metrics.(*meterArbiter)")
	admin := requireRabbit(t)
	addr := freeAddr(t)
	cfg := rabbitConfig(t, admin, addr)
	pub, err := domainevents.Open(context.Background(), cfg, domainevents.WithLogger(quiet()),
		domainevents.WithReplayInterval(100*time.Millisecond),
		domainevents.WithRetry(retry.WithMaxElapsed(200*time.Millisecond), retry.WithLogger(quiet())))
	require.NoError(t, err, "Open does not wait for the broker")
	defer pub.Close(context.Background())
	require.ErrorIs(t, pub.Health(context.Background()), broker.ErrUnavailable)

	const n = 1000
	var wg sync.WaitGroup
	var safe, published atomic.Int64
	for w := range 50 {
		wg.Go(func() {
			for i := w; i < n; i += 50 {
				err := pub.Forward(context.Background(), order(i))
				if err == nil {
					published.Add(1)
				}
				if broker.Safe(err) {
					safe.Add(1)
				} else {
					t.Errorf("event %d neither published nor spooled: %v", i, err)
				}
			}
		})
	}
	wg.Wait()
	st := pub.Status(context.Background())
	t.Logf("broker down: %d of %d events safe (%d published), spool holds %d", safe.Load(), n, published.Load(), st.SpoolEntries)
	require.Equal(t, int64(n), safe.Load())
	require.Equal(t, int64(n), st.SpoolEntries)

	forward(t, addr) // the broker comes up
	brokertest.WaitFor(t, 30*time.Second, "the publisher to connect", func() bool { return pub.Health(context.Background()) == nil })
	got := drainIDs(t, admin, cfg.Queue, n, 60*time.Second)
	dups := 0
	for _, c := range got {
		dups += c - 1
	}
	t.Logf("broker up: %d distinct events in the queue (%d duplicates), spool holds %d", len(got), dups, pub.Status(context.Background()).SpoolEntries)
	assert.Len(t, got, n, "0 lost")
	require.Eventually(t, func() bool { return pub.Status(context.Background()).SpoolEntries == 0 }, 10*time.Second, 20*time.Millisecond)
	assert.NoError(t, pub.Health(context.Background()))
}

// TestCloseSpoolsWhatRetries: 100 events retrying against an unreachable
// broker; Close with a 2s ctx returns within it, every caller got
// ErrDeadLettered, the spool holds all 100 ids.
func TestCloseSpoolsWhatRetries(t *testing.T) {
	admin := requireRabbit(t)
	cfg := rabbitConfig(t, admin, freeAddr(t))
	var retries atomic.Int64
	obs := broker.ObserverFunc(func(_ context.Context, o broker.Observation) {
		if o.Kind == broker.ObservedRetry {
			retries.Add(1)
		}
	})
	pub, err := domainevents.Open(context.Background(), cfg, domainevents.WithLogger(quiet()), domainevents.WithReplayInterval(0),
		domainevents.WithObserver(obs), domainevents.WithRetry(retry.WithMaxElapsed(time.Minute),
			retry.WithAttemptTimeout(500*time.Millisecond), retry.WithLogger(quiet())))
	require.NoError(t, err)
	const n = 100
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = pub.Forward(context.Background(), order(i)) })
	}
	brokertest.WaitFor(t, 30*time.Second, "every event retrying", func() bool { return retries.Load() >= n })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	require.NoError(t, pub.Close(ctx))
	took := time.Since(start)
	wg.Wait()
	dl := 0
	for _, err := range errs {
		if errors.Is(err, broker.ErrDeadLettered) {
			dl++
		}
	}
	have := map[string]bool{}
	_, err = deadletter.Inspect(cfg.SpoolDir, func(d broker.DeadLetter) error { have[d.Message.ID] = true; return nil })
	require.NoError(t, err)
	t.Logf("Close took %v; %d of %d callers got ErrDeadLettered; %d in the spool", took, dl, n, len(have))
	assert.Less(t, took, 2*time.Second)
	assert.Equal(t, n, dl)
	assert.Len(t, have, n)
}

// TestTwoProcessesOneSpool: a child process opens the service and keeps
// publishing into its spool (the broker is unreachable); this process is
// refused the spool while the child runs, naming its pid; after the
// child's SIGKILL every event it reported safe is in the spool.
func TestTwoProcessesOneSpool(t *testing.T) {
	if dir := os.Getenv("DOMAINEVENTS_SPOOL_CHILD"); dir != "" {
		cfg := broker.DefaultConfig()
		cfg.Enabled, cfg.Addresses, cfg.SpoolDir = true, []string{os.Getenv("DOMAINEVENTS_DEAD_ADDR")}, dir
		pub, err := domainevents.Open(context.Background(), cfg, domainevents.WithLogger(quiet()), domainevents.WithReplayInterval(0),
			domainevents.WithRetry(retry.WithMaxElapsed(20*time.Millisecond), retry.WithLogger(quiet())))
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		w := bufio.NewWriter(os.Stdout)
		for i := 0; ; i++ {
			e := order(i)
			if err := pub.Forward(context.Background(), e); !broker.Safe(err) {
				fmt.Println("ERR", err)
				os.Exit(1)
			}
			fmt.Fprintln(w, e.OrderID)
			w.Flush()
		}
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestTwoProcessesOneSpool$")
	cmd.Env = append(os.Environ(), "DOMAINEVENTS_SPOOL_CHILD="+dir, "DOMAINEVENTS_DEAD_ADDR="+freeAddr(t))
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(out)
	var safe []string
	refused := 0
	for sc.Scan() && len(safe) < 200 {
		line := sc.Text()
		require.False(t, strings.HasPrefix(line, "ERR"), line)
		safe = append(safe, line)
		if len(safe)%50 == 0 {
			cfg := broker.DefaultConfig()
			cfg.Enabled, cfg.Addresses, cfg.SpoolDir = true, []string{"127.0.0.1:1"}, dir
			_, err := domainevents.Open(context.Background(), cfg, domainevents.WithLogger(quiet()))
			require.ErrorIs(t, err, deadletter.ErrLocked)
			assert.Contains(t, err.Error(), "process "+strconv.Itoa(cmd.Process.Pid))
			refused++
		}
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	for sc.Scan() {
		safe = append(safe, sc.Text())
	}
	_ = cmd.Wait()
	have := map[string]bool{}
	_, err = deadletter.Inspect(dir, func(d broker.DeadLetter) error { have[d.Message.Key] = true; return nil })
	require.NoError(t, err)
	lost := 0
	for _, id := range safe {
		if !have[id] {
			lost++
		}
	}
	t.Logf("child reported %d events safe; this process was refused %d times; after SIGKILL the spool holds %d; lost %d", len(safe), refused, len(have), lost)
	assert.Equal(t, 4, refused)
	assert.Zero(t, lost)
}

// TestPublishMiddlewareSeesEveryAttempt: the middleware wraps the adapter
// inside the retry layer, and Describe reaches the adapter through it all.
func TestPublishMiddlewareSeesEveryAttempt(t *testing.T) {
	rec := &brokertest.Recorder{}
	var seen atomic.Int64
	mw := func(next broker.Broker) broker.Broker {
		return countingBroker{Broker: next, n: &seen}
	}
	pub, err := domainevents.Open(context.Background(), broker.DefaultConfig(), domainevents.WithDisabledBroker(rec),
		domainevents.WithPublishMiddleware(mw), domainevents.WithLogger(quiet()))
	require.NoError(t, err)
	defer pub.Close(context.Background())
	require.NoError(t, pub.Forward(context.Background(), order(1)))
	assert.Equal(t, int64(1), seen.Load())
	_, err = domainevents.Open(context.Background(), broker.DefaultConfig(), domainevents.WithPublishMiddleware(nil))
	assert.ErrorIs(t, err, broker.ErrInvalid)
}

type countingBroker struct {
	broker.Broker
	n *atomic.Int64
}

func (c countingBroker) Publish(ctx context.Context, m broker.Message) error {
	c.n.Add(1)
	return c.Broker.Publish(ctx, m)
}

type hookKey struct{}

// The message hook runs with the caller's ctx on Forward (synchronous or
// asynchronous) and Publish; what it writes reaches the broker, and the
// caller's headers stay as they were.
func TestMessageHook(t *testing.T) {
	hook := func(ctx context.Context, m *broker.Message) {
		if v, ok := ctx.Value(hookKey{}).(string); ok {
			if m.Headers == nil {
				m.Headers = map[string]string{}
			}
			m.Headers["traceparent"] = v
		}
	}
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	ctx := context.WithValue(context.Background(), hookKey{}, tp)
	for _, tc := range []struct {
		name string
		opts []domainevents.PublisherOption
	}{
		{"synchronous", nil},
		{"asynchronous", []domainevents.PublisherOption{domainevents.WithAsync(2, 8)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &brokertest.Recorder{}
			pub, err := domainevents.Open(context.Background(), broker.DefaultConfig(), append(tc.opts, domainevents.WithDisabledBroker(rec),
				domainevents.WithMessageHook(hook), domainevents.WithLogger(quiet()))...)
			require.NoError(t, err)
			require.NoError(t, pub.Forward(ctx, order(1)))
			own := map[string]string{"x-tenant": "acme"}
			require.NoError(t, pub.Publish(ctx, broker.Message{ID: "e-2", Name: "order.created", Key: "o-2", Headers: own}))
			require.NoError(t, pub.Close(context.Background()))
			msgs := rec.Messages()
			require.Len(t, msgs, 2)
			for _, m := range msgs {
				assert.Equal(t, tp, m.Headers["traceparent"], m.ID)
			}
			assert.Equal(t, map[string]string{"x-tenant": "acme"}, own, "the caller's headers are not changed")
		})
	}
	_, err := domainevents.Open(context.Background(), broker.DefaultConfig(), domainevents.WithMessageHook(nil))
	assert.ErrorIs(t, err, broker.ErrInvalid)
	assert.ErrorContains(t, err, "WithMessageHook: fn is nil")
}
