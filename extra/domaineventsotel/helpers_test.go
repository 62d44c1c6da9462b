package domaineventsotel_test

import (
	"context"
	"regexp"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/extra/domaineventsotel"
)

// tel is a test's own OpenTelemetry pipeline: an SDK tracer provider with
// an in-memory span recorder, a meter provider with a manual reader, W3C
// trace context and baggage propagation. Nothing global is touched.
type tel struct {
	spans  *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
	prop   propagation.TextMapPropagator
}

func newTel(t testing.TB) *tel {
	t.Helper()
	tl := &tel{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader(),
		prop: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})}
	tl.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tl.spans))
	tl.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(tl.reader))
	t.Cleanup(func() {
		_ = tl.tp.Shutdown(context.Background())
		_ = tl.mp.Shutdown(context.Background())
	})
	return tl
}

func (tl *tel) opts(more ...domaineventsotel.Option) []domaineventsotel.Option {
	return append([]domaineventsotel.Option{domaineventsotel.WithTracerProvider(tl.tp),
		domaineventsotel.WithMeterProvider(tl.mp), domaineventsotel.WithPropagators(tl.prop)}, more...)
}

// ended returns the ended spans named name.
func (tl *tel) ended(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range tl.spans.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// metrics collects every metric, by name.
func (tl *tel) metrics(t testing.TB) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, tl.reader.Collect(context.Background(), &rm))
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

// attrs turns a span's or data point's attributes into a map.
func attrs(kvs []attribute.KeyValue) map[string]any {
	out := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		out[string(kv.Key)] = kv.Value.AsInterface()
	}
	return out
}

func setAttrs(s attribute.Set) map[string]any { return attrs(s.ToSlice()) }

// traceparentRE is the W3C trace context header, version 00.
var traceparentRE = regexp.MustCompile(`^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$`)

// fakeBroker records what it is given and answers err; it says where
// messages go as dest does (RabbitMQ: routing key = name).
type fakeBroker struct {
	dest   broker.Destination
	err    error
	health error

	mu     sync.Mutex
	msgs   []broker.Message
	ctxs   []context.Context
	closed int
}

func (f *fakeBroker) Publish(ctx context.Context, m broker.Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.msgs = append(f.msgs, m)
	f.ctxs = append(f.ctxs, ctx)
	return f.err
}

func (f *fakeBroker) Close(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed++
	return nil
}

func (f *fakeBroker) Describe(m broker.Message) broker.Destination {
	d := f.dest
	if d.System == "rabbitmq" {
		d.RoutingKey = m.Name
	}
	return d
}

func (f *fakeBroker) Health(context.Context) error { return f.health }

func (f *fakeBroker) last() broker.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.msgs[len(f.msgs)-1]
}
