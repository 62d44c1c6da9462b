package deadletter_test

import (
	"context"
	"fmt"
	"os"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/deadletter"
)

// Spool what could not be published, list it, replay it once the broker is
// back.
func ExampleSpool() {
	dir, _ := os.MkdirTemp("", "spool")
	defer os.RemoveAll(dir)
	spool, err := deadletter.OpenSpool(dir)
	if err != nil {
		panic(err)
	}
	defer spool.Close()
	ctx := context.Background()
	for _, id := range []string{"e-1", "e-2"} {
		_ = spool.Put(ctx, broker.DeadLetter{Message: broker.Message{ID: id, Name: "order.created", Body: []byte(`{}`)},
			Reason: "broker unavailable", Category: "unavailable", Attempts: 5})
	}
	rep, _ := spool.Scan(func(d broker.DeadLetter) error {
		fmt.Println(d.Message.ID, d.Reason)
		return nil
	})
	fmt.Println(rep.Entries, "entries,", len(rep.Torn), "torn")

	back := &brokertest.Recorder{} // the broker, back up
	res, err := spool.Replay(ctx, back, deadletter.ReplayOptions{})
	fmt.Println("replayed", res.Published, "of", res.Total, err)
	fmt.Println("left:", spool.Len(), "bytes")
	// Output:
	// e-1 broker unavailable
	// e-2 broker unavailable
	// 2 entries, 0 torn
	// replayed 2 of 2 <nil>
	// left: 0 bytes
}
