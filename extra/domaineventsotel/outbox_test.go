package domaineventsotel_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	_ "modernc.org/sqlite"

	"github.com/domainevents/domainevents/bridge"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/rabbitmq"
	"github.com/domainevents/domainevents/extra/domaineventsotel"
	"github.com/domainevents/domainevents/outbox"
)

// One trace from the HTTP request through the commit (the outbox row
// keeps the request's trace context), the relay (its send span continues
// that trace) and RabbitMQ, to the consumer.
func TestOutboxTrace(t *testing.T) {
	brokertest.CheckNoLeak(t)
	admin, addr := requireRabbit(t)
	tl := newTel(t)
	cfg := rabbitConfig(t, admin, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "orders.db")+"?_pragma=busy_timeout(5000)&_txlock=immediate")
	require.NoError(t, err)
	defer db.Close()
	store, err := outbox.New(db, outbox.SQLite, outbox.WithMessageHook(domaineventsotel.MessageHook(tl.opts()...)))
	require.NoError(t, err)
	require.NoError(t, store.Migrate(ctx))
	fwd, err := bridge.NewForwarder(store)
	require.NoError(t, err)

	// The request: an order's events, written in its transaction.
	rctx, req := tl.tp.Tracer("test").Start(ctx, "POST /orders")
	require.NoError(t, store.Transact(rctx, func(ctx context.Context, _ *sql.Tx) error {
		for _, e := range orderEvents() {
			if err := fwd.Forward(ctx, e); err != nil {
				return err
			}
		}
		return nil
	}))
	req.End()

	// The consumer, then the relay, publishing through a wrapped adapter.
	var mu sync.Mutex
	var handled int
	h := domaineventsotel.WrapHandler(func(context.Context, broker.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		handled++
		return nil
	}, tl.opts()...)
	sub, err := rabbitmq.NewSubscriber(ctx, cfg, rabbitmq.Queue{Name: cfg.Queue}, h, rabbitmq.WithLogger(quiet()))
	require.NoError(t, err)
	adapter, err := rabbitmq.New(ctx, cfg, rabbitmq.WithLogger(quiet()), rabbitmq.WithQueue(rabbitmq.Queue{Name: cfg.Queue}))
	require.NoError(t, err)
	relay, err := outbox.NewRelay(store, domaineventsotel.WrapBroker(adapter, tl.opts()...),
		outbox.WithObserver(domaineventsotel.NewObserver(tl.opts()...)), outbox.WithBacklogInterval(20*time.Millisecond), outbox.WithLogger(quiet()))
	require.NoError(t, err)
	brokertest.WaitFor(t, 20*time.Second, "three deliveries", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return handled >= 3
	})
	require.NoError(t, relay.Close(ctx))
	require.NoError(t, adapter.Close(ctx))
	require.NoError(t, sub.Close(ctx))
	require.NoError(t, store.Close(ctx))

	var procs []sdktrace.ReadOnlySpan
	for _, s := range tl.spans.Ended() {
		if s.SpanKind() == trace.SpanKindConsumer {
			procs = append(procs, s)
		}
	}
	require.Len(t, procs, 3)
	checkTrace(t, tl, req.SpanContext(), procs, func(event string) (string, string) {
		return "send " + cfg.Exchange + ":" + event, "process " + cfg.Exchange + ":" + event + ":" + cfg.Queue
	})
	for _, s := range tl.spans.Ended() {
		if s.SpanKind() == trace.SpanKindProducer {
			assert.True(t, s.Parent().IsRemote(), "the relay's send span continues the stored context")
			require.Len(t, s.Links(), 1)
			assert.Equal(t, req.SpanContext().SpanID(), s.Links()[0].SpanContext.SpanID(), "and links to it")
		}
	}

	ms := tl.metrics(t)
	require.Contains(t, ms, "domainevents.outbox.backlog")
	require.Contains(t, ms, "domainevents.outbox.lag")
	backlog := ms["domainevents.outbox.backlog"].Data.(metricdata.Gauge[int64]).DataPoints
	require.Len(t, backlog, 1)
	assert.Equal(t, "outbox relay", setAttrs(backlog[0].Attributes)["domainevents.component"])
}
