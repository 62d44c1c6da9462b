package contract_test

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/events"
	"github.com/domainevents/domainevents/events/contract"
)

// PaymentCaptured is a service's own event (as in examples/ownevents). The
// jsonschema tags say what its Validate requires; events.Money describes
// itself (contract.Schemer).
type PaymentCaptured struct {
	PaymentID string       `json:"paymentId" jsonschema:"required,minLength=1"`
	OrderID   string       `json:"orderId" jsonschema:"required,minLength=1"`
	Amount    events.Money `json:"amount" jsonschema:"required,minimum=0.01"`
	Method    *string      `json:"method,omitempty"`
	Tags      []string     `json:"tags"`
}

// EventName returns "payment.captured".
func (PaymentCaptured) EventName() string { return "payment.captured" }

// AggregateID returns the order id.
func (e PaymentCaptured) AggregateID() string { return e.OrderID }

// Validate reports the first missing field.
func (e PaymentCaptured) Validate() error {
	switch {
	case e.PaymentID == "":
		return &events.ValidationError{Field: "paymentId", Problem: "required"}
	case e.OrderID == "":
		return &events.ValidationError{Field: "orderId", Problem: "required"}
	case e.Amount.MinorUnits() <= 0:
		return &events.ValidationError{Field: "amount", Value: e.Amount.String(), Problem: "must be positive"}
	}
	return nil
}

// A service with events of its own writes their contracts from its own
// code, with the registry its consumers decode with (the domainevents
// command only knows the order events).
func Example() {
	reg := &events.Registry{} // or events.NewRegistry(), to add the order events
	if err := events.Register[PaymentCaptured](reg); err != nil {
		panic(err)
	}
	files, err := contract.JSONSchemas(reg)
	if err != nil {
		panic(err)
	}
	api, err := contract.AsyncAPIFile(reg, contract.Service{
		Title:   "payments-service",
		Version: "1.2.0",
		Broker:  broker.Config{Type: broker.Kafka, Topic: "payments.events"},
	})
	if err != nil {
		panic(err)
	}
	dir, err := os.MkdirTemp("", "contracts")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	if err := contract.WriteFiles(dir, append(files, api)...); err != nil {
		panic(err)
	}
	for _, f := range append(files, api) {
		fmt.Println(f.Name)
	}
	// Output:
	// payment.captured.schema.json
	// asyncapi.json
}

func ExampleEventSchema() {
	s, err := contract.EventSchema("payment.captured", reflect.TypeFor[PaymentCaptured]())
	if err != nil {
		panic(err)
	}
	data, _ := json.MarshalIndent(s["properties"].(map[string]any)["data"], "", "  ")
	fmt.Println(string(data))
	// Output:
	// {
	//   "properties": {
	//     "amount": {
	//       "description": "An exact amount written with two decimals (12550.00); at most two decimals, never negative.",
	//       "examples": [
	//         12550.00
	//       ],
	//       "minimum": 0.01,
	//       "type": "number"
	//     },
	//     "method": {
	//       "type": [
	//         "string",
	//         "null"
	//       ]
	//     },
	//     "orderId": {
	//       "minLength": 1,
	//       "type": "string"
	//     },
	//     "paymentId": {
	//       "minLength": 1,
	//       "type": "string"
	//     },
	//     "tags": {
	//       "items": {
	//         "type": "string"
	//       },
	//       "type": [
	//         "array",
	//         "null"
	//       ]
	//     }
	//   },
	//   "required": [
	//     "paymentId",
	//     "orderId",
	//     "amount"
	//   ],
	//   "type": "object"
	// }
}
