package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/bridge"
	"github.com/domainevents/domainevents/broker/memory"
	"github.com/domainevents/domainevents/events"
	"github.com/domainevents/domainevents/outbox"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// The billing handlers, behind the inbox, on the in-memory broker: an
// order is billed once however often its event is delivered, and its
// cancellation voids the invoice.
func TestBillsOnceOnTheMemoryBroker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, dialect, err := openDB("")
	require.NoError(t, err)
	defer db.Close()
	store, err := outbox.New(db, dialect)
	require.NoError(t, err)
	require.NoError(t, store.Migrate(ctx))
	var out bytes.Buffer
	bill, err := newBilling(ctx, db, dialect, &out, 0)
	require.NoError(t, err)
	h, err := bridge.NewHandler(bill.bus)
	require.NoError(t, err)
	in, err := outbox.NewInbox(store, "billing-test", outbox.WithInboxLogger(quiet()))
	require.NoError(t, err)
	defer in.Close(ctx)

	b, err := memory.New(memory.WithLogger(quiet()))
	require.NoError(t, err)
	defer b.Close(ctx)
	sub, err := b.Subscribe("billing", in.Handler(h), memory.WithConcurrency(4))
	require.NoError(t, err)

	fwd, err := bridge.NewForwarder(b)
	require.NoError(t, err)
	created := events.OrderCreated{OrderID: "o-1", UserID: "u-1", Status: events.StatusCreated,
		Items: []events.OrderItem{{ProductID: "sku-1", Quantity: 1, Price: events.Cents(12550)}}, Total: events.Cents(12550)}
	require.NoError(t, fwd.Forward(ctx, created))
	require.NoError(t, b.Publish(ctx, b.Messages()[0]), "the same event again: a redelivery")
	require.NoError(t, fwd.Forward(ctx, events.OrderCancelled{OrderID: "o-1", UserID: "u-1",
		OldStatus: events.StatusCreated, NewStatus: events.StatusCancelled}))
	require.NoError(t, sub.WaitQuiet(ctx))

	assert.Equal(t, "invoice for order o-1: 125.50", strings.TrimSpace(out.String()), "billed once")
	var status string
	require.NoError(t, db.QueryRowContext(ctx, "SELECT status FROM billing_example_invoices WHERE order_id = 'o-1'").Scan(&status))
	assert.Equal(t, "void", status)
	assert.Equal(t, 3, sub.Stats().Handled, "the duplicate was acknowledged too")
}

func TestDisabledBrokerIsAClearError(t *testing.T) {
	t.Setenv("MESSAGE_BROKER_ENABLED", "false")
	t.Setenv("DATABASE_URL", "")
	err := run(context.Background(), quiet(), io.Discard, 1)
	assert.ErrorContains(t, err, "MESSAGE_BROKER_ENABLED")
}
