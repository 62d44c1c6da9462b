package kafka

import (
	"slices"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/domainevents/domainevents/broker"
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

// With a CloudEvents source a record carries sdk-go's Kafka binding
// headers after this library's own, and a message header the binding
// writes is not sent twice.
func TestRecordCloudEvents(t *testing.T) {
	b := &Broker{topic: "orders.events", opts: publisherOptions{ceSource: "/orders-service"}}
	m := broker.Message{ID: "id-1", Name: "order.created", Key: "order-1", ContentType: broker.ContentTypeJSON, Body: []byte(`{}`),
		Time:    time.Date(2026, 11, 30, 10, 15, 30, 123_000_000, time.UTC),
		Headers: map[string]string{"ce_id": "stale", "traceparent": "tp"}}
	pm := b.record(m, nil)
	var got []string
	for _, h := range pm.Headers {
		got = append(got, string(h.Key)+"="+string(h.Value))
	}
	want := []string{"event-name=order.created", "event-id=id-1", "content-type=application/json",
		"ce_id=id-1", "ce_source=/orders-service", "ce_specversion=1.0", "ce_type=order.created",
		"ce_time=2026-11-30T10:15:30.123Z", "ce_partitionkey=order-1", "traceparent=tp"}
	if !slices.Equal(got, want) {
		t.Errorf("headers\n got %q\nwant %q", got, want)
	}
	if k, _ := pm.Key.Encode(); string(k) != "order-1" {
		t.Errorf("record key %q, want the partition key order-1", k)
	}

	b.opts.ceSource = ""
	if pm := b.record(m, nil); len(pm.Headers) != 5 {
		t.Errorf("without a source: %d headers, want 5 (ours and the message's own)", len(pm.Headers))
	}
}

// A record in sdk-go's binary mode, with none of this library's headers,
// is read from its ce_ headers.
func TestDeliveryFromCloudEvents(t *testing.T) {
	m := &sarama.ConsumerMessage{Topic: "payments", Key: []byte("order-7"), Timestamp: time.Unix(1_800_000_000, 0), // when it was produced Value: []byte(`{"amount":"1.00"}`),
		Headers: []*sarama.RecordHeader{
			{Key: []byte("ce_specversion"), Value: []byte("1.0")},
			{Key: []byte("ce_id"), Value: []byte("e-7")},
			{Key: []byte("ce_source"), Value: []byte("/payments")},
			{Key: []byte("ce_type"), Value: []byte("payment.captured")},
			{Key: []byte("ce_time"), Value: []byte("2026-12-01T08:00:00.5Z")},
			{Key: []byte("content-type"), Value: []byte("application/json")},
		}}
	d := toDelivery(m, "billing")
	if d.ID != "e-7" || d.Name != "payment.captured" || d.Key != "order-7" || d.ContentType != "application/json" ||
		!d.Time.Equal(time.Date(2026, 12, 1, 8, 0, 0, 500_000_000, time.UTC)) || d.Headers["ce_source"] != "/payments" {
		t.Errorf("toDelivery = %+v", d.Message)
	}
}
