package brokertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/domainevents/domainevents/broker"
)

// Receiver waits until the messages with the given ids have arrived at the
// broker (read back from a queue or topic) or ctx ends, and returns those it
// found, keyed by id. It may return messages other than those asked for.
type Receiver func(ctx context.Context, ids []string) (map[string]broker.Message, error)

// Harness is what one test of the suite gets from the adapter under test:
// fresh destinations, made by the function given to [Run] for that test
// alone, and cleaned up with t.Cleanup. Only Broker is required; a nil
// capability makes the cases that need it skip, saying so.
type Harness struct {
	// Broker publishes to this test's destination. The suite closes it.
	Broker broker.Broker
	// Receive reads back what Broker published.
	Receive Receiver
	// Subscribe starts a subscriber that consumes what Broker publishes,
	// handing deliveries to h. The suite closes it.
	Subscribe func(h broker.Handler) (broker.Subscriber, error)
	// DeadLetters reads back what the subscriber dead-lettered.
	DeadLetters Receiver
	// Unroutable returns a broker pointed at a destination that has nowhere
	// to put messages (RabbitMQ: an exchange with no queue bound; Kafka: a
	// topic that does not exist). The suite closes it.
	Unroutable func() (broker.Broker, error)
	// Disconnect cuts Broker off from the server so that it cannot hand
	// messages over (they wait for a connection); the returned function
	// reconnects it.
	Disconnect func() (reconnect func())
	// Silence lets Broker hand messages over but keeps the server's
	// confirms from reaching it; the returned function restores them (the
	// adapter may need a new connection, and re-sends).
	Silence func() (restore func())
	// SubscribeKeyOrdered starts a subscriber like Subscribe that runs
	// several handlers at once (RabbitMQ: WithConcurrency(16)), never two
	// deliveries of one key at once, each key's in order, retrying a
	// failed one in place. The suite closes it.
	SubscribeKeyOrdered func(h broker.Handler) (broker.Subscriber, error)
	// CutSubscriber cuts the connection of the subscriber SubscribeKeyOrdered
	// started, as a network failure would; it reconnects by itself.
	CutSubscriber func()
	// Timeout bounds each wait for a message to arrive, and each Publish
	// and Close that should succeed. Default a minute: wide enough for a
	// busy machine; the suite takes that long only when a case fails.
	Timeout time.Duration
}

// Run runs the conformance suite every adapter passes: publish and read
// back, headers and binary bodies unchanged, a cancelled ctx, invalid
// messages, an unroutable destination, a ctx that ends while Publish waits
// before and after the send, publish after Close, Close twice, concurrent
// publishers, a Close that lets in-flight publishes finish, and on the
// consuming side round trip (key and sequence number included), retry,
// poison not retried, a panicking handler retried, one that keeps
// panicking dead-lettered with a bounded one-line reason, and per-key
// order with concurrent handlers through transient failures and a
// reconnect.
//
// newHarness is called once per test, with that test's t, so that tests
// share nothing.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	t.Helper()
	cases := []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"PublishReceive", testPublishReceive},
		{"HeadersRoundTrip", testHeaders},
		{"BinaryBody", testBinaryBody},
		{"CancelledContext", testCancelledContext},
		{"InvalidMessage", testInvalidMessage},
		{"Unroutable", testUnroutable},
		{"ContextEndsBeforeSend", testCtxBeforeSend},
		{"ContextEndsAfterSend", testCtxAfterSend},
		{"PublishAfterClose", testPublishAfterClose},
		{"CloseTwice", testCloseTwice},
		{"ConcurrentPublishers", testConcurrentPublishers},
		{"CloseFlushesInFlight", testCloseFlushes},
		{"ConsumeRoundTrip", testConsumeRoundTrip},
		{"ConsumeRetriesFailedHandler", testConsumeRetry},
		{"ConsumeInvalidNotRetried", testConsumeInvalid},
		{"ConsumePanicRetried", testConsumePanic},
		{"ConsumePanicReasonIsOneLine", testConsumePanicReason},
		{"ConsumeKeyOrder", testConsumeKeyOrder},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			if h.Broker == nil {
				t.Fatal("the harness has no Broker")
			}
			if h.Timeout == 0 {
				h.Timeout = time.Minute
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), h.Timeout)
				defer cancel()
				if err := h.Broker.Close(ctx); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			c.fn(t, h)
		})
	}
}

// NewMessage returns a valid JSON message with a fresh id.
func NewMessage(name string) broker.Message {
	id := uuid.NewString()
	return broker.Message{
		ID:          id,
		Name:        name,
		Key:         "order-" + id[:8],
		Body:        []byte(fmt.Sprintf(`{"name":%q,"id":%q}`, name, id)),
		ContentType: broker.ContentTypeJSON,
		Time:        time.Now().UTC().Truncate(time.Second),
	}
}

