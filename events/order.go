package events

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// Event names: the stable strings on the wire, used as RabbitMQ routing keys
// and Kafka headers. Never derived from Go type names.
const (
	NameOrderCreated       = "order.created"
	NameOrderStatusUpdated = "order.status.updated"
	NameOrderCancelled     = "order.cancelled"
)

// Event is a domain event: it has a stable name, the key of the aggregate it
// belongs to (events with the same key keep their order on Kafka), and can
// check itself.
type Event interface {
	// EventName returns the stable wire name, e.g. "order.created".
	EventName() string
	// AggregateID returns the id of the entity the event is about (the order id).
	AggregateID() string
	// Validate reports the first problem with the event as a *ValidationError.
	Validate() error
}

// OrderStatus is the state of an order. It is a string so that statuses can
// be added; [OrderStatus.Known] lists what validation accepts today.
type OrderStatus string

// The known order statuses.
const (
	StatusCreated    OrderStatus = "created"
	StatusInProgress OrderStatus = "in_progress"
	StatusCancelled  OrderStatus = "cancelled"
)

// knownStatuses is the one place to add a status.
var knownStatuses = [...]OrderStatus{StatusCreated, StatusInProgress, StatusCancelled}

// Known reports whether s is one of the statuses this version knows.
func (s OrderStatus) Known() bool {
	for _, k := range knownStatuses {
		if s == k {
			return true
		}
	}
	return false
}

// JSONSchema describes an OrderStatus on the wire, for the JSON Schema
// documents of package
// [github.com/domainevents/domainevents/events/contract]: one of the known
// statuses, as validation requires.
func (OrderStatus) JSONSchema() map[string]any {
	enum := make([]any, len(knownStatuses))
	for i, s := range knownStatuses {
		enum[i] = string(s)
	}
	return map[string]any{"type": "string", "enum": enum}
}

// OrderItem is one line of an order, written as
// {"productId","quantity","price"} (the shape the README documents).
type OrderItem struct {
	// ProductID identifies the product; required.
	ProductID string `json:"productId" jsonschema:"required,minLength=1"`
	// Quantity is how many units; at least 1.
	Quantity int `json:"quantity" jsonschema:"required,minimum=1"`
	// Price is the unit price.
	Price Money `json:"price"`
}

// OrderCreated is published when an order is created ("order.created").
type OrderCreated struct {
	// OrderID identifies the order and is the event's aggregate id (the
	// Kafka key, the per-key order of the outbox); required.
	OrderID string `json:"orderId" jsonschema:"required,minLength=1,format=uuid"`
	// UserID is the customer who placed the order; required.
	UserID string `json:"userId" jsonschema:"required,minLength=1,format=uuid"`
	// Items are the order's lines.
	Items []OrderItem `json:"items"`
	// Total is what the order costs; not negative.
	Total Money `json:"total"`
	// Status is the order's status at creation, one of the known ones.
	Status OrderStatus `json:"status" jsonschema:"required"`
}

// OrderStatusUpdated is published when an order moves from one status to
// another ("order.status.updated").
type OrderStatusUpdated struct {
	// OrderID identifies the order and is the event's aggregate id;
	// required.
	OrderID string `json:"orderId" jsonschema:"required,minLength=1,format=uuid"`
	// UserID is the customer who placed the order; required.
	UserID string `json:"userId" jsonschema:"required,minLength=1,format=uuid"`
	// OldStatus is the status the order left; a known one.
	OldStatus OrderStatus `json:"oldStatus" jsonschema:"required"`
	// NewStatus is the status the order entered; a known one.
	NewStatus OrderStatus `json:"newStatus" jsonschema:"required"`
}

// OrderCancelled is published when an order is cancelled ("order.cancelled").
// NewStatus must be [StatusCancelled].
type OrderCancelled struct {
	// OrderID identifies the order and is the event's aggregate id;
	// required.
	OrderID string `json:"orderId" jsonschema:"required,minLength=1,format=uuid"`
	// UserID is the customer who placed the order; required.
	UserID string `json:"userId" jsonschema:"required,minLength=1,format=uuid"`
	// OldStatus is the status the order left; a known one.
	OldStatus OrderStatus `json:"oldStatus" jsonschema:"required"`
	// NewStatus is [StatusCancelled].
	NewStatus OrderStatus `json:"newStatus" jsonschema:"required,const=cancelled"`
}

// EventName returns "order.created".
func (OrderCreated) EventName() string { return NameOrderCreated }

// EventName returns "order.status.updated".
func (OrderStatusUpdated) EventName() string { return NameOrderStatusUpdated }

// EventName returns "order.cancelled".
func (OrderCancelled) EventName() string { return NameOrderCancelled }

// AggregateID returns the order id.
func (e OrderCreated) AggregateID() string { return e.OrderID }

// AggregateID returns the order id.
func (e OrderStatusUpdated) AggregateID() string { return e.OrderID }

// AggregateID returns the order id.
func (e OrderCancelled) AggregateID() string { return e.OrderID }

// MarshalJSON writes a nil Items as [] so consumers always see an array.
func (e OrderCreated) MarshalJSON() ([]byte, error) {
	type plain OrderCreated // no methods: no recursion
	if e.Items == nil {
		e.Items = []OrderItem{}
	}
	return json.Marshal(plain(e))
}

// Validate checks ids, status, total and every item.
func (e OrderCreated) Validate() error {
	if err := validateIDs(e.OrderID, e.UserID); err != nil {
		return err
	}
	if err := validateStatus("status", e.Status); err != nil {
		return err
	}
	if e.Total.cents < 0 {
		return invalid("total", e.Total.String(), "must not be negative")
	}
	for i, it := range e.Items {
		f := "items[" + strconv.Itoa(i) + "]."
		switch {
		case it.ProductID == "":
			return invalid(f+"productId", "", "required")
		case it.Quantity <= 0:
			return invalid(f+"quantity", strconv.Itoa(it.Quantity), "must be positive")
		case it.Price.cents < 0:
			return invalid(f+"price", it.Price.String(), "must not be negative")
		}
	}
	return nil
}

// Validate checks ids and both statuses.
func (e OrderStatusUpdated) Validate() error {
	if err := validateIDs(e.OrderID, e.UserID); err != nil {
		return err
	}
	if err := validateStatus("oldStatus", e.OldStatus); err != nil {
		return err
	}
	return validateStatus("newStatus", e.NewStatus)
}

// Validate checks ids and statuses; NewStatus must be "cancelled".
func (e OrderCancelled) Validate() error {
	if err := validateIDs(e.OrderID, e.UserID); err != nil {
		return err
	}
	if err := validateStatus("oldStatus", e.OldStatus); err != nil {
		return err
	}
	if e.NewStatus != StatusCancelled {
		return invalid("newStatus", string(e.NewStatus), "must be "+string(StatusCancelled))
	}
	return nil
}

func validateIDs(orderID, userID string) error {
	if orderID == "" {
		return invalid("orderId", "", "required")
	}
	if userID == "" {
		return invalid("userId", "", "required")
	}
	return nil
}

func validateStatus(field string, s OrderStatus) error {
	if s == "" {
		return invalid(field, "", "required")
	}
	if !s.Known() {
		return invalid(field, string(s), fmt.Sprintf("unknown status (known: %v)", knownStatuses))
	}
	return nil
}
