package domaineventsotel_test

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/trace"

	"github.com/domainevents/domainevents"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/retry"
	"github.com/domainevents/domainevents/extra/domaineventsotel"
)

// An event published while the broker is down is spooled and replayed
// later, from the replay loop's ctx: with the message hook its trace
// context was stored with it, so the replayed send and the consumer are
// still in the request's trace. The metrics count the dead letters and
// show the spool's depth.
func TestSpoolReplayKeepsTheTrace(t *testing.T) {
	brokertest.CheckNoLeak(t)
	admin, rabbit := requireRabbit(t)
	tl := newTel(t)
	down := freeAddr(t)
	cfg := rabbitConfig(t, admin, down)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	pub, err := domainevents.Open(ctx, cfg, domainevents.WithLogger(quiet()),
		domainevents.WithReplayInterval(50*time.Millisecond),
		domainevents.WithRetry(retry.WithMaxElapsed(300*time.Millisecond), retry.WithLogger(quiet())),
		domainevents.WithMessageHook(domaineventsotel.MessageHook(tl.opts()...)),
		domainevents.WithPublishMiddleware(domaineventsotel.Middleware(tl.opts()...)),
		domainevents.WithObserver(domaineventsotel.NewObserver(tl.opts()...)))
	require.NoError(t, err)
	defer pub.Close(context.Background())

	rctx, req := tl.tp.Tracer("test").Start(ctx, "POST /orders")
	for _, e := range orderEvents() {
		err := pub.Forward(rctx, e)
		require.ErrorIs(t, err, broker.ErrDeadLettered, "the broker is down: spooled")
	}
	req.End()
	require.Equal(t, int64(3), pub.Status(ctx).SpoolEntries)

	relay(t, down, rabbit) // the broker comes up; the spool is replayed
	brokertest.WaitFor(t, 30*time.Second, "the spool to empty", func() bool { return pub.Status(ctx).SpoolEntries == 0 })
	require.NoError(t, pub.Close(ctx))

	subCfg := cfg
	subCfg.Addresses = []string{rabbit}
	procs := consume(t, tl, subCfg, 3)

	sends := map[trace.SpanID]bool{}
	failed := 0
	for _, s := range tl.spans.Ended() {
		if s.SpanKind() != trace.SpanKindProducer {
			continue
		}
		assert.Equal(t, req.SpanContext().TraceID(), s.SpanContext().TraceID(), "every attempt is in the request's trace")
		assert.Equal(t, req.SpanContext().SpanID(), s.Parent().SpanID())
		if attrs(s.Attributes())["error.type"] != nil {
			failed++
			continue
		}
		assert.True(t, s.Parent().IsRemote(), "the replay's parent is the context stored with the event")
		require.Len(t, s.Links(), 1)
		assert.Equal(t, req.SpanContext().SpanID(), s.Links()[0].SpanContext.SpanID())
		sends[s.SpanContext().SpanID()] = true
	}
	assert.Positive(t, failed, "the attempts while the broker was down")
	assert.Len(t, sends, 3, "one successful send per event: the replay")
	for _, p := range procs {
		assert.Equal(t, req.SpanContext().TraceID(), p.SpanContext().TraceID(), "the consumer is in the request's trace")
		assert.True(t, sends[p.Parent().SpanID()], "its parent is the replay's send span")
	}

	ms := tl.metrics(t)
	var deadLetters int64
	for _, dp := range ms["domainevents.dead_letters"].Data.(metricdata.Sum[int64]).DataPoints {
		a := setAttrs(dp.Attributes)
		assert.Equal(t, "retry", a["domainevents.component"])
		assert.Equal(t, "unavailable", a["error.type"])
		deadLetters += dp.Value
	}
	assert.Equal(t, int64(3), deadLetters)
	depth := ms["domainevents.spool.depth"].Data.(metricdata.Gauge[int64]).DataPoints
	require.Len(t, depth, 1)
	assert.Equal(t, int64(0), depth[0].Value, "the spool's depth, last reported: empty")
}

// freeAddr is a loopback address nothing listens on (yet).
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// relay starts relaying addr to target until the test ends: a broker that
// comes up at addr.
func relay(t *testing.T, addr, target string) {
	t.Helper()
	var ln net.Listener
	brokertest.WaitFor(t, 5*time.Second, "listening on "+addr, func() bool {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err == nil
	})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, u)
			mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(u, c); _ = u.Close() })
			wg.Go(func() { _, _ = io.Copy(c, u); _ = c.Close() })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// An asynchronous forwarder publishes from a worker, whose ctx is not the
// request's: the message hook keeps the send span in the request's trace.
func TestAsyncForwardKeepsTheTrace(t *testing.T) {
	tl := newTel(t)
	next := &fakeBroker{dest: broker.Destination{System: "kafka", Name: "orders.events"}}
	pub, err := domainevents.Open(context.Background(), broker.DefaultConfig(), domainevents.WithDisabledBroker(next),
		domainevents.WithAsync(2, 16), domainevents.WithLogger(quiet()),
		domainevents.WithMessageHook(domaineventsotel.MessageHook(tl.opts()...)),
		domainevents.WithPublishMiddleware(domaineventsotel.Middleware(tl.opts()...)))
	require.NoError(t, err)
	ctx, req := tl.tp.Tracer("test").Start(context.Background(), "POST /orders")
	for _, e := range orderEvents() {
		require.NoError(t, pub.Forward(ctx, e))
	}
	req.End()
	require.NoError(t, pub.Close(context.Background()))
	sends := tl.ended("send orders.events")
	require.Len(t, sends, 3)
	for _, s := range sends {
		assert.Equal(t, req.SpanContext().TraceID(), s.SpanContext().TraceID())
		assert.Equal(t, req.SpanContext().SpanID(), s.Parent().SpanID())
	}
}
