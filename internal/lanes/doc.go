// Package lanes dispatches deliveries to handlers by key: up to Workers
// handler calls at once, never two of one key at once, each key's items in
// the order they were added. It is the engine under the subscribers'
// key-ordered concurrency (the RabbitMQ subscriber's WithConcurrency, a
// Kafka partition's records, an in-memory broker): the adapter feeds it
// what it receives and acknowledges (or commits) in its Settle callback.
//
// # Lanes
//
// Items of one key form a lane, a FIFO queue. A worker takes a lane whose
// head is ready, runs the head's handler call, settles it, and goes on
// with the lane's next item, or with another ready lane when one waits (so
// that a busy key cannot keep a worker from the others). A key never runs
// on two workers at once.
//
// # Failures
//
// A failed handler call (an error, or a panic turned into one by
// broker/adapter.CallHandler) holds its lane: the item is tried again after
// a backoff with full jitter (internal/backoff), its Delivery.Attempt one
// higher, while the lane's later items wait and other lanes go on. The
// waiting lane holds no worker. When broker/adapter.Outcome says so (the
// error is broker.Permanent, or Delivery.Attempt reached MaxAttempts), the
// item is dead: Config.DeadLetter stores its dead letter (built by
// broker/adapter.DeadLetterOf), tried again with the same backoff until it
// succeeds, then the item is settled as [DeadLettered] and the lane moves
// on.
//
// # Bounds and backpressure
//
// The dispatcher holds at most Capacity items (waiting, retrying or
// running), and a lane at most LaneCapacity. When either is full,
// [Dispatcher.Add] blocks until an item leaves, its ctx ends or the
// dispatcher closes: backpressure to the feeder, which stops reading from
// its broker (whose prefetch window or fetch then stops too). The lanes
// already holding items keep running meanwhile. A key held by retries can
// therefore take at most LaneCapacity of the Capacity slots; when the
// feeder's next item is for that full lane, the feeder waits until the key
// moves on (at most its retry budget).
//
// # Items that can no longer be settled
//
// An item may carry a Gone channel, closed when its acknowledgement can no
// longer reach the broker (its channel or partition claim ended): the
// broker delivers it again, elsewhere or on a new session. Such an item is
// not started, or not tried again, and is settled as [Abandoned];
// [Dispatcher.Expire] settles every such item not running at once, so that
// a lane waiting for a retry does not delay the redelivered copies behind
// it. A running handler call is never interrupted.
//
// # Closing
//
// [Dispatcher.Close] stops accepting items, settles every item not running
// as [Abandoned] (the broker delivers them again), lets the running handler
// calls finish and settles them (a failure then is [Abandoned], not
// retried), and returns once every worker has ended. If its ctx ends
// first, it cancels the handlers' ctx and returns ctx.Err() at once; a
// handler that ignores its ctx keeps its worker until it returns, and its
// outcome is settled as [Abandoned].
//
// # Callbacks
//
// Settle is called exactly once for every item Add accepted, never with a
// lock held: on the worker for handled and dead items, before the lane's
// next item starts (so a key's handled and dead items are settled in
// order), and on the goroutine of Expire or Close for abandoned ones (in
// no particular order with the others: the broker delivers them again).
// Callbacks must not call Add, Expire or Close.
package lanes
