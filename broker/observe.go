package broker

import (
	"context"
	"time"
)

// Observer receives what the library's parts report as they work: retries,
// dead letters, connections lost and made, spool depth, outbox backlog. It
// is the one hook instrumentation (the OpenTelemetry module, a Prometheus
// exporter, a test) needs; the parts that report take it as an option
// (WithObserver). Observe is called synchronously from the reporting
// goroutine, possibly concurrently: it must be safe for concurrent use,
// fast, and must not call back into the part that reports.
type Observer interface {
	Observe(ctx context.Context, o Observation)
}

// ObserverFunc adapts a function to [Observer].
type ObserverFunc func(ctx context.Context, o Observation)

// Observe calls f.
func (f ObserverFunc) Observe(ctx context.Context, o Observation) { f(ctx, o) }

// Observation is one thing a part reports. Kind says which; the other
// fields are set where they apply.
type Observation struct {
	// Kind is what happened.
	Kind ObservationKind
	// Component names the part reporting: "rabbitmq publisher", "rabbitmq
	// subscriber", "kafka publisher", "kafka subscriber", "retry", "spool",
	// "outbox relay", "outbox inbox"...
	Component string
	// System is the messaging system: "rabbitmq", "kafka", or "" when none
	// applies.
	System string
	// Destination is the exchange, queue or topic concerned, if any.
	Destination string
	// Address is the broker address concerned (connections), if any.
	Address string
	// MessageID and MessageName identify the message concerned, if any.
	MessageID, MessageName string
	// Category is the error category ([Category]) of a failure or dead
	// letter.
	Category string
	// Attempt is the attempt number of a retry or dead letter.
	Attempt int
	// Value carries the measurement of gauges: spool depth in entries,
	// outbox backlog in rows, outbox lag in seconds, the delay before a
	// retry in seconds.
	Value float64
	// Delay is the wait before the next attempt of a retry.
	Delay time.Duration
	// Err is the error of a failure, if any.
	Err error
}

// ObservationKind names what an [Observation] reports.
type ObservationKind string

// The kinds of observations. Gauges (…Depth, …Backlog, …Lag) carry their
// current value in Observation.Value.
const (
	// ObservedRetry: a publish attempt failed and will be retried after
	// Delay (retry layer), or a delivery's handler failed and it will be
	// handled again (subscribers).
	ObservedRetry ObservationKind = "retry"
	// ObservedDeadLetter: a message went to a dead-letter sink or queue,
	// with its Category.
	ObservedDeadLetter ObservationKind = "dead_letter"
	// ObservedConnected: a connection to Address was made (Attempt > 1
	// after failures: a reconnect).
	ObservedConnected ObservationKind = "connected"
	// ObservedDisconnected: a connection to Address was lost, with Err.
	ObservedDisconnected ObservationKind = "disconnected"
	// ObservedSpoolDepth: the entries in the local spool.
	ObservedSpoolDepth ObservationKind = "spool_depth"
	// ObservedOutboxBacklog: the outbox rows not yet published.
	ObservedOutboxBacklog ObservationKind = "outbox_backlog"
	// ObservedOutboxLag: the age in seconds of the oldest unpublished
	// outbox row (0 when none).
	ObservedOutboxLag ObservationKind = "outbox_lag"
	// ObservedDuplicate: a consumer's inbox skipped a delivery whose event
	// id it had handled before (a redelivery: at least once), with
	// MessageID, MessageName and the Destination it came from.
	ObservedDuplicate ObservationKind = "duplicate"
)

// HealthChecker is implemented by adapters and the parts built on them
// that can say whether they are ready: what a readiness probe calls.
// Health returns nil when connected and able to publish (or consume),
// otherwise an error matching [ErrUnavailable] (or [ErrClosed]) that says
// why, with the last connection error. It does not block on the network
// beyond ctx.
type HealthChecker interface {
	Health(ctx context.Context) error
}
