package domaineventsotel

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of every tracer and meter this
// package makes.
const ScopeName = "github.com/domainevents/domainevents/extra/domaineventsotel"

// Option configures [WrapBroker], [WrapHandler], [NewObserver] and
// [MessageHook]. Each option's doc names its default; an option a function
// has no use for is ignored by it.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// parentMode says what a process span's parent is.
type parentMode int

const (
	parentAuto     parentMode = iota // the producer's, unless ctx already has a span
	parentAmbient                    // ctx's span (or none): links only
	parentCreation                   // always the producer's; ctx's span is linked
)

// config is every setting, with the defaults filled in by newConfig: the
// one place where defaults live.
type config struct {
	tp     trace.TracerProvider
	mp     metric.MeterProvider
	prop   propagation.TextMapPropagator
	parent parentMode
}

func newConfig(opts []Option) config {
	c := config{parent: parentAuto}
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	if c.prop == nil {
		c.prop = otel.GetTextMapPropagator()
	}
	return c
}

func (c config) tracer() trace.Tracer {
	return c.tp.Tracer(ScopeName, trace.WithInstrumentationVersion(Version), trace.WithSchemaURL(schemaURL))
}

func (c config) meter() metric.Meter {
	return c.mp.Meter(ScopeName, metric.WithInstrumentationVersion(Version), metric.WithSchemaURL(schemaURL))
}

// WithTracerProvider sets where spans go. Default (and when tp is nil): the
// global provider, otel.GetTracerProvider(), as it is when the wrapper is
// made (the global delegates to a provider set later).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) { c.tp = tp })
}

// WithMeterProvider sets where metrics go. Default (and when mp is nil):
// the global provider, otel.GetMeterProvider().
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) { c.mp = mp })
}

// WithPropagators sets how the trace context is written into message
// headers and read back. Default (and when p is nil): the global
// propagator, otel.GetTextMapPropagator(). The global one propagates
// nothing until the application sets one, as with every OpenTelemetry
// instrumentation: call
//
//	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(
//		propagation.TraceContext{}, propagation.Baggage{}))
//
// at start-up, or give WithPropagators(propagation.TraceContext{}) here,
// to send the W3C traceparent and tracestate headers.
func WithPropagators(p propagation.TextMapPropagator) Option {
	return optionFunc(func(c *config) { c.prop = p })
}

// WithLinksOnly makes [WrapHandler]'s process span a child of the span in
// the handler's ctx, or the root of a new trace when there is none, linked
// to the producer's span but never its child. Default: the producer's span
// is the parent when the handler's ctx carries no span (see WrapHandler).
func WithLinksOnly() Option {
	return optionFunc(func(c *config) { c.parent = parentAmbient })
}

// WithProducerParent makes [WrapHandler]'s process span a child of the
// producer's span even when the handler's ctx carries a span of its own,
// which is then linked. Default: the producer's span is the parent only
// when the handler's ctx carries no span (see WrapHandler).
func WithProducerParent() Option {
	return optionFunc(func(c *config) { c.parent = parentCreation })
}
