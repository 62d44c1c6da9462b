// Package eventbus is a typed, in-process publish/subscribe bus.
//
// Go methods cannot have type parameters, so the bus is a plain [*Bus] and
// the typed calls are functions:
//
//	bus := eventbus.New()
//	eventbus.Subscribe(bus, func(ctx context.Context, e events.OrderCreated) error { ... })
//	err := eventbus.Publish(ctx, bus, events.OrderCreated{...})
//
// Events are routed by their stable name ([Event.EventName], e.g.
// "order.created"), never by Go type name. [SubscribeAll] receives every
// event; the broker forwarder uses it. Publishing an event held in an
// interface (say, events.Event from a decoder) still reaches the typed
// handlers of its dynamic type.
//
// # Dispatch
//
// [Publish] is synchronous: it calls the handlers in subscription order on
// the caller's goroutine and returns when all have run. Every handler runs,
// even after an earlier one failed or panicked. There is no queue, so nothing
// is dropped and nothing runs after Publish returns; to pipeline broker
// publishes, publish from several goroutines.
//
// # Errors
//
// A failing handler yields a [*HandlerError] (event name, handler function
// name, cause); several are joined with errors.Join, so errors.Is and
// errors.As see each cause. A panic is recovered into a *HandlerError
// matching [ErrPanic], on one line (the value and the frame that panicked)
// with the stack kept by [HandlerError.PanicStack], and the bus keeps
// working.
//
// # Concurrency
//
// Publish, Subscribe and Unsubscribe are safe for concurrent use. Publish
// takes no lock and does not allocate for typed handlers that succeed.
package eventbus
