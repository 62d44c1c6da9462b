package noop_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/noop"
)

func TestConformance(t *testing.T) {
	brokertest.Run(t, func(*testing.T) brokertest.Harness { return brokertest.Harness{Broker: noop.New()} })
}

func TestCountsAccepted(t *testing.T) {
	b := noop.New()
	for range 3 {
		assert.NoError(t, b.Publish(context.Background(), brokertest.NewMessage("order.created")))
	}
	assert.Error(t, b.Publish(context.Background(), broker.Message{}))
	assert.Equal(t, int64(3), b.Published())
}

func Example() {
	b := noop.New()
	err := b.Publish(context.Background(), broker.Message{ID: "e-1", Name: "order.created", Body: []byte(`{}`)})
	fmt.Println(err, b.Published())
	_ = b.Close(context.Background())
	err = b.Publish(context.Background(), broker.Message{ID: "e-2", Name: "order.created"})
	fmt.Println(err)
	// Output:
	// <nil> 1
	// noop: publish: broker closed
}
