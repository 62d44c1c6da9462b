package domaineventsotel_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/extra/domaineventsotel"
)

// dashboardFile is the Grafana dashboard shipped with this module.
const dashboardFile = "dashboards/domainevents.json"

// scrapeLabels are the labels Prometheus adds when it scrapes (job,
// instance) and the histogram bucket bound: a query may use them on any
// metric.
var scrapeLabels = []string{"job", "instance", "le"}

// promMetric is one family the Prometheus exporter serves.
type promMetric struct {
	typ    dto.MetricType
	labels map[string]bool
}

// exported runs every instrument this module makes through the
// OpenTelemetry Prometheus exporter, with its default naming (dots to
// underscores, unit and _total suffixes), and returns what a Prometheus
// scrape gets: the metric families by name. created is the name of every
// instrument the module's code asked the meter for, so that a metric the
// exercise below misses fails the test instead of escaping it.
func exported(t *testing.T) (families map[string]promMetric, created []string) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	require.NoError(t, err)
	sdk := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	t.Cleanup(func() { _ = sdk.Shutdown(context.Background()) })
	mp := &recordingProvider{MeterProvider: sdk}
	opt := domaineventsotel.WithMeterProvider(mp)
	ctx := context.Background()

	// Publishing: a success and a failure (error.type), on each broker.
	for _, dest := range []broker.Destination{{System: "rabbitmq", Name: "orders.events"}, {System: "kafka", Name: "orders.events"}} {
		ok := domaineventsotel.WrapBroker(&fakeBroker{dest: dest}, opt)
		require.NoError(t, ok.Publish(ctx, message()))
		failing := domaineventsotel.WrapBroker(&fakeBroker{dest: dest, err: &broker.Error{Op: "publish", Kind: broker.ErrUnavailable}}, opt)
		require.Error(t, failing.Publish(ctx, message()))
	}
	// Consuming: a success and a failure, on each broker.
	handled := domaineventsotel.WrapHandler(func(context.Context, broker.Delivery) error { return nil }, opt)
	failed := domaineventsotel.WrapHandler(func(context.Context, broker.Delivery) error { return errors.New("handler failed") }, opt)
	kafkaDelivery := broker.Delivery{Message: message(), Attempt: 1,
		Origin: broker.Origin{System: "kafka", Destination: "orders.events", Partition: 3, Offset: 7, ConsumerGroup: "billing"}}
	for _, d := range []broker.Delivery{rabbitDelivery(message()), kafkaDelivery} {
		require.NoError(t, handled(ctx, d))
		require.Error(t, failed(ctx, d))
	}
	// What the parts observe: every kind the observer records.
	obs := domaineventsotel.NewObserver(opt)
	for _, o := range []broker.Observation{
		{Kind: broker.ObservedRetry, Component: "retry", System: "rabbitmq", Destination: "orders.events", Category: "unavailable"},
		{Kind: broker.ObservedDeadLetter, Component: "retry", System: "rabbitmq", Destination: "spool", Category: "unroutable"},
		{Kind: broker.ObservedConnected, Component: "rabbitmq publisher", System: "rabbitmq", Destination: "127.0.0.1:5672"},
		{Kind: broker.ObservedDisconnected, Component: "rabbitmq publisher", System: "rabbitmq", Destination: "127.0.0.1:5672"},
		{Kind: broker.ObservedSpoolDepth, Component: "spool", Destination: "/var/spool/orders", Value: 3},
		{Kind: broker.ObservedOutboxBacklog, Component: "outbox relay", Destination: "outbox", Value: 12},
		{Kind: broker.ObservedOutboxLag, Component: "outbox relay", Destination: "outbox", Value: 0.4},
		{Kind: broker.ObservedDuplicate, Component: "outbox inbox", System: "rabbitmq", Destination: "billing.orders"},
	} {
		obs.Observe(ctx, o)
	}

	mfs, err := reg.Gather()
	require.NoError(t, err)
	families = map[string]promMetric{}
	for _, mf := range mfs {
		m := promMetric{typ: mf.GetType(), labels: map[string]bool{}}
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				m.labels[l.GetName()] = true
			}
		}
		families[mf.GetName()] = m
	}
	return families, mp.names()
}

