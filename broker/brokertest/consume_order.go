package brokertest

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/domainevents/domainevents/broker"
)

// keyJournal checks a key-ordered subscriber, counting by event id: every
// event handled, each key's first handlings in sequence order, never two
// handlers of one key at once.
type keyJournal struct {
	mu         sync.Mutex
	running    map[string]int
	last       map[string]int64
	handled    map[string]int
	inversions int
	overlaps   int
	calls      atomic.Int64
	failed     atomic.Int64
}

func (j *keyJournal) handler(_ context.Context, d broker.Delivery) error {
	j.calls.Add(1)
	j.mu.Lock()
	j.running[d.Key]++
	if j.running[d.Key] > 1 {
		j.overlaps++
	}
	j.mu.Unlock()
	h := fnv.New32a()
	_, _ = h.Write([]byte(d.ID))
	fail := d.Attempt == 1 && h.Sum32()%20 == 0 // one in twenty first attempts
	j.mu.Lock()
	defer j.mu.Unlock()
	j.running[d.Key]--
	if fail {
		j.failed.Add(1)
		return errors.New("transient failure")
	}
	j.handled[d.ID]++
	if j.handled[d.ID] == 1 {
		if d.Seq < j.last[d.Key] {
			j.inversions++
		}
		j.last[d.Key] = max(j.last[d.Key], d.Seq)
	}
	return nil
}

func (j *keyJournal) missing(ids []string) int {
	j.mu.Lock()
	defer j.mu.Unlock()
	n := 0
	for _, id := range ids {
		if j.handled[id] == 0 {
			n++
		}
	}
	return n
}

// testConsumeKeyOrder: 40 keys × 25 events, each key's published in
// sequence (Message.Key, broker.HeaderSeq), keys interleaved; a subscriber
// running handlers concurrently by key; one in twenty first attempts
// failing; the subscriber's connection cut halfway. Every event is
// handled, each key's first handlings in sequence, never two handlers of a
// key at once.
func testConsumeKeyOrder(t *testing.T, h Harness) {
	switch {
	case h.SubscribeKeyOrdered == nil:
		t.Skip("key-ordered concurrent consuming is not supported by this adapter")
	case h.CutSubscriber == nil:
		t.Skip("cutting the subscriber's connection is not supported by this harness")
	}
	j := &keyJournal{running: map[string]int{}, last: map[string]int64{}, handled: map[string]int{}}
	sub, err := h.SubscribeKeyOrdered(j.handler)
	if err != nil {
		t.Fatalf("SubscribeKeyOrdered: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), h.Timeout)
		defer cancel()
		if err := sub.Close(ctx); err != nil {
			t.Errorf("subscriber Close: %v", err)
		}
	})
	const keys, events = 40, 25
	var ids []string
	ctx := ctxFor(t, h)
	run := NewMessage("x").ID[:8] // this test's keys
	for e := range events {
		for k := range keys {
			m := NewMessage("order.status.updated")
			m.Key = fmt.Sprintf("order-%s-%d", run, k)
			m.Headers = map[string]string{broker.HeaderSeq: strconv.Itoa(e + 1)}
			if err := h.Broker.Publish(ctx, m); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			ids = append(ids, m.ID)
		}
		if e == events/2 {
			WaitFor(t, h.Timeout, "consuming progress", func() bool { return j.calls.Load() >= int64(keys*events/4) })
			h.CutSubscriber()
		}
	}
	WaitFor(t, h.Timeout, "every event handled", func() bool { return j.missing(ids) == 0 })
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.inversions > 0 || j.overlaps > 0 {
		t.Errorf("%d keys × %d events, %d first attempts failed, a connection cut: %d per-key inversions, %d times two handlers of one key at once",
			keys, events, j.failed.Load(), j.inversions, j.overlaps)
	}
	if j.failed.Load() == 0 {
		t.Error("no first attempt failed: the test did not test retries")
	}
}
