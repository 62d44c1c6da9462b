package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// The fake: connections and channels that behave like amqp091's as far as
// the adapter can tell (tags per channel from 1, a pending confirm per
// publish that the channel's close fails, returns handed over unbuffered
// before the test sends the ack, a channel exception closing one channel,
// a connection loss closing them all), driven step by step by the test.

// fakeServer is what the adapter dials.
type fakeServer struct {
	mu      sync.Mutex
	dialErr []error // errors for the next dials, in order; empty: dial succeeds
	dialled []string
	made    []*fakeConn    // every connection made, in order
	conns   chan *fakeConn // the same, for the test to take one by one
}

func newFakeServer() *fakeServer { return &fakeServer{conns: make(chan *fakeConn, 100)} }

func (f *fakeServer) dial(_ context.Context, t target) (connection, error) {
	f.mu.Lock()
	f.dialled = append(f.dialled, t.addr)
	var err error
	if len(f.dialErr) > 0 {
		err, f.dialErr = f.dialErr[0], f.dialErr[1:]
	}
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	c := &fakeConn{srv: f, chans: make(chan *fakeChannel, 100), addr: t.addr}
	f.mu.Lock()
	f.made = append(f.made, c)
	f.mu.Unlock()
	f.conns <- c
	return c, nil
}

// failDials makes the next dials fail with err, n times.
func (f *fakeServer) failDials(n int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		f.dialErr = append(f.dialErr, err)
	}
}

// allowDials lets the next dials succeed.
func (f *fakeServer) allowDials() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dialErr = nil
}

func (f *fakeServer) addrs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.dialled...)
}

// nextConn returns the next connection the adapter made.
func (f *fakeServer) nextConn(t *testing.T) *fakeConn {
	t.Helper()
	return recv(t, f.conns, "a connection")
}

type fakeConn struct {
	srv   *fakeServer
	addr  string
	chans chan *fakeChannel // every channel opened, in order

	mu      sync.Mutex
	closed  bool
	open    []*fakeChannel
	closes  []chan *amqp.Error
	blocked []chan amqp.Blocking
	chanErr error
}

func (c *fakeConn) Channel() (channel, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, amqp.ErrClosed
	}
	if c.chanErr != nil {
		return nil, c.chanErr
	}
	ch := &fakeChannel{conn: c, published: make(chan fakePublish, 10000)}
	c.open = append(c.open, ch)
	c.chans <- ch
	return ch, nil
}

func (c *fakeConn) NotifyClose(l chan *amqp.Error) chan *amqp.Error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closes = append(c.closes, l)
	return l
}

func (c *fakeConn) NotifyBlocked(l chan amqp.Blocking) chan amqp.Blocking {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.blocked = append(c.blocked, l)
	return l
}

func (c *fakeConn) CloseDeadline(time.Time) error {
	c.drop(nil)
	return nil
}

func (c *fakeConn) IsClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// drop closes the connection and all its channels, as a lost socket (err
// non-nil) or a graceful close (nil) does.
func (c *fakeConn) drop(err *amqp.Error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	chans := c.open
	closes := c.closes
	blocked := c.blocked
	c.mu.Unlock()
	for _, ch := range chans {
		ch.shutdown(err)
	}
	for _, l := range closes {
		if err != nil {
			l <- err
		}
		close(l)
	}
	for _, l := range blocked {
		close(l)
	}
}

// block sends a connection.blocked (or unblocked) notification.
func (c *fakeConn) block(active bool, reason string) {
	c.mu.Lock()
	ls := c.blocked
	c.mu.Unlock()
	for _, l := range ls {
		l <- amqp.Blocking{Active: active, Reason: reason}
	}
}

// nextChannel returns the next channel the adapter opened on c.
func (c *fakeConn) nextChannel(t *testing.T) *fakeChannel {
	t.Helper()
	return recv(t, c.chans, "a channel")
}

type fakePublish struct {
	tag           uint64
	exchange, key string
	msg           amqp.Publishing
}

type fakeChannel struct {
	conn      *fakeConn
	published chan fakePublish // what the adapter wrote, in order

	mu         sync.Mutex
	sendMu     sync.RWMutex // shutdown closes the listeners under it
	closed     bool
	seq        uint64
	confirming bool
	pending    map[uint64]*fakeConfirm // published, not yet confirmed
	returns    []chan amqp.Return
	closes     []chan *amqp.Error
	publishErr error
	declared   []string // each declaration and binding, in order, as fakeChannel.declare has them
	deliveries chan amqp.Delivery
}

// declareExchange records "exchange <name> <kind> <args>", "exchange?" for
// a passive one.
func (ch *fakeChannel) declareExchange(x exchangeSpec) error {
	verb := "exchange"
	if x.passive {
		verb = "exchange?"
	}
	return ch.declare(fmt.Sprintf("%s %s %s %v", verb, x.name, x.kind, x.args))
}

// declareQueue records "queue <name> <args>".
func (ch *fakeChannel) declareQueue(q Queue) error {
	return ch.declare(fmt.Sprintf("queue %s %v", q.Name, q.args()))
}

// bind records "bind <queue> <key> <exchange>".
func (ch *fakeChannel) bind(queue, key, exchange string) error {
	return ch.declare("bind " + queue + " " + key + " " + exchange)
}

// declarations returns what was declared on ch, in order.
func (ch *fakeChannel) declarations() []string {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return append([]string(nil), ch.declared...)
}