func ctxFor(t *testing.T, h Harness) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), h.Timeout)
	t.Cleanup(cancel)
	return ctx
}

// receive waits for ids, failing the test if any is missing.
func receive(t *testing.T, h Harness, ids []string) map[string]broker.Message {
	t.Helper()
	if h.Receive == nil {
		t.Skip("reading messages back is not supported by this adapter")
	}
	got, err := h.Receive(ctxFor(t, h), ids)
	missing := 0
	for _, id := range ids {
		if _, ok := got[id]; !ok {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("of %d published messages, %d never arrived (%v)", len(ids), missing, err)
	}
	return got
}

// roundTrip publishes msgs and returns what arrived, requiring all of them.
func roundTrip(t *testing.T, h Harness, msgs ...broker.Message) map[string]broker.Message {
	t.Helper()
	if h.Receive == nil {
		t.Skip("reading messages back is not supported by this adapter")
	}
	ctx := ctxFor(t, h)
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		if err := h.Broker.Publish(ctx, m); err != nil {
			t.Fatalf("Publish %s: %v", m.ID, err)
		}
		ids[i] = m.ID
	}
	return receive(t, h, ids)
}

func testPublishReceive(t *testing.T, h Harness) {
	msgs := []broker.Message{NewMessage("order.created"), NewMessage("order.status.updated"), NewMessage("order.cancelled")}
	got := roundTrip(t, h, msgs...)
	for _, m := range msgs {
		g := got[m.ID]
		if g.Name != m.Name || !bytes.Equal(g.Body, m.Body) || g.ContentType != m.ContentType {
			t.Errorf("message %s: got name %q content type %q body %q, want %q %q %q",
				m.ID, g.Name, g.ContentType, g.Body, m.Name, m.ContentType, m.Body)
		}
	}
}

func testHeaders(t *testing.T, h Harness) {
	m := NewMessage("order.created")
	m.Headers = map[string]string{"trace-id": "abc-123", "empty": "", "unicode": "заказ ✓"}
	g := roundTrip(t, h, m)[m.ID]
	for k, v := range m.Headers {
		if got, ok := g.Headers[k]; !ok || got != v {
			t.Errorf("header %q: got %q (present %t), want %q", k, got, ok, v)
		}
	}
}

func testBinaryBody(t *testing.T, h Harness) {
	m := NewMessage("order.created")
	m.ContentType = "application/octet-stream"
	m.Body = make([]byte, 256)
	for i := range m.Body {
		m.Body[i] = byte(i)
	}
	empty := NewMessage("order.created")
	empty.Body = nil
	got := roundTrip(t, h, m, empty)
	if !bytes.Equal(m.Body, got[m.ID].Body) {
		t.Error("binary body changed")
	}
	if len(got[empty.ID].Body) != 0 {
		t.Errorf("empty body came back as %q", got[empty.ID].Body)
	}
}

func testCancelledContext(t *testing.T, h Harness) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := h.Broker.Publish(ctx, NewMessage("order.created"))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Publish with a cancelled ctx: got %v, want context.Canceled", err)
	}
	if broker.IsRetryable(err) {
		t.Errorf("a cancelled ctx is not retryable: %v", err)
	}
}

func testInvalidMessage(t *testing.T, h Harness) {
	for name, m := range map[string]broker.Message{
		"no id":   {Name: "order.created", Body: []byte("{}")},
		"no name": {ID: uuid.NewString(), Body: []byte("{}")},
	} {
		err := h.Broker.Publish(ctxFor(t, h), m)
		if !errors.Is(err, broker.ErrInvalid) || broker.IsRetryable(err) {
			t.Errorf("%s: got %v, want a non-retryable broker.ErrInvalid", name, err)
		}
	}
}

