// Package retry is the one place publishes are retried. Adapters classify
// their errors (broker.IsRetryable); [Broker] wraps any broker.Broker and
// retries what is retryable with exponential backoff and full jitter,
// bounded by attempts ([WithMaxAttempts], default 5), elapsed time
// ([WithMaxElapsed], default 30s), a per-attempt timeout
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
// # Errors
//
// Publish returns nil once an attempt succeeded. Otherwise a [*GiveUpError]
// with the last attempt's error (errors.Is sees its category). If the message
// was dead-lettered the error also matches broker.ErrDeadLettered: it is
// safe, replayable, and must not be retried by the caller (IsRetryable is
// false). Without a sink, or if every sink failed (said in the error), the
// message is the caller's to keep.
package retry
