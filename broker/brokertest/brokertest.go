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
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
)

// Receiver waits until the messages with the given ids have arrived at the
// broker (read back from a queue or topic) or ctx ends, and returns those it
// found, keyed by id. It may return messages other than those asked for.
type Receiver func(ctx context.Context, ids []string) (map[string]broker.Message, error)

// Harness tells [Run] how to make the adapter under test.
type Harness struct {
	// New returns a fresh broker, and a Receiver when published messages can
	// be read back (nil otherwise: the round-trip cases then skip). The
	// harness cleans up with t.Cleanup; the suite closes the broker itself.
	New func(t *testing.T) (broker.Broker, Receiver)
	// Subscribe, when set, starts a subscriber that consumes what the
	// broker from New (in the same test) publishes, handing deliveries to
	// h. The consume cases skip without it.
	Subscribe func(t *testing.T, h broker.Handler) broker.Subscriber
	// Timeout bounds each wait for a message to arrive. Default 10s.
	Timeout time.Duration
}

// Run runs the conformance suite every adapter must pass: publish and read
// back, headers and binary bodies unchanged, a cancelled ctx, invalid
// messages, publish after Close, Close twice, concurrent publishers, and a
// Close that lets in-flight publishes finish.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.Timeout == 0 {
		h.Timeout = 10 * time.Second
	}
	cases := []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"PublishReceive", testPublishReceive},
		{"HeadersRoundTrip", testHeaders},
		{"BinaryBody", testBinaryBody},
		{"CancelledContext", testCancelledContext},
		{"InvalidMessage", testInvalidMessage},
		{"PublishAfterClose", testPublishAfterClose},
		{"CloseTwice", testCloseTwice},
		{"ConcurrentPublishers", testConcurrentPublishers},
		{"CloseFlushesInFlight", testCloseFlushes},
		{"ConsumeRoundTrip", testConsumeRoundTrip},
		{"ConsumeRetriesFailedHandler", testConsumeRetry},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.fn(t, h) })
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

func open(t *testing.T, h Harness) (broker.Broker, Receiver) {
	t.Helper()
	b, r := h.New(t)
	require.NotNil(t, b, "Harness.New returned a nil broker")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), h.Timeout)
		defer cancel()
		assert.NoError(t, b.Close(ctx), "Close")
	})
	return b, r
}

func ctxFor(t *testing.T, h Harness) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), h.Timeout)
	t.Cleanup(cancel)
	return ctx
}

// roundTrip publishes msgs and returns what arrived, requiring all of them.
func roundTrip(t *testing.T, h Harness, msgs ...broker.Message) map[string]broker.Message {
	t.Helper()
	b, recv := open(t, h)
	if recv == nil {
		t.Skip("reading messages back is not supported by this adapter")
	}
	ctx := ctxFor(t, h)
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		require.NoError(t, b.Publish(ctx, m), "Publish %s", m.ID)
		ids[i] = m.ID
	}
	got, err := recv(ctx, ids)
	require.NoError(t, err, "receiving")
	for _, id := range ids {
		require.Contains(t, got, id, "published message %s never arrived", id)
	}
	return got
}

func testPublishReceive(t *testing.T, h Harness) {
	msgs := []broker.Message{NewMessage("order.created"), NewMessage("order.status.updated"), NewMessage("order.cancelled")}
	got := roundTrip(t, h, msgs...)
	for _, m := range msgs {
		g := got[m.ID]
		assert.Equal(t, m.Name, g.Name, "name of %s", m.ID)
		assert.Equal(t, m.Body, g.Body, "body of %s", m.ID)
		assert.Equal(t, m.ContentType, g.ContentType, "content type of %s", m.ID)
	}
}

