package brokertest_test

import (
	"testing"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
)

// The recorder passes the suite it is measured against.
func TestRecorderConformance(t *testing.T) {
	brokertest.Run(t, brokertest.Harness{
		New: func(t *testing.T) (broker.Broker, brokertest.Receiver) {
			r := &brokertest.Recorder{}
			return r, brokertest.RecorderReceiver(r)
		},
	})
}