func (ch *fakeChannel) declare(what string) error {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.closed {
		return amqp.ErrClosed
	}
	ch.declared = append(ch.declared, what)
	return nil
}

func (ch *fakeChannel) confirmMode() error {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.confirming = true
	return nil
}

func (ch *fakeChannel) prefetch(int) error { return nil }

func (ch *fakeChannel) consume(string, string) (<-chan amqp.Delivery, error) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.deliveries = make(chan amqp.Delivery, 100)
	return ch.deliveries, nil
}

func (ch *fakeChannel) cancel(string) error { return nil }

// fakeConfirm is a pending confirm, like *amqp.DeferredConfirmation.
type fakeConfirm struct {
	done chan struct{}
	ack  bool
}

func (c *fakeConfirm) Done() <-chan struct{} { return c.done }
func (c *fakeConfirm) Acked() bool {
	<-c.done
	return c.ack
}

func (c *fakeConfirm) settle(ack bool) {
	c.ack = ack
	close(c.done)
}

func (ch *fakeChannel) IsClosed() bool {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.closed
}

func (ch *fakeChannel) NotifyReturn(l chan amqp.Return) chan amqp.Return {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.returns = append(ch.returns, l)
	return l
}

func (ch *fakeChannel) NotifyClose(l chan *amqp.Error) chan *amqp.Error {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.closes = append(ch.closes, l)
	return l
}

func (ch *fakeChannel) GetNextPublishSeqNo() uint64 {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.seq + 1
}

func (ch *fakeChannel) publish(exchange, key string, msg amqp.Publishing) (pendingConfirm, error) {
	ch.mu.Lock()
	if ch.closed {
		ch.mu.Unlock()
		return nil, amqp.ErrClosed
	}
	if err := ch.publishErr; err != nil {
		ch.publishErr = nil
		ch.mu.Unlock()
		return nil, err
	}
	ch.seq++
	c := &fakeConfirm{done: make(chan struct{})}
	if ch.pending == nil {
		ch.pending = map[uint64]*fakeConfirm{}
	}
	ch.pending[ch.seq] = c
	p := fakePublish{tag: ch.seq, exchange: exchange, key: key, msg: msg}
	ch.mu.Unlock()
	ch.published <- p
	return c, nil
}

func (ch *fakeChannel) Close() error {
	ch.shutdown(nil)
	return nil
}

// shutdown closes the channel as amqp091 does: closed first, the error to
// the close listeners, every listener channel closed, then the pending
// confirms failed.
func (ch *fakeChannel) shutdown(err *amqp.Error) {
	ch.mu.Lock()
	if ch.closed {
		ch.mu.Unlock()
		return
	}
	ch.closed = true
	pending, returns, closes := ch.pending, ch.returns, ch.closes
	ch.pending = nil
	deliveries := ch.deliveries
	ch.mu.Unlock()
	ch.sendMu.Lock()
	defer ch.sendMu.Unlock()
	for _, l := range closes {
		if err != nil {
			l <- err
		}
		close(l)
	}
	for _, l := range returns {
		close(l)
	}
	for _, c := range pending {
		c.settle(false)
	}
	if deliveries != nil {
		close(deliveries)
	}
}

// fail closes the channel with a channel exception, as the broker does
// when a publish breaks a rule (the connection stays open).
func (ch *fakeChannel) fail(code int, reason string) {
	ch.shutdown(&amqp.Error{Code: code, Reason: reason, Server: true, Recover: true})
}

// ack, nack and ret answer a publish, in the order the test calls them.
func (ch *fakeChannel) ack(tag uint64)  { ch.confirm(amqp.Confirmation{DeliveryTag: tag, Ack: true}) }
func (ch *fakeChannel) nack(tag uint64) { ch.confirm(amqp.Confirmation{DeliveryTag: tag, Ack: false}) }

func (ch *fakeChannel) confirm(c amqp.Confirmation) {
	ch.mu.Lock()
	p := ch.pending[c.DeliveryTag]
	delete(ch.pending, c.DeliveryTag) // amqp091 confirms nothing on a closed channel: none are pending
	ch.mu.Unlock()
	if p != nil {
		p.settle(c.Ack)
	}
}

// ret returns p unroutable; like amqp091, it hands the return over before
// the test acks p.
func (ch *fakeChannel) ret(p fakePublish) {
	ch.mu.Lock()
	ls := ch.returns
	ch.mu.Unlock()
	for _, l := range ls {
		l <- amqp.Return{ReplyCode: amqp.NoRoute, ReplyText: "NO_ROUTE", Exchange: p.exchange, RoutingKey: p.key, MessageId: p.msg.MessageId}
	}
}

// next returns the next message the adapter wrote on ch.
func (ch *fakeChannel) next(t *testing.T) fakePublish {
	t.Helper()
	return recv(t, ch.published, "a publish")
}

func (ch *fakeChannel) failNextPublish(err error) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.publishErr = err
}

// recv waits for a value on c, failing the test after 5s.
func recv[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v, ok := <-c:
		if !ok {
			t.Fatalf("waiting for %s: channel closed", what)
		}
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	panic("unreachable")
}

// errFakeRefused is what a fake dial fails with: connection refused.
var errFakeRefused = fmt.Errorf("dial tcp: %w", errors.New("connect: connection refused"))
