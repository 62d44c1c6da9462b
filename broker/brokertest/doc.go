// Package brokertest holds the conformance suite every broker.Broker
// adapter runs from its own TestConformance, and [Recorder], an in-memory
// broker for unit tests of code that publishes. It uses the standard
// testing package only, so importing it adds no test dependency.
//
// An adapter's test gives [Run] a function that makes a fresh [Harness]
// for each test of the suite (its own destination, cleaned up with
// t.Cleanup):
//
//	func TestConformance(t *testing.T) {
//		brokertest.Run(t, func(t *testing.T) brokertest.Harness {
//			dest := newDestination(t)
//			return brokertest.Harness{
//				Broker:  openAdapter(t, dest),
//				Receive: readBackFrom(t, dest),
//			}
//		})
//	}
//
// A capability the harness lacks (a nil Receive, Subscribe, Unroutable,
// Disconnect, Silence, SubscribeKeyOrdered or CutSubscriber) makes the
// cases that need it skip with a reason; nothing passes silently.
package brokertest
