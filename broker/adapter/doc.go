// Package adapter is for the authors of broker adapters (broker/rabbitmq,
// broker/kafka, or your own), not for applications: the small pieces every
// adapter needs to keep the [broker] contract the same way.
//
//   - [Wrap] turns a classified native error into a *broker.Error, letting
//     context errors pass through unwrapped as the contract requires.
//   - [CallHandler] runs a [broker.Handler], turning a panic into an error
//     (which is retried like any other handler failure) whose text is one
//     line, and logging the panic's stack once.
//   - [SeqOf] reads a delivery's place in its key's sequence from the
//     broker.HeaderSeq header.
//   - [Outcome] decides what a subscriber does with a failed delivery: retry
//     it, or dead-letter it now ([broker.Permanent] errors, or the last
//     attempt); [DeadLetterOf] builds the dead letter with the category and
//     the first and last failure times.
//
// An adapter proves it keeps the contract by running broker/brokertest's
// conformance suite from its own tests.
package adapter