func testUnroutable(t *testing.T, h Harness) {
	if h.Unroutable == nil {
		t.Skip("an unroutable destination is not supported by this harness")
	}
	b, err := h.Unroutable()
	if err != nil {
		if errors.Is(err, broker.ErrUnroutable) {
			return // refused when connecting, as early as it can be
		}
		t.Fatalf("Unroutable: %v", err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	err = b.Publish(ctxFor(t, h), NewMessage("order.created"))
	if !errors.Is(err, broker.ErrUnroutable) || broker.IsRetryable(err) {
		t.Errorf("publish to an unroutable destination: got %v, want a non-retryable broker.ErrUnroutable", err)
	}
}

// testCtxBeforeSend: a publish that waits for a connection and gives up
// when its ctx ends was never sent: the error matches ErrUnavailable and
// the ctx error, and not ErrOutcomeUnknown; the message never arrives.
func testCtxBeforeSend(t *testing.T, h Harness) {
	if h.Disconnect == nil {
		t.Skip("cutting the adapter off is not supported by this harness")
	}
	reconnect := h.Disconnect()
	m := NewMessage("order.created")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err := h.Broker.Publish(ctx, m)
	cancel()
	if !errors.Is(err, broker.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, broker.ErrOutcomeUnknown) {
		t.Errorf("publish while disconnected: got %v, want ErrUnavailable and DeadlineExceeded, not ErrOutcomeUnknown", err)
	}
	reconnect()
	after := NewMessage("order.created")
	if err := h.Broker.Publish(ctxFor(t, h), after); err != nil {
		t.Fatalf("publish after reconnecting: %v", err)
	}
	if h.Receive != nil {
		got := receive(t, h, []string{after.ID})
		if _, ok := got[m.ID]; ok {
			t.Errorf("message %s was reported as not sent but arrived", m.ID)
		}
	}
}

// testCtxAfterSend: a publish whose ctx ends while it waits for the
// broker's confirm has an unknown outcome: the error matches
// ErrUnavailable, the ctx error and ErrOutcomeUnknown; the adapter keeps
// the message in flight, so it arrives once the confirms flow again.
func testCtxAfterSend(t *testing.T, h Harness) {
	if h.Silence == nil {
		t.Skip("withholding confirms is not supported by this harness")
	}
	restore := h.Silence()
	m := NewMessage("order.created")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err := h.Broker.Publish(ctx, m)
	cancel()
	if !errors.Is(err, broker.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, broker.ErrOutcomeUnknown) {
		t.Errorf("publish without a confirm: got %v, want ErrUnavailable, DeadlineExceeded and ErrOutcomeUnknown", err)
	}
	restore()
	if h.Receive != nil {
		receive(t, h, []string{m.ID}) // kept in flight and delivered: at least once
	}
}

func testPublishAfterClose(t *testing.T, h Harness) {
	if err := h.Broker.Close(ctxFor(t, h)); err != nil {
		t.Fatalf("Close: %v", err)
	}
	err := h.Broker.Publish(ctxFor(t, h), NewMessage("order.created"))
	if !errors.Is(err, broker.ErrClosed) || broker.IsRetryable(err) {
		t.Errorf("publish after Close: got %v, want a non-retryable broker.ErrClosed", err)
	}
}

func testCloseTwice(t *testing.T, h Harness) {
	if err := h.Broker.Close(ctxFor(t, h)); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := h.Broker.Close(ctxFor(t, h)); err != nil {
		t.Errorf("second Close: %v, want nil", err)
	}
}

func testConcurrentPublishers(t *testing.T, h Harness) {
	ctx := ctxFor(t, h)
	const publishers, each = 16, 25
	ids := make([]string, publishers*each)
	var wg sync.WaitGroup
	errs := make([]error, publishers)
	for p := range publishers {
		wg.Go(func() {
			for i := range each {
				m := NewMessage("order.created")
				ids[p*each+i] = m.ID
				if err := h.Broker.Publish(ctx, m); err != nil {
					errs[p] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if h.Receive != nil {
		receive(t, h, ids)
	}
}

// testCloseFlushes closes the broker while 200 publishes are in progress:
// each returns nil or ErrClosed, Close returns nil, and every message
// reported published arrives.
func testCloseFlushes(t *testing.T, h Harness) {
	ctx := ctxFor(t, h)
	const n = 200
	var (
		mu       sync.Mutex
		ok       []string
		closed   int
		other    []error
		finished atomic.Int32
	)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			m := NewMessage("order.created")
			err := h.Broker.Publish(ctx, m)
			finished.Add(1)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok = append(ok, m.ID)
			case errors.Is(err, broker.ErrClosed):
				closed++
			default:
				other = append(other, err)
			}
		})
	}
	WaitFor(t, h.Timeout, "some publishes to finish", func() bool { return finished.Load() >= 10 })
	if err := h.Broker.Close(ctx); err != nil {
		t.Fatalf("Close with publishes in flight: %v", err)
	}
	wg.Wait()
	if err := errors.Join(other...); err != nil {
		t.Fatalf("a publish racing Close returns nil or ErrClosed: %v", err)
	}
	if len(ok)+closed != n {
		t.Errorf("%d published + %d closed, want %d", len(ok), closed, n)
	}
	if h.Receive != nil {
		receive(t, h, ok)
	}
}

// RecorderReceiver returns a Receiver that reads r's recorded messages,
// polling until the ids are there or ctx ends.
func RecorderReceiver(r *Recorder) Receiver {
	return func(ctx context.Context, ids []string) (map[string]broker.Message, error) {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			got := map[string]broker.Message{}
			for _, m := range r.Messages() {
				got[m.ID] = m
			}
			all := true
			for _, id := range ids {
				if _, ok := got[id]; !ok {
					all = false
					break
				}
			}
			if all {
				return got, nil
			}
			select {
			case <-ctx.Done():
				return got, ctx.Err()
			case <-tick.C:
			}
		}
	}
}
