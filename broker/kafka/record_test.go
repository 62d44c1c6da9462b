package kafka

import (
	"testing"

	"github.com/IBM/sarama"
)

func TestDeliverySource(t *testing.T) {
	m := &sarama.ConsumerMessage{Topic: "orders.events", Partition: 12, Offset: 1234567890123}
	if got, want := source(m), "topic orders.events[12]@1234567890123"; got != want {
		t.Fatalf("source = %q, want %q", got, want)
	}
	if n := testing.AllocsPerRun(100, func() { _ = source(m) }); n > 1 {
		t.Errorf("source allocates %.0f times, want 1", n)
	}
}
