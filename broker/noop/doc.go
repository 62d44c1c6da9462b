// Package noop is a [broker.Broker] that accepts valid messages and discards
// them: what an application uses when MESSAGE_BROKER_ENABLED is false, and
// what unit tests use when they do not care where events go (use
// brokertest.Recorder when they do).
//
// It behaves like a real adapter at the edges: a done ctx returns ctx.Err(),
// an invalid message broker.ErrInvalid, a publish after Close
// broker.ErrClosed. It cannot be read back, so the conformance suite's
// round-trip cases skip for it.
package noop