func testHeaders(t *testing.T, h Harness) {
	m := NewMessage("order.created")
	m.Headers = map[string]string{"trace-id": "abc-123", "empty": "", "unicode": "заказ ✓"}
	g := roundTrip(t, h, m)[m.ID]
	for k, v := range m.Headers {
		assert.Equal(t, v, g.Headers[k], "header %q", k)
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
	assert.True(t, bytes.Equal(m.Body, got[m.ID].Body), "binary body changed")
	assert.Empty(t, got[empty.ID].Body, "empty body")
}

func testCancelledContext(t *testing.T, h Harness) {
	b, _ := open(t, h)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := b.Publish(ctx, NewMessage("order.created"))
	require.Error(t, err)
	assert.ErrorIs(t, err, context.Canceled)
	assert.False(t, broker.IsRetryable(err))
}

func testInvalidMessage(t *testing.T, h Harness) {
	b, _ := open(t, h)
	for name, m := range map[string]broker.Message{
		"no id":   {Name: "order.created", Body: []byte("{}")},
		"no name": {ID: uuid.NewString(), Body: []byte("{}")},
	} {
		err := b.Publish(ctxFor(t, h), m)
		require.Error(t, err, name)
		assert.ErrorIs(t, err, broker.ErrInvalid, name)
		assert.False(t, broker.IsRetryable(err), name)
	}
}

func testPublishAfterClose(t *testing.T, h Harness) {
	b, _ := open(t, h)
	require.NoError(t, b.Close(ctxFor(t, h)))
	err := b.Publish(ctxFor(t, h), NewMessage("order.created"))
	require.Error(t, err)
	assert.ErrorIs(t, err, broker.ErrClosed)
	assert.False(t, broker.IsRetryable(err), "ErrClosed must not be retryable")
}

func testCloseTwice(t *testing.T, h Harness) {
	b, _ := open(t, h)
	require.NoError(t, b.Close(ctxFor(t, h)))
	assert.NoError(t, b.Close(ctxFor(t, h)), "second Close")
}

func testConcurrentPublishers(t *testing.T, h Harness) {
	b, recv := open(t, h)
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
				if err := b.Publish(ctx, m); err != nil {
					errs[p] = err
					return
				}
			}
		})
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	if recv == nil {
		return
	}
	got, err := recv(ctx, ids)
	require.NoError(t, err)
	missing := 0
	for _, id := range ids {
		if _, ok := got[id]; !ok {
			missing++
		}
	}
	assert.Zero(t, missing, "of %d published, %d never arrived", len(ids), missing)
}

// testCloseFlushes closes the broker while 200 publishes are in progress:
// each returns nil or ErrClosed, Close returns nil, and every message
// reported published arrives.
func testCloseFlushes(t *testing.T, h Harness) {
	b, recv := open(t, h)
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
			err := b.Publish(ctx, m)
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
	require.NoError(t, b.Close(ctx), "Close with publishes in flight")
	wg.Wait()
	require.NoError(t, errors.Join(other...), "a publish racing Close returns nil or ErrClosed")
	assert.Equal(t, n, len(ok)+closed)
	if recv == nil {
		return
	}
	got, err := recv(ctx, ok)
	require.NoError(t, err, "every message Publish reported as published arrives")
	missing := 0
	for _, id := range ok {
		if _, found := got[id]; !found {
			missing++
		}
	}
	assert.Zero(t, missing, "of %d published, %d never arrived", len(ok), missing)
}

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

func subscribe(t *testing.T, h Harness, handler broker.Handler) broker.Subscriber {
	t.Helper()
	if h.Subscribe == nil {
		t.Skip("consuming is not supported by this adapter")
	}
	sub := h.Subscribe(t, handler)
	require.NotNil(t, sub)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), h.Timeout)
		defer cancel()
		assert.NoError(t, sub.Close(ctx), "subscriber Close")
		assert.NoError(t, sub.Close(ctx), "second subscriber Close")
	})
	return sub
}

func testConsumeRoundTrip(t *testing.T, h Harness) {
	var c consumed
	b, _ := open(t, h)
	subscribe(t, h, func(_ context.Context, d broker.Delivery) error { c.add(d); return nil })
	ctx := ctxFor(t, h)
	var msgs []broker.Message
	for i := range 50 {
		m := NewMessage("order.created")
		if i == 0 {
			m.Headers = map[string]string{"trace": "t-1"}
			m.Body = []byte{0, 1, 2, 0xff}
		}
		require.NoError(t, b.Publish(ctx, m))
		msgs = append(msgs, m)
	}
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	WaitFor(t, h.Timeout, "every message consumed", func() bool { return c.has(ids, 1) })
	c.mu.Lock()
	defer c.mu.Unlock()
	first := c.got[msgs[0].ID][0]
	assert.Equal(t, msgs[0].Body, first.Body)
	assert.Equal(t, "t-1", first.Headers["trace"])
	assert.Equal(t, "order.created", first.Name)
	assert.Equal(t, 1, first.Attempt)
	assert.NotEmpty(t, first.Source)
}

func testConsumeRetry(t *testing.T, h Harness) {
	var c consumed
	b, _ := open(t, h)
	subscribe(t, h, func(_ context.Context, d broker.Delivery) error {
		if c.add(d) == 1 {
			return errors.New("transient failure")
		}
		return nil
	})
	ctx := ctxFor(t, h)
	m := NewMessage("order.created")
	require.NoError(t, b.Publish(ctx, m))
	WaitFor(t, h.Timeout, "the message handled twice", func() bool { return c.has([]string{m.ID}, 2) })
	c.mu.Lock()
	defer c.mu.Unlock()
	got := c.got[m.ID]
	assert.Equal(t, 1, got[0].Attempt)
	assert.Equal(t, 2, got[1].Attempt, "the retry knows its attempt number")
	assert.Equal(t, m.Body, got[1].Body)
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
