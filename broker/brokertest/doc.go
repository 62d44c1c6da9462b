// Package brokertest holds the conformance suite every [broker.Broker]
// adapter runs from its own TestConformance, and [Recorder], an in-memory
// broker for unit tests of code that publishes.
//
// An adapter's test:
//
//	func TestConformance(t *testing.T) {
//		brokertest.Run(t, brokertest.Harness{
//			New: func(t *testing.T) (broker.Broker, brokertest.Receiver) {
//				b := newAdapter(t)
//				return b, readBackFrom(t, queue)
//			},
//		})
//	}
//
// A capability the adapter lacks makes the cases that need it skip with a
// reason (a nil Receiver skips the read-back cases); nothing passes silently.
package brokertest
