package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/outbox"
)

// A payment reminder stored with its order's creation, to be published
// a moment later: the relay publishes it at its time, not before. (Through
// the bus: eventbus.Publish(outbox.WithDeliverAt(ctx, at), bus, reminder).)
func ExampleWithDeliverAt() {
	dir, _ := os.MkdirTemp("", "schedule-example-")
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "orders.db")+"?_pragma=busy_timeout(5000)&_txlock=immediate")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	b := make(announcing) // in a service: rabbitmq.New or kafka.New
	store, _ := outbox.New(db, outbox.SQLite)
	if err := store.Migrate(ctx); err != nil {
		log.Fatal(err)
	}
	relay, err := outbox.NewRelay(store, b)
	if err != nil {
		log.Fatal(err)
	}
	defer relay.Close(ctx)

	orderID := "6f1e7c2a-0d7b-4c55-9a53-51a1a2d3e4f5"
	remindAt := time.Now().Add(100 * time.Millisecond) // in a service: 30 minutes
	err = store.Transact(ctx, func(ctx context.Context, tx *sql.Tx) error {
		created := broker.Message{ID: "e-1", Name: "order.created", Key: orderID, Body: []byte(`{}`)}
		if err := store.Publish(ctx, created); err != nil {
			return err
		}
		reminder := broker.Message{ID: "e-2", Name: "order.payment_reminder", Key: orderID, Body: []byte(`{}`)}
		return store.Publish(outbox.WithDeliverAt(ctx, remindAt), reminder)
	})
	if err != nil {
		log.Fatal(err)
	}
	got := []string{<-b, <-b}
	fmt.Println("reminder on time:", !time.Now().Before(remindAt))
	slices.Sort(got)
	for _, g := range got {
		fmt.Println(g)
	}
	// Output:
	// reminder on time: true
	// order.created of order 6f1e7c2a-0d7b-4c55-9a53-51a1a2d3e4f5
	// order.payment_reminder of order 6f1e7c2a-0d7b-4c55-9a53-51a1a2d3e4f5
}
