package events_test

import (
	"fmt"
	"time"

	"github.com/domainevents/domainevents/events"
)

func ExampleEncode() {
	// Fixed id and time for the example; events.New uses a random UUID and now.
	s := events.Stamper{
		NewID: func() string { return "6f1c2a9e-3b8d-4c1e-9a57-2d4f8b0e1c33" },
		Now:   func() time.Time { return time.Date(2026, 11, 30, 10, 15, 30, 0, time.UTC) },
	}
	env := s.Stamp(events.OrderCreated{
		OrderID: "0b8f5e2c-7a41-4d2b-9c3e-5f6a7b8c9d0e",
		UserID:  "a3d9c1f0-2b4e-4f6a-8c7d-9e0f1a2b3c4d",
		Items:   []events.OrderItem{{ProductID: "sku-1001", Quantity: 2, Price: events.Cents(627500)}},
		Total:   events.Cents(1255000),
		Status:  events.StatusCreated,
	})
	body, err := events.Encode(env)
	fmt.Println(string(body), err)
	// Output:
	// {"name":"order.created","id":"6f1c2a9e-3b8d-4c1e-9a57-2d4f8b0e1c33","timestamp":"2026-11-30T10:15:30.000Z","data":{"orderId":"0b8f5e2c-7a41-4d2b-9c3e-5f6a7b8c9d0e","userId":"a3d9c1f0-2b4e-4f6a-8c7d-9e0f1a2b3c4d","items":[{"productId":"sku-1001","quantity":2,"price":6275.00}],"total":12550.00,"status":"created"}} <nil>
}

func ExampleDecode() {
	body := []byte(`{"name":"order.cancelled","id":"c4e5f6a7-b8c9-4d0e-9f1a-2b3c4d5e6f70","timestamp":"2026-11-30T10:17:45.999Z",
		"data":{"orderId":"o-1","userId":"u-1","oldStatus":"created","newStatus":"cancelled"}}`)
	env, err := events.Decode(body)
	if err != nil {
		fmt.Println(err)
		return
	}
	switch e := env.Data.(type) {
	case events.OrderCancelled:
		fmt.Println("cancelled", e.OrderID, "was", e.OldStatus, "at", env.Timestamp.Format(time.RFC3339))
	}

	_, err = events.Decode([]byte(`{"name":"order.cancelled","id":"x","timestamp":"2026-11-30T10:17:45Z",
		"data":{"orderId":"o-1","userId":"u-1","oldStatus":"created","newStatus":"in_progress"}}`))
	fmt.Println(err)
	// Output:
	// cancelled o-1 was created at 2026-11-30T10:17:45Z
	// order.cancelled: data.newStatus "in_progress": must be cancelled
}

func ExampleParseMoney() {
	m, err := events.ParseMoney("125.5")
	fmt.Println(m, m.MinorUnits(), err)
	_, err = events.ParseMoney("0.001")
	fmt.Println(err)
	// Output:
	// 125.50 12550 <nil>
	// money "0.001": more than two decimals
}
