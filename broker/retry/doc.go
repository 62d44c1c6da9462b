// Package retry is the one place publishes are retried. Adapters classify
// their errors (broker.IsRetryable); [Broker] wraps any broker.Broker and
// retries what is retryable with exponential backoff and full jitter,
// bounded by attempts ([WithMaxAttempts], default 5), one time budget for
// the whole Publish ([WithMaxElapsed], default 30s: attempts, their
// timeouts and the waits between them all count), a per-attempt timeout
// ([WithAttemptTimeout], default 10s) and the caller's ctx.
//
// What still fails goes to a dead-letter sink, never nowhere:
//
//	spool, _ := deadletter.OpenSpool("/var/spool/orders-events")
//	dlq, _ := rabbitmq.NewDeadLetterSink(ctx, cfg)
//	b, _ := retry.New(adapter,
//		retry.WithDeadLetter(spool),      // broker unreachable: local, fsync'd
//		retry.WithRejectedDeadLetter(dlq)) // broker refused it: <exchange>.dlq
//
// Errors the broker refused for good (unroutable, rejected, too large) go to
// the rejected sink at once, without retries; if it fails, to the general
// sink. Everything else goes to the general sink after the last attempt,
// even when the caller's ctx has ended.
//
// # How long a Publish takes
//
// At most [WithMaxElapsed], plus the dead-letter write (milliseconds for
// the spool; up to [WithSinkTimeout], default 5s, for a broker-side sink).
// For a request path (an HTTP handler), [ForRequests] sets it to 2s: the
// handler then answers within about 2s whatever the broker does, and an
// event the broker did not take is safe in the spool.
//
// # Errors
//
// Publish returns nil once an attempt succeeded. Otherwise a [*GiveUpError]
// with the last attempt's error (errors.Is sees its category). If the message
// was dead-lettered the error also matches broker.ErrDeadLettered: it is
// safe, replayable, and must not be retried by the caller (IsRetryable is
// false; broker.Safe is true). Without a sink, or if every sink failed
// (said in the error), the message is the caller's to keep.
//
// # Shutdown
//
// Close(ctx) stops retrying at once: Publish calls waiting for their next
// attempt dead-letter their message now, and their callers get
// broker.ErrDeadLettered. Attempts in flight may finish (a healthy broker
// confirms them) until a quarter of ctx's time is left (at most the last
// second); then they are cancelled and dead-lettered, so that the writes
// fit in ctx. Then the wrapped broker is closed. A service's shutdown
// budget is therefore the broker's confirm time on a healthy day, plus
// about a second.
package retry
