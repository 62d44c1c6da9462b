package retry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/deadletter"
	"github.com/domainevents/domainevents/broker/retry"
)

// A broker that is down: the message is retried, then lands in the spool.
func ExampleNew() {
	down := &brokertest.Recorder{Fail: func(broker.Message) error {
		return &broker.Error{Op: "rabbitmq: publish", Kind: broker.ErrUnavailable, Err: errors.New("connection refused")}
	}}
	dir, _ := os.MkdirTemp("", "spool")
	defer os.RemoveAll(dir)
	spool, _ := deadletter.OpenSpool(dir)
	defer spool.Close()

	b, _ := retry.New(down, retry.WithDeadLetter(spool), retry.WithMaxAttempts(3),
		retry.WithOnAttempt(func(a retry.Attempt) { fmt.Println("attempt", a.N, "failed:", broker.Category(a.Err)) }),
		retry.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	err := b.Publish(context.Background(), broker.Message{ID: "e-1", Name: "order.created", Body: []byte(`{}`)})
	fmt.Println("dead-lettered:", errors.Is(err, broker.ErrDeadLettered), "retryable:", broker.IsRetryable(err))
	_, _ = spool.Scan(func(d broker.DeadLetter) error {
		fmt.Println("spooled:", d.Message.ID, d.Category, d.Attempts, "attempts")
		return nil
	})
	// Output:
	// attempt 1 failed: unavailable
	// attempt 2 failed: unavailable
	// attempt 3 failed: unavailable
	// dead-lettered: true retryable: false
	// spooled: e-1 unavailable 3 attempts
}
