// Package memory is an in-memory broker.Broker with subscribers that
// deliver like the real adapters, for the tests of a service: publish
// through the code under test, consume with the service's own handlers,
// and wait, without sleeping, until they are done.
//
//	b, err := memory.New()
//	sub, err := b.Subscribe("billing", handler, memory.WithConcurrency(8))
//	// ... the code under test publishes to b ...
//	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
//	defer cancel()
//	d, err := sub.WaitEvent(ctx, eventID) // handled and acknowledged
//	err = sub.WaitQuiet(ctx)              // everything published settled
//	err = b.Close(ctx)                    // the subscribers too
//
// It passes the conformance suite of broker/brokertest (what cannot fail
// in memory, an unroutable destination and a lost connection while
// publishing, skips), so what a test sees here the real adapters do too.
//
// # Publishing
//
// [Broker.Publish] validates the message and appends a copy of it to the
// broker's log; it returns nil once the copy is there, the broker's
// "confirm". [Broker.Messages] returns what was published, in order.
//
// # Delivery semantics
//
// A queue ([Broker.Subscribe] names it) sees every message of the log,
// from the broker's first, as if it had been declared before anything was
// published; a test can publish first and subscribe after. As on
// RabbitMQ with WithConcurrency:
//
//   - the handler runs, and its delivery is acknowledged after it returns
//     nil: at least once. A delivery not acknowledged when the subscriber
//     closes goes to the queue's next subscriber; [Subscriber.Cut] acts
//     as a lost connection (what is not acknowledged is delivered again);
//   - up to [WithConcurrency] handlers run at once, never two of one key
//     (Message.Key) at once, each key's deliveries in publish order;
//     Delivery.Seq is the broker.HeaderSeq header, as the outbox's relay
//     sets it ([WithUnordered] ignores keys);
//   - a failed delivery (an error, or a panic: its stack logged once, the
//     error one line) holds its key and is handled again after a backoff
//     with jitter ([WithRetryBackoff], short by default), Delivery.Attempt
//     one higher, while the other keys go on;
//   - after [WithMaxAttempts], or at once for a broker.Permanent error, it
//     is dead-lettered: [Broker.DeadLetters] holds the original message
//     with the broker.HeaderDeadLetter* reason headers the real adapters
//     set (reason on one line of at most broker.MaxDeadLetterReason bytes,
//     category, attempts, first and last failure) and
//     [HeaderOriginalQueue]; then its key moves on.
//
// Retries and dead letters are logged ([WithLogger]) and reported to the
// observer ([WithObserver]) as the real subscribers do.
//
// # Waiting
//
// [Subscriber.WaitHandled] (n deliveries handled), [Subscriber.WaitEvent]
// (one event, by id), [Subscriber.WaitName] (an event of a name),
// [Subscriber.WaitQuiet] (every message published so far handled or
// dead-lettered) and [Broker.WaitDeadLetter] block until their condition
// holds, woken by each change, never polling: give them a ctx with a
// deadline. When it ends first, the error wraps ctx.Err() and says what
// was awaited and what was seen. [Subscriber.Handled] and
// [Subscriber.Stats] are for assertions afterwards.
//
// # Typed events
//
// With the service's handlers on an eventbus, the subscriber's handler is
// bridge.NewHandler(bus), and the code under test publishes through
// bridge.NewForwarder(b) (or domainevents.WithDisabledBroker(b), or an
// outbox relay over b); an inbox goes between them as in production:
// inbox.Handler(bridge handler).
//
// # Closing
//
// [Subscriber.Close] stops feeding its handlers, lets the running ones
// finish and acknowledges what they handled; within its ctx (when ctx
// ends first, the handlers' ctx is cancelled and ctx.Err() returned).
// [Broker.Close] refuses publishes from then on (broker.ErrClosed) and
// closes every subscriber still running: no goroutine is left. A second
// Close returns nil.
//
// # Your own adapter
//
// The conformance suite this broker passes is the one an adapter of your
// own runs: see broker/brokertest.Run and this package's TestConformance.
//
// The log and the dead letters are kept until the broker is dropped: it is
// for tests, not for production traffic.
package memory
