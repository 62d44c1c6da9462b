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

// A consumed record costs the allocations of what differs per record (id,
// key, source), not of the name and content type every record repeats.
func TestDeliveryAllocations(t *testing.T) {
	m := &sarama.ConsumerMessage{Topic: "orders.events", Partition: 1, Offset: 42, Key: []byte("order-1"), Value: []byte(`{}`),
		Headers: []*sarama.RecordHeader{
			{Key: []byte(HeaderName), Value: []byte("order.created")},
			{Key: []byte(HeaderID), Value: []byte("6f1c2a9e-3b8d-4c1e-9a57-2d4f8b0e1c33")},
			{Key: []byte(HeaderContentType), Value: []byte("application/json")},
		}}
	d := toDelivery(m, "billing")
	if d.Name != "order.created" || d.ContentType != "application/json" || d.ID != "6f1c2a9e-3b8d-4c1e-9a57-2d4f8b0e1c33" || d.Key != "order-1" {
		t.Fatalf("toDelivery = %+v", d.Message)
	}
	if n := testing.AllocsPerRun(100, func() { _ = toDelivery(m, "billing") }); n > 3 {
		t.Errorf("toDelivery allocates %.0f times, want at most 3 (id, key, source)", n)
	}
}