// TestEveryInstrumentIsExported: each instrument the module makes reaches
// the scrape under its Prometheus name (the exercise above is complete),
// and the names are the ones the dashboard and the README use.
func TestEveryInstrumentIsExported(t *testing.T) {
	families, created := exported(t)
	require.NotEmpty(t, created)
	for _, name := range created {
		prefix := strings.ReplaceAll(name, ".", "_")
		found := false
		for f := range families {
			found = found || f == prefix || strings.HasPrefix(f, prefix+"_")
		}
		assert.True(t, found, "instrument %s made by the module is not in the scrape: exercise it in exported()", name)
	}
	var names []string
	for f := range families {
		names = append(names, f)
	}
	sort.Strings(names)
	t.Logf("exported: %v", names)
	for _, want := range []string{
		"messaging_client_operation_duration_seconds", "messaging_client_sent_messages_total",
		"messaging_client_consumed_messages_total", "messaging_process_duration_seconds",
		"domainevents_retries_total", "domainevents_dead_letters_total", "domainevents_connects_total",
		"domainevents_disconnects_total", "domainevents_spool_depth", "domainevents_outbox_backlog",
		"domainevents_outbox_lag_seconds", "domainevents_inbox_duplicates_total",
	} {
		assert.Contains(t, names, want, "the name docs/observability and the dashboard use")
	}
}

// TestDashboardQueriesNameExportedMetrics parses the Grafana dashboard
// and checks every PromQL query (panels and template variables): each
// names only metrics the module exports (histograms by their _bucket,
// _sum or _count series) and only labels those metrics carry; and every
// exported metric has a panel.
func TestDashboardQueriesNameExportedMetrics(t *testing.T) {
	families, _ := exported(t)
	b, err := os.ReadFile(dashboardFile)
	require.NoError(t, err)
	var dash map[string]any
	require.NoError(t, json.Unmarshal(b, &dash))
	queries := dashboardQueries(dash)
	require.NotEmpty(t, queries)

	used := map[string]bool{}
	for _, q := range queries {
		metrics, labels := promqlNames(q.expr)
		if !assert.NotEmpty(t, metrics, "%s: query names no metric: %s", q.where, q.expr) {
			continue
		}
		allowed := map[string]bool{}
		for _, l := range scrapeLabels {
			allowed[l] = true
		}
		for _, m := range metrics {
			family, ok := familyOf(families, m)
			if !assert.True(t, ok, "%s: %s is not a metric the module exports: %s", q.where, m, q.expr) {
				continue
			}
			used[family] = true
			for l := range families[family].labels {
				allowed[l] = true
			}
		}
		for _, l := range labels {
			assert.True(t, allowed[l], "%s: label %s is on none of the metrics of: %s", q.where, l, q.expr)
		}
	}
	for f := range families {
		if f == "target_info" { // the exporter's resource metric, not ours
			continue
		}
		assert.True(t, used[f], "no panel shows %s", f)
	}
}

// familyOf finds the family a series name belongs to: itself, or a
// histogram's _bucket, _sum or _count.
func familyOf(families map[string]promMetric, series string) (string, bool) {
	if _, ok := families[series]; ok {
		return series, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(series, suffix)
		if m, found := families[base]; ok && found && m.typ == dto.MetricType_HISTOGRAM {
			return base, true
		}
	}
	return "", false
}

type query struct{ where, expr string }

