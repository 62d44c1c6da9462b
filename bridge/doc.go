// Package bridge connects the in-process bus (package eventbus) to a
// broker, in both directions, so that application code deals in typed
// events only:
//
//   - [Forwarder] publishes every event of a bus to a broker.Broker:
//     HTTP handler → eventbus.Publish → Forwarder → Broker → RabbitMQ/Kafka.
//     [MessageFor] is the mapping it uses from an envelope to a
//     broker.Message (id, name, aggregate key, JSON body).
//   - [NewHandler] is the broker.Handler a subscriber calls: it decodes each
//     delivery into its typed event and publishes it on a bus, where
//     eventbus.Subscribe handlers take it. [EnvelopeFrom] gives a handler
//     the event's id and timestamp; [Dedup] skips redeliveries within one
//     process.
//
// # Delivery semantics
//
// A synchronous Forwarder (the default) returns the broker's answer from
// eventbus.Publish: nil only once the broker durably accepted the event. An
// asynchronous one ([WithAsync]) returns once the event is queued; events
// of one aggregate key keep their order; failures go to a dead-letter sink
// ([WithDeadLetter]) and [WithOnError]; Close drains the queue.
//
// On the consuming side, a body that does not decode (malformed, an event
// name the registry does not know, an invalid event) is poison: the handler
// returns an error matching broker.ErrInvalid, and the subscriber
// dead-letters it at once. Your own event types decode once registered in
// an events.Registry given to [WithRegistry].
//
// # Shutdown
//
// Close the Forwarder before the broker it publishes to: Forwarder.Close
// drains its queue into the broker, then the broker's Close flushes.
package bridge
