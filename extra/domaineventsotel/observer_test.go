package domaineventsotel_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/extra/domaineventsotel"
)

func TestObserver(t *testing.T) {
	tl := newTel(t)
	o := domaineventsotel.NewObserver(tl.opts()...)
	ctx := context.Background()
	for _, ob := range []broker.Observation{
		{Kind: broker.ObservedRetry, Component: "retry", Category: broker.CategoryUnavailable, Attempt: 1},
		{Kind: broker.ObservedRetry, Component: "retry", Category: broker.CategoryUnavailable, Attempt: 2},
		{Kind: broker.ObservedRetry, Component: "rabbitmq subscriber", System: "rabbitmq", Destination: "billing.retry",
			Err: errors.New("handler failed")},
		{Kind: broker.ObservedDeadLetter, Component: "retry", Destination: "spool /var/spool/orders", Category: broker.CategoryUnavailable},
		{Kind: broker.ObservedDeadLetter, Component: "retry", Destination: "rabbitmq exchange orders.events.dlq", Category: broker.CategoryUnroutable},
		{Kind: broker.ObservedConnected, Component: "rabbitmq publisher", System: "rabbitmq", Destination: "orders.events", Address: "127.0.0.1:5672"},
		{Kind: broker.ObservedDisconnected, Component: "rabbitmq publisher", System: "rabbitmq", Destination: "orders.events"},
		{Kind: broker.ObservedConnected, Component: "rabbitmq publisher", System: "rabbitmq", Destination: "orders.events", Attempt: 2},
		{Kind: broker.ObservedSpoolDepth, Component: "spool", Destination: "/var/spool/orders", Value: 7},
		{Kind: broker.ObservedSpoolDepth, Component: "spool", Destination: "/var/spool/orders", Value: 3},
		{Kind: broker.ObservedOutboxBacklog, Component: "outbox relay", Value: 42},
		{Kind: broker.ObservedOutboxLag, Component: "outbox relay", Value: 1.5},
		{Kind: broker.ObservedDuplicate, Component: "outbox inbox", System: "rabbitmq", Destination: "billing.orders", MessageID: "e-1"},
		{Kind: broker.ObservedDuplicate, Component: "outbox inbox", System: "rabbitmq", Destination: "billing.orders", MessageID: "e-2"},
		{Kind: "something new"},
	} {
		o.Observe(ctx, ob)
	}

	ms := tl.metrics(t)
	type point struct {
		attrs map[string]any
		value float64
	}
	points := func(name string) []point {
		var out []point
		switch d := ms[name].Data.(type) {
		case metricdata.Sum[int64]:
			assert.True(t, d.IsMonotonic, name)
			for _, dp := range d.DataPoints {
				out = append(out, point{setAttrs(dp.Attributes), float64(dp.Value)})
			}
		case metricdata.Gauge[int64]:
			for _, dp := range d.DataPoints {
				out = append(out, point{setAttrs(dp.Attributes), float64(dp.Value)})
			}
		case metricdata.Gauge[float64]:
			for _, dp := range d.DataPoints {
				out = append(out, point{setAttrs(dp.Attributes), dp.Value})
			}
		default:
			t.Fatalf("%s: unexpected data %T", name, d)
		}
		return out
	}
	assert.ElementsMatch(t, []point{
		{map[string]any{"domainevents.component": "retry", "error.type": "unavailable"}, 2},
		{map[string]any{"domainevents.component": "rabbitmq subscriber", "messaging.system": "rabbitmq",
			"domainevents.destination": "billing.retry", "error.type": "_OTHER"}, 1},
	}, points("domainevents.retries"))
	assert.ElementsMatch(t, []point{
		{map[string]any{"domainevents.component": "retry", "domainevents.destination": "spool /var/spool/orders", "error.type": "unavailable"}, 1},
		{map[string]any{"domainevents.component": "retry", "domainevents.destination": "rabbitmq exchange orders.events.dlq", "error.type": "unroutable"}, 1},
	}, points("domainevents.dead_letters"))
	pub := map[string]any{"domainevents.component": "rabbitmq publisher", "messaging.system": "rabbitmq", "domainevents.destination": "orders.events"}
	assert.Equal(t, []point{{pub, 2}}, points("domainevents.connects"))
	assert.Equal(t, []point{{pub, 1}}, points("domainevents.disconnects"))
	assert.Equal(t, []point{{map[string]any{"domainevents.component": "spool", "domainevents.destination": "/var/spool/orders"}, 3}},
		points("domainevents.spool.depth"))
	assert.Equal(t, []point{{map[string]any{"domainevents.component": "outbox relay"}, 42}}, points("domainevents.outbox.backlog"))
	assert.Equal(t, []point{{map[string]any{"domainevents.component": "outbox relay"}, 1.5}}, points("domainevents.outbox.lag"))

	assert.Equal(t, []point{{map[string]any{"domainevents.component": "outbox inbox", "messaging.system": "rabbitmq",
		"domainevents.destination": "billing.orders"}, 2}}, points("domainevents.inbox.duplicates"))

	units := map[string]string{}
	for name, m := range ms {
		units[name] = m.Unit
	}
	assert.Equal(t, map[string]string{
		"domainevents.retries": "{retry}", "domainevents.dead_letters": "{message}",
		"domainevents.connects": "{connection}", "domainevents.disconnects": "{connection}",
		"domainevents.spool.depth": "{message}", "domainevents.outbox.backlog": "{row}", "domainevents.outbox.lag": "s",
		"domainevents.inbox.duplicates": "{message}",
	}, units)
}

func TestLogHandler(t *testing.T) {
	tl := newTel(t)
	var buf bytes.Buffer
	logger := slog.New(domaineventsotel.NewLogHandler(slog.NewJSONHandler(&buf, nil))).With("component", "billing")

	ctx, span := tl.tp.Tracer("test").Start(context.Background(), "process")
	logger.InfoContext(ctx, "order billed", "order", "order-1")
	span.End()
	logger.Info("no trace here")

	dec := json.NewDecoder(&buf)
	var traced, plain map[string]any
	require.NoError(t, dec.Decode(&traced))
	require.NoError(t, dec.Decode(&plain))
	assert.Equal(t, span.SpanContext().TraceID().String(), traced["trace_id"])
	assert.Equal(t, span.SpanContext().SpanID().String(), traced["span_id"])
	assert.Equal(t, "billing", traced["component"])
	assert.Equal(t, "order-1", traced["order"])
	assert.NotContains(t, plain, "trace_id")
	assert.NotContains(t, plain, "span_id")

	assert.False(t, domaineventsotel.NewLogHandler(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})).
		Enabled(ctx, slog.LevelInfo))
}

// NewLogHandler(nil) made slog's default must log, not deadlock: wrapping
// slog's built-in default handler and setting the result as the default
// deadlocks on the first record. A deadlocked log package cannot be
// recovered in-process, so a child process (this test binary) logs.
func TestLogHandlerNilAsDefault(t *testing.T) {
	if os.Getenv("DE_LOG_HANDLER_CHILD") == "1" {
		slog.SetDefault(slog.New(domaineventsotel.NewLogHandler(nil)))
		slog.Info("through slog", "k", "v")
		log.Print("through the log package")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestLogHandlerNilAsDefault$")
	cmd.Env = append(os.Environ(), "DE_LOG_HANDLER_CHILD=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("the child did not finish in 20s (deadlock); stderr:\n%s", stderr.String())
	}
	require.NoError(t, err, "stderr:\n%s", stderr.String())
	assert.Contains(t, stderr.String(), `msg="through slog" k=v`)
	assert.Contains(t, stderr.String(), "through the log package")
}