// dashboardQueries collects every query of a dashboard: panel targets
// (rows' nested panels included) and template variables.
func dashboardQueries(dash map[string]any) []query {
	var out []query
	var walk func(panels []any)
	walk = func(panels []any) {
		for _, p := range panels {
			pm, _ := p.(map[string]any)
			title, _ := pm["title"].(string)
			for _, tgt := range asSlice(pm["targets"]) {
				if expr, _ := tgt.(map[string]any)["expr"].(string); expr != "" {
					out = append(out, query{"panel " + title, expr})
				}
			}
			walk(asSlice(pm["panels"]))
		}
	}
	walk(asSlice(dash["panels"]))
	templating, _ := dash["templating"].(map[string]any)
	for _, v := range asSlice(templating["list"]) {
		vm := v.(map[string]any)
		if vm["type"] != "query" {
			continue
		}
		q := vm["query"]
		if qm, ok := q.(map[string]any); ok {
			q = qm["query"]
		}
		s, _ := q.(string)
		if m := labelValues.FindStringSubmatch(s); m != nil {
			out = append(out, query{"variable " + vm["name"].(string), m[1] + " by (" + m[2] + ")"})
		} else if s != "" {
			out = append(out, query{"variable " + vm["name"].(string), s})
		}
	}
	return out
}

func asSlice(v any) []any { s, _ := v.([]any); return s }

// labelValues is Grafana's label_values(metric, label).
var labelValues = regexp.MustCompile(`^\s*label_values\(\s*([^,]+?)\s*,\s*(\w+)\s*\)\s*$`)

var (
	promStrings   = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	promMatchers  = regexp.MustCompile(`\{[^}]*\}`)
	promMatcher   = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	promRanges    = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping  = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	promIdent     = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promKeywords  = []string{"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "inf", "nan", "atan2"}
	promNumberEnd = regexp.MustCompile(`[0-9.]$`)
)

// promqlNames returns the metric names and the label names a PromQL
// expression uses. It knows the PromQL of dashboards: selectors with
// label matchers, ranges, functions, aggregations with by/without,
// binary operators with on/ignoring/group_*.
func promqlNames(expr string) (metrics, labels []string) {
	e := promStrings.ReplaceAllString(expr, `""`)
	for _, m := range promMatchers.FindAllString(e, -1) {
		for _, l := range promMatcher.FindAllStringSubmatch(m, -1) {
			labels = append(labels, l[1])
		}
	}
	e = promMatchers.ReplaceAllString(e, " ")
	e = promRanges.ReplaceAllString(e, " ")
	for _, g := range promGrouping.FindAllStringSubmatch(e, -1) {
		for l := range strings.SplitSeq(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				labels = append(labels, l)
			}
		}
	}
	e = promGrouping.ReplaceAllString(e, " ")
	for _, loc := range promIdent.FindAllStringIndex(e, -1) {
		id := e[loc[0]:loc[1]]
		rest := strings.TrimLeft(e[loc[1]:], " \t\n")
		switch {
		case strings.HasPrefix(rest, "("): // a function or an aggregation
		case slices.Contains(promKeywords, strings.ToLower(id)):
		case loc[0] > 0 && (e[loc[0]-1] == '$' || promNumberEnd.MatchString(e[:loc[0]])): // $var, 1e3
		default:
			metrics = append(metrics, id)
		}
	}
	return slices.Compact(slices.Sorted(slices.Values(metrics))), slices.Compact(slices.Sorted(slices.Values(labels)))
}

func TestPromQLNames(t *testing.T) {
	cases := []struct {
		expr            string
		metrics, labels []string
	}{
		{`sum by (a, b) (rate(x_total{job=~"$job", error_type!=""}[$__rate_interval]))`, []string{"x_total"}, []string{"a", "b", "error_type", "job"}},
		{`histogram_quantile(0.99, sum by (le) (rate(h_seconds_bucket{job=~"a,b}"}[5m])))`, []string{"h_seconds_bucket"}, []string{"job", "le"}},
		{`sum(a) - sum by (c) (b or a * 0)`, []string{"a", "b"}, []string{"c"}},
		{`x / on (instance) group_left (k) y offset 5m`, []string{"x", "y"}, []string{"instance", "k"}},
		{`1e3 * up`, []string{"up"}, nil},
	}
	for _, c := range cases {
		m, l := promqlNames(c.expr)
		assert.Equal(t, c.metrics, m, c.expr)
		assert.Equal(t, c.labels, l, c.expr)
	}
}

