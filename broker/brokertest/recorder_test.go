package brokertest_test

import (
	"errors"
	"testing"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
)

// The recorder passes the suite it is measured against.
func TestRecorderConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) brokertest.Harness {
		r := &brokertest.Recorder{}
		return brokertest.Harness{
			Broker:  r,
			Receive: brokertest.RecorderReceiver(r),
			Unroutable: func() (broker.Broker, error) {
				return &brokertest.Recorder{Fail: func(broker.Message) error {
					return &broker.Error{Op: "recorder: publish", Kind: broker.ErrUnroutable, Err: errors.New("nowhere to go")}
				}}, nil
			},
		}
	})
}
