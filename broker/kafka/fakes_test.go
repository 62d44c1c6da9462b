package kafka

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
)

// The fakes below stand in for sarama so that the tests of this file's
// package drive every ordering themselves: no server, no sleeps.

// fakeProducer is a sarama AsyncProducer whose cluster is the test: it
// takes records from Input with take and answers with ack or fail. Input is
// unbuffered, so a record the test has taken has been handed over, and one
// it has not, has not.
type fakeProducer struct {
	in     chan *sarama.ProducerMessage
	succ   chan *sarama.ProducerMessage
	errs   chan *sarama.ProducerError
	asked  chan struct{} // one value per Input call, when someone is about to hand a record over
	closed chan struct{} // closed by AsyncClose
	once   sync.Once
	finish sync.Once
	auto   bool // acknowledge every record, and finish on AsyncClose
	taken  chan *sarama.ProducerMessage
}

func newFakeProducer(auto bool) *fakeProducer {
	f := &fakeProducer{
		in: make(chan *sarama.ProducerMessage), succ: make(chan *sarama.ProducerMessage),
		errs: make(chan *sarama.ProducerError), asked: make(chan struct{}, 1000),
		closed: make(chan struct{}), auto: auto, taken: make(chan *sarama.ProducerMessage, 1000),
	}
	if auto {
		go func() {
			for {
				select {
				case m := <-f.in:
					f.taken <- m
					f.succ <- m
				case <-f.closed:
					f.done()
					return
				}
			}
		}()
	}
	return f
}

func (f *fakeProducer) Input() chan<- *sarama.ProducerMessage {
	select {
	case f.asked <- struct{}{}:
	default:
	}
	return f.in
}
func (f *fakeProducer) Successes() <-chan *sarama.ProducerMessage { return f.succ }
func (f *fakeProducer) Errors() <-chan *sarama.ProducerError      { return f.errs }
func (f *fakeProducer) AsyncClose()                               { f.once.Do(func() { close(f.closed) }) }

// done closes Successes and Errors, as sarama does once it drained.
func (f *fakeProducer) done() {
	f.finish.Do(func() {
		close(f.succ)
		close(f.errs)
	})
}

func (f *fakeProducer) take(t *testing.T) *sarama.ProducerMessage {
	t.Helper()
	select {
	case m := <-f.in:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no record handed to the producer")
		return nil
	}
}

func (f *fakeProducer) ack(m *sarama.ProducerMessage) { f.succ <- m }
func (f *fakeProducer) fail(m *sarama.ProducerMessage, err error) {
	f.errs <- &sarama.ProducerError{Msg: m, Err: err}
}

func (f *fakeProducer) waitAsked(t *testing.T) {
	t.Helper()
	select {
	case <-f.asked:
	case <-time.After(10 * time.Second):
		t.Fatal("nobody came to hand a record over")
	}
}

func (f *fakeProducer) waitClosed(t *testing.T) {
	t.Helper()
	select {
	case <-f.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("AsyncClose was not called")
	}
}

// fakeClient counts Close calls.
type fakeClient struct{ closes atomic.Int32 }

func (c *fakeClient) Close() error { c.closes.Add(1); return nil }

var _ io.Closer = (*fakeClient)(nil)

// dialResult is one answer of a scripted dial.
type dialResult struct {
	link producerLink
	err  error
}

// scriptedDial blocks each dial until the test answers it, signalling each
// call on dialing: the test always knows where the connect loop is.
type scriptedDial struct {
	dialing chan struct{}
	answers chan dialResult
}

func newScriptedDial() *scriptedDial {
	return &scriptedDial{dialing: make(chan struct{}, 100), answers: make(chan dialResult)}
}

func (d *scriptedDial) dial() (producerLink, error) {
	d.dialing <- struct{}{}
	r := <-d.answers
	return r.link, r.err
}

func (d *scriptedDial) waitDialing(t *testing.T) {
	t.Helper()
	select {
	case <-d.dialing:
	case <-time.After(10 * time.Second):
		t.Fatal("the connect loop did not dial")
	}
}

// observations records what an Observer was told.
type observations struct {
	mu  sync.Mutex
	all []broker.Observation
}

func (o *observations) Observe(_ context.Context, ob broker.Observation) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.all = append(o.all, ob)
}

func (o *observations) kinds() []broker.ObservationKind {
	o.mu.Lock()
	defer o.mu.Unlock()
	var ks []broker.ObservationKind
	for _, ob := range o.all {
		ks = append(ks, ob.Kind)
	}
	return ks
}

func (o *observations) of(k broker.ObservationKind) []broker.Observation {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []broker.Observation
	for _, ob := range o.all {
		if ob.Kind == k {
			out = append(out, ob)
		}
	}
	return out
}

// testConn returns connection options for tests: the test's logger, an
// observer, and waits of a nanosecond between connect attempts.
func testConn(t testing.TB, obs broker.Observer) connOptions {
	o := defaultConn()
	o.logger = brokertest.Logger(t)
	o.observer = obs
	o.connectMin, o.connectMax = time.Nanosecond, time.Nanosecond
	return o
}

// fakeBroker starts a Broker over p, connected at once.
func fakeBroker(t testing.TB, p *fakeProducer, obs broker.Observer) (*Broker, *fakeClient) {
	t.Helper()
	o := defaultPublisher()
	o.connOptions = testConn(t, obs)
	client := &fakeClient{}
	b, err := start(context.Background(), o, []string{"fake:9092"}, "orders.events", "kafka publisher",
		func() (producerLink, error) { return producerLink{producer: p, client: client}, nil })
	require.NoError(t, err)
	return b, client
}