// recordingProvider remembers the name of every instrument made through
// it, and makes them with the SDK.
type recordingProvider struct {
	metric.MeterProvider
	mu      sync.Mutex
	created map[string]bool
}

func (p *recordingProvider) add(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.created == nil {
		p.created = map[string]bool{}
	}
	p.created[name] = true
}

func (p *recordingProvider) names() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for n := range p.created {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (p *recordingProvider) Meter(name string, opts ...metric.MeterOption) metric.Meter {
	return recordingMeter{p.MeterProvider.Meter(name, opts...), p}
}

type recordingMeter struct {
	metric.Meter
	p *recordingProvider
}

func (m recordingMeter) Int64Counter(n string, o ...metric.Int64CounterOption) (metric.Int64Counter, error) {
	m.p.add(n)
	return m.Meter.Int64Counter(n, o...)
}

func (m recordingMeter) Int64UpDownCounter(n string, o ...metric.Int64UpDownCounterOption) (metric.Int64UpDownCounter, error) {
	m.p.add(n)
	return m.Meter.Int64UpDownCounter(n, o...)
}

func (m recordingMeter) Int64Histogram(n string, o ...metric.Int64HistogramOption) (metric.Int64Histogram, error) {
	m.p.add(n)
	return m.Meter.Int64Histogram(n, o...)
}

func (m recordingMeter) Int64Gauge(n string, o ...metric.Int64GaugeOption) (metric.Int64Gauge, error) {
	m.p.add(n)
	return m.Meter.Int64Gauge(n, o...)
}

func (m recordingMeter) Int64ObservableCounter(n string, o ...metric.Int64ObservableCounterOption) (metric.Int64ObservableCounter, error) {
	m.p.add(n)
	return m.Meter.Int64ObservableCounter(n, o...)
}

func (m recordingMeter) Int64ObservableUpDownCounter(n string, o ...metric.Int64ObservableUpDownCounterOption) (metric.Int64ObservableUpDownCounter, error) {
	m.p.add(n)
	return m.Meter.Int64ObservableUpDownCounter(n, o...)
}

func (m recordingMeter) Int64ObservableGauge(n string, o ...metric.Int64ObservableGaugeOption) (metric.Int64ObservableGauge, error) {
	m.p.add(n)
	return m.Meter.Int64ObservableGauge(n, o...)
}

func (m recordingMeter) Float64Counter(n string, o ...metric.Float64CounterOption) (metric.Float64Counter, error) {
	m.p.add(n)
	return m.Meter.Float64Counter(n, o...)
}

func (m recordingMeter) Float64UpDownCounter(n string, o ...metric.Float64UpDownCounterOption) (metric.Float64UpDownCounter, error) {
	m.p.add(n)
	return m.Meter.Float64UpDownCounter(n, o...)
}

func (m recordingMeter) Float64Histogram(n string, o ...metric.Float64HistogramOption) (metric.Float64Histogram, error) {
	m.p.add(n)
	return m.Meter.Float64Histogram(n, o...)
}

func (m recordingMeter) Float64Gauge(n string, o ...metric.Float64GaugeOption) (metric.Float64Gauge, error) {
	m.p.add(n)
	return m.Meter.Float64Gauge(n, o...)
}

func (m recordingMeter) Float64ObservableCounter(n string, o ...metric.Float64ObservableCounterOption) (metric.Float64ObservableCounter, error) {
	m.p.add(n)
	return m.Meter.Float64ObservableCounter(n, o...)
}

func (m recordingMeter) Float64ObservableUpDownCounter(n string, o ...metric.Float64ObservableUpDownCounterOption) (metric.Float64ObservableUpDownCounter, error) {
	m.p.add(n)
	return m.Meter.Float64ObservableUpDownCounter(n, o...)
}

func (m recordingMeter) Float64ObservableGauge(n string, o ...metric.Float64ObservableGaugeOption) (metric.Float64ObservableGauge, error) {
	m.p.add(n)
	return m.Meter.Float64ObservableGauge(n, o...)
}
