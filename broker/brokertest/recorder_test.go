package brokertest_test

import (
	"context"
	"errors"
	"testing"

	"github.com/domainevents/domainevents/bridge"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/events"
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

func TestRecorderEvents(t *testing.T) {
	r := &brokertest.Recorder{}
	fwd, err := bridge.NewForwarder(r)
	if err != nil {
		t.Fatal(err)
	}
	want := events.OrderCancelled{OrderID: "o-1", UserID: "u-1", OldStatus: events.StatusCreated, NewStatus: events.StatusCancelled}
	if err := fwd.Forward(context.Background(), want); err != nil {
		t.Fatal(err)
	}
	got, err := r.Events(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Data != want {
		t.Fatalf("Events() = %+v, want one envelope holding %+v", got, want)
	}
	if _, err := (&brokertest.Recorder{}).Events(&events.Registry{}); err != nil {
		t.Errorf("no messages, no error: %v", err)
	}
}
