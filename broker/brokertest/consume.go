package brokertest

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/domainevents/domainevents/broker"
)

// consumed collects deliveries by id, safe for concurrent handlers.
type consumed struct {
	mu  sync.Mutex
	got map[string][]broker.Delivery
}

func (c *consumed) add(d broker.Delivery) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.got == nil {
		c.got = map[string][]broker.Delivery{}
	}
	c.got[d.ID] = append(c.got[d.ID], d)
	return len(c.got[d.ID])
}

func (c *consumed) has(ids []string, times int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		if len(c.got[id]) < times {
			return false
		}
	}
	return true
}

func (c *consumed) of(id string) []broker.Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]broker.Delivery(nil), c.got[id]...)
}

func subscribe(t *testing.T, h Harness, handler broker.Handler) {
	t.Helper()
	if h.Subscribe == nil {
		t.Skip("consuming is not supported by this adapter")
	}
	sub, err := h.Subscribe(handler)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), h.Timeout)
		defer cancel()
		if err := sub.Close(ctx); err != nil {
			t.Errorf("subscriber Close: %v", err)
		}
		if err := sub.Close(ctx); err != nil {
			t.Errorf("second subscriber Close: %v, want nil", err)
		}
	})
}

func publish(t *testing.T, h Harness, m broker.Message) {
	t.Helper()
	if err := h.Broker.Publish(ctxFor(t, h), m); err != nil {
		t.Fatalf("Publish: %v", err)
	}
}

func testConsumeRoundTrip(t *testing.T, h Harness) {
	var c consumed
	subscribe(t, h, func(_ context.Context, d broker.Delivery) error { c.add(d); return nil })
	var ids []string
	first := NewMessage("order.created")
	first.Headers = map[string]string{"trace": "t-1", broker.HeaderSeq: "7"}
	first.Body = []byte{0, 1, 2, 0xff}
	for i := range 50 {
		m := NewMessage("order.created")
		if i == 0 {
			m = first
		}
		publish(t, h, m)
		ids = append(ids, m.ID)
	}
	WaitFor(t, h.Timeout, "every message consumed", func() bool { return c.has(ids, 1) })
	d := c.of(first.ID)[0]
	switch {
	case !bytes.Equal(d.Body, first.Body):
		t.Errorf("body %q, want %q", d.Body, first.Body)
	case d.Headers["trace"] != "t-1":
		t.Errorf("header trace %q, want t-1", d.Headers["trace"])
	case d.Name != "order.created" || d.ID != first.ID:
		t.Errorf("name %q id %q, want order.created %s", d.Name, d.ID, first.ID)
	case d.Key != first.Key:
		t.Errorf("key %q, want %q (the aggregate key travels with the message)", d.Key, first.Key)
	case d.Seq != 7:
		t.Errorf("seq %d, want 7 (the %s header)", d.Seq, broker.HeaderSeq)
	case d.Attempt != 1:
		t.Errorf("attempt %d, want 1", d.Attempt)
	case d.Source == "":
		t.Error("Source is empty")
	}
}

func testConsumeRetry(t *testing.T, h Harness) {
	var c consumed
	subscribe(t, h, func(_ context.Context, d broker.Delivery) error {
		if c.add(d) == 1 {
			return errors.New("transient failure")
		}
		return nil
	})
	m := NewMessage("order.created")
	publish(t, h, m)
	WaitFor(t, h.Timeout, "the message handled twice", func() bool { return c.has([]string{m.ID}, 2) })
	got := c.of(m.ID)
	if got[0].Attempt != 1 || got[1].Attempt != 2 {
		t.Errorf("attempts %d, %d; want 1, 2 (the retry knows its attempt number)", got[0].Attempt, got[1].Attempt)
	}
	if !bytes.Equal(got[1].Body, m.Body) {
		t.Errorf("the retry's body %q, want %q", got[1].Body, m.Body)
	}
}

// testConsumeInvalid: a handler error matching ErrInvalid (poison) is
// dead-lettered at once, never retried; the messages after it still flow.
func testConsumeInvalid(t *testing.T, h Harness) {
	var c consumed
	poison := NewMessage("order.created")
	subscribe(t, h, func(_ context.Context, d broker.Delivery) error {
		c.add(d)
		if d.ID == poison.ID {
			return &broker.Error{Op: "test: decode", Kind: broker.ErrInvalid, Err: errors.New("not an event")}
		}
		return nil
	})
	publish(t, h, poison)
	next := NewMessage("order.created")
	publish(t, h, next)
	WaitFor(t, h.Timeout, "the message after the poison handled", func() bool { return c.has([]string{next.ID}, 1) })
	if h.DeadLetters != nil {
		got, err := h.DeadLetters(ctxFor(t, h), []string{poison.ID})
		d, ok := got[poison.ID]
		if !ok {
			t.Fatalf("the poison message never reached the dead letters: %v", err)
		}
		if d.Headers[broker.HeaderDeadLetterCategory] != broker.CategoryInvalid {
			t.Errorf("dead letter category %q, want %q", d.Headers[broker.HeaderDeadLetterCategory], broker.CategoryInvalid)
		}
	}
	if n := len(c.of(poison.ID)); n != 1 {
		t.Errorf("the poison message was handled %d times, want once", n)
	}
}

// testConsumePanic: a panicking handler is a failure like any other: the
// delivery is retried, and the subscriber lives on.
func testConsumePanic(t *testing.T, h Harness) {
	var c consumed
	subscribe(t, h, func(_ context.Context, d broker.Delivery) error {
		if c.add(d) == 1 {
			panic("handler bug")
		}
		return nil
	})
	m := NewMessage("order.created")
	publish(t, h, m)
	WaitFor(t, h.Timeout, "the message handled again after the panic", func() bool { return c.has([]string{m.ID}, 2) })
	if got := c.of(m.ID); got[1].Attempt != 2 {
		t.Errorf("attempt %d after the panic, want 2", got[1].Attempt)
	}
}

// testConsumePanicReason: a handler that keeps panicking is dead-lettered
// once its attempts are used up; the reason header is one line of at most
// broker.MaxDeadLetterReason bytes naming the panic's value, without the
// stack (which the subscriber logs instead).
func testConsumePanicReason(t *testing.T, h Harness) {
	if h.DeadLetters == nil {
		t.Skip("reading dead letters back is not supported by this harness")
	}
	subscribe(t, h, func(context.Context, broker.Delivery) error {
		panic(strings.Repeat("handler bug\n", 100))
	})
	m := NewMessage("order.created")
	publish(t, h, m)
	got, err := h.DeadLetters(ctxFor(t, h), []string{m.ID})
	d, ok := got[m.ID]
	if !ok {
		t.Fatalf("the message whose handler kept panicking never reached the dead letters: %v", err)
	}
	r := d.Headers[broker.HeaderDeadLetterReason]
	if !strings.Contains(r, "handler bug") || strings.ContainsAny(r, "\r\n") || len(r) > broker.MaxDeadLetterReason ||
		strings.Contains(r, "goroutine ") {
		t.Errorf("dead-letter reason (%d bytes) %q: want one line of at most %d bytes naming the panic, without its stack",
			len(r), r, broker.MaxDeadLetterReason)
	}
	if c := d.Headers[broker.HeaderDeadLetterCategory]; c != broker.CategoryHandlerFailed {
		t.Errorf("dead letter category %q, want %q", c, broker.CategoryHandlerFailed)
	}
}