// fakeGroup is a sarama ConsumerGroup: each Consume runs the next step of
// script, then normal sessions: Setup, one claim fed from msgs, until ctx
// ends or ConsumeClaim returns, then Cleanup.
type fakeGroup struct {
	script []func(ctx context.Context, h sarama.ConsumerGroupHandler) error
	msgs   chan *sarama.ConsumerMessage
	errs   chan error
	calls  atomic.Int32
	closed atomic.Int32
	once   sync.Once

	mu       sync.Mutex
	marked   []int64            // the offsets marked (MarkOffset: the next to read), in order
	endEarly context.CancelFunc // ends the session under way (a rebalance)
}

func newFakeGroup(script ...func(context.Context, sarama.ConsumerGroupHandler) error) *fakeGroup {
	return &fakeGroup{script: script, msgs: make(chan *sarama.ConsumerMessage, 100), errs: make(chan error)}
}

func (g *fakeGroup) Consume(ctx context.Context, _ []string, h sarama.ConsumerGroupHandler) error {
	n := int(g.calls.Add(1))
	if n <= len(g.script) {
		return g.script[n-1](ctx, h)
	}
	return g.session(ctx, h)
}

func (g *fakeGroup) session(ctx context.Context, h sarama.ConsumerGroupHandler) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g.mu.Lock()
	g.endEarly = cancel
	g.mu.Unlock()
	sess := &fakeSession{ctx: ctx, g: g}
	if err := h.Setup(sess); err != nil {
		return err
	}
	err := h.ConsumeClaim(sess, fakeClaim{g.msgs})
	_ = h.Cleanup(sess)
	return err
}

func (g *fakeGroup) Errors() <-chan error { return g.errs }
func (g *fakeGroup) Close() error {
	g.closed.Add(1)
	g.once.Do(func() { close(g.errs) })
	return nil
}

// rebalance ends the session under way, as a rebalance does; the next
// session reads on from msgs.
func (g *fakeGroup) rebalance() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.endEarly != nil {
		g.endEarly()
	}
}

// committed is the last offset marked (-1: none).
func (g *fakeGroup) committed() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.marked) == 0 {
		return -1
	}
	return g.marked[len(g.marked)-1]
}

func (g *fakeGroup) markedOffsets() []int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]int64(nil), g.marked...)
}

type fakeSession struct {
	sarama.ConsumerGroupSession // the methods the adapter does not call
	ctx                         context.Context
	g                           *fakeGroup
}

func (s *fakeSession) Context() context.Context { return s.ctx }
func (s *fakeSession) MarkOffset(_ string, _ int32, offset int64, _ string) {
	s.g.mu.Lock()
	defer s.g.mu.Unlock()
	s.g.marked = append(s.g.marked, offset)
}

type fakeClaim struct {
	msgs chan *sarama.ConsumerMessage
}

func (fakeClaim) Topic() string                              { return "orders.events" }
func (fakeClaim) Partition() int32                           { return 0 }
func (fakeClaim) InitialOffset() int64                       { return 0 }
func (fakeClaim) HighWaterMarkOffset() int64                 { return 0 }
func (c fakeClaim) Messages() <-chan *sarama.ConsumerMessage { return c.msgs }

// consumerMessage is the record Publish would have written for m, at offset.
func consumerMessage(m broker.Message, offset int64) *sarama.ConsumerMessage {
	cm := &sarama.ConsumerMessage{Topic: "orders.events", Offset: offset, Key: []byte(m.Key), Value: m.Body}
	for k, v := range map[string]string{HeaderID: m.ID, HeaderName: m.Name, HeaderContentType: m.ContentType} {
		cm.Headers = append(cm.Headers, &sarama.RecordHeader{Key: []byte(k), Value: []byte(v)})
	}
	return cm
}

// fakeSubscriber starts a Subscriber over g with a dead-letter producer
// that acknowledges everything. mods adjust it before it starts.
func fakeSubscriber(t testing.TB, g *fakeGroup, h broker.Handler, obs broker.Observer, maxAttempts int, mods ...func(*Subscriber)) (*Subscriber, *fakeClient, *fakeProducer) {
	t.Helper()
	o := defaultSubscriber()
	o.connOptions = testConn(t, obs)
	o.maxAttempts = maxAttempts
	o.retryMin, o.retryMax = time.Nanosecond, time.Nanosecond
	client := &fakeClient{}
	s := newSubscriber(o, "orders.events", "g", h, []string{"fake:9092"},
		func() (groupLink, error) { return groupLink{group: g, client: client}, nil })
	dlqProducer := newFakeProducer(true)
	dlq, _ := fakeBroker(t, dlqProducer, nil)
	dlq.topic = "orders.events.dlq"
	s.dlq = dlq
	for _, m := range mods {
		m(s)
	}
	link := groupLink{group: g, client: client}
	s.begin(&link)
	return s, client, dlqProducer
}

// capture is a slog.Handler that keeps the records it is given.
type capture struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (c *capture) Enabled(context.Context, slog.Level) bool { return true }
func (c *capture) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recs = append(c.recs, r)
	return nil
}
func (c *capture) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *capture) WithGroup(string) slog.Handler      { return c }

func (c *capture) count(level slog.Level, msg string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, r := range c.recs {
		if r.Level == level && r.Message == msg {
			n++
		}
	}
	return n
}
