package rabbitmq

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
)

// These tests drive the publisher's state machine through the fake: no
// server, no sleeps; each step waits for what the adapter did.

func fakeConfig(addrs ...string) broker.Config {
	cfg := broker.DefaultConfig()
	cfg.Enabled = true
	if len(addrs) == 0 {
		addrs = []string{"node-1:5672"}
	}
	cfg.Addresses = addrs
	cfg.Exchange = "orders.events"
	return cfg
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// openFake starts a Broker on the fake and returns it with its first
// connection and channel.
func openFake(t *testing.T, opts ...PublisherOption) (*Broker, *fakeServer, *fakeConn, *fakeChannel) {
	t.Helper()
	brokertest.CheckNoLeak(t)
	srv := newFakeServer()
	opts = append([]PublisherOption{withDialer(srv.dial), WithLogger(quietLogger()), WithReconnectBackoff(time.Millisecond, 5*time.Millisecond)}, opts...)
	b, err := New(context.Background(), fakeConfig(), opts...)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
	conn := srv.nextConn(t)
	return b, srv, conn, conn.nextChannel(t)
}

// publishAsync starts a Publish and returns where its result will be.
func publishAsync(ctx context.Context, b *Broker, m broker.Message) <-chan error {
	res := make(chan error, 1)
	go func() { res <- b.Publish(ctx, m) }()
	return res
}

func msg(id string) broker.Message {
	return broker.Message{ID: id, Name: "order.created", Key: "o-1", Body: []byte(`{"id":"` + id + `"}`), ContentType: broker.ContentTypeJSON}
}

func TestFakeAckConfirms(t *testing.T) {
	b, _, _, ch := openFake(t)
	res := publishAsync(context.Background(), b, msg("m-1"))
	p := ch.next(t)
	assert.Equal(t, "m-1", p.msg.MessageId)
	assert.Equal(t, "order.created", p.key, "routing key = event name")
	assert.Equal(t, "order.created", p.msg.Type)
	assert.Equal(t, uint8(amqp.Persistent), p.msg.DeliveryMode)
	assert.Equal(t, "orders.events", p.exchange)
	ch.ack(p.tag)
	require.NoError(t, recv(t, res, "the publish result"))
	assert.Equal(t, int64(1), b.Stats().Confirmed)
	assert.Zero(t, b.Stats().InFlight)
}

func TestFakeNackIsRetryable(t *testing.T) {
	b, _, _, ch := openFake(t)
	res := publishAsync(context.Background(), b, msg("m-1"))
	ch.nack(ch.next(t).tag)
	err := recv(t, res, "the publish result")
	assert.ErrorIs(t, err, broker.ErrUnavailable, "a leader election or a full queue passes")
	assert.True(t, broker.IsRetryable(err))
}

func TestFakeReturnThenAckIsUnroutable(t *testing.T) {
	b, _, _, ch := openFake(t)
	res1 := publishAsync(context.Background(), b, msg("m-1"))
	p1 := ch.next(t)
	res2 := publishAsync(context.Background(), b, msg("m-2"))
	p2 := ch.next(t)
	ch.ret(p1) // amqp091 hands the return over before the ack of the same message
	ch.ack(p1.tag)
	ch.ack(p2.tag)
	err := recv(t, res1, "the first result")
	assert.ErrorIs(t, err, broker.ErrUnroutable)
	assert.Contains(t, err.Error(), `"order.created"`)
	assert.NoError(t, recv(t, res2, "the second result"), "only the returned message fails")
}

// TestFakeConnectionLostResendsInOrder: a connection lost with three
// unconfirmed messages: they are written again on the new connection, in
// publish order, with the same message ids.
func TestFakeConnectionLostResendsInOrder(t *testing.T) {
	b, srv, conn, ch := openFake(t)
	var res []<-chan error
	var tags []uint64
	for _, id := range []string{"m-1", "m-2", "m-3"} {
		res = append(res, publishAsync(context.Background(), b, msg(id)))
		tags = append(tags, ch.next(t).tag) // one at a time: the order is known
	}
	conn.drop(&amqp.Error{Code: amqp.ConnectionForced, Reason: "CONNECTION_FORCED - broker shutdown", Server: true})

	conn2 := srv.nextConn(t)
	ch2 := conn2.nextChannel(t)
	var again []fakePublish
	for range 3 {
		again = append(again, ch2.next(t))
	}
	assert.Equal(t, []string{"m-1", "m-2", "m-3"}, []string{again[0].msg.MessageId, again[1].msg.MessageId, again[2].msg.MessageId})
	for _, r := range res {
		select {
		case err := <-r:
			t.Fatalf("resolved by the dead session: %v", err)
		default:
		}
	}
	for _, p := range again {
		ch2.ack(p.tag)
	}
	for _, r := range res {
		assert.NoError(t, recv(t, r, "a result"))
	}
	st := b.Stats()
	assert.Equal(t, int64(3), st.Republished)
	assert.Equal(t, int64(1), st.Reconnects)
	assert.Equal(t, int64(3), st.Confirmed)
}

// TestFakeLateConfirmDoesNotResolveTheWrongMessage: tags restart at 1 on a
// new channel; a confirm that reaches the dead session (tag 1) after its
// messages were handed back must not resolve anything, least of all the
// new channel's tag 1.
func TestFakeLateConfirmDoesNotResolveTheWrongMessage(t *testing.T) {
	b, srv, conn, ch := openFake(t)
	res1 := publishAsync(context.Background(), b, msg("m-1"))
	p1 := ch.next(t)
	conn.drop(&amqp.Error{Code: amqp.ConnectionForced, Server: true})
	ch2 := srv.nextConn(t).nextChannel(t)
	again := ch2.next(t)
	require.Equal(t, uint64(1), again.tag)
	res2 := publishAsync(context.Background(), b, msg("m-2"))
	p2 := ch2.next(t)
	b.mu.Lock()
	dead := b.last
	b.mu.Unlock()
	ch.ack(p1.tag) // the dead channel's tag 1, late
	b.settle(dead) // and its watcher, were it still running
	select {
	case err := <-res1:
		t.Fatalf("a late confirm of the dead session resolved m-1: %v", err)
	default:
	}
	ch2.ack(again.tag)
	assert.NoError(t, recv(t, res1, "m-1's result"))
	ch2.nack(p2.tag)
	assert.ErrorIs(t, recv(t, res2, "m-2's result"), broker.ErrUnavailable)
}

// TestFakeConfirmsSettleInPublishOrder: a confirm that overtakes an
// earlier one (RabbitMQ may confirm out of order) is applied once the
// earlier one's has come, so outcomes arrive in publish order.
func TestFakeConfirmsSettleInPublishOrder(t *testing.T) {
	b, _, _, ch := openFake(t)
	res1 := publishAsync(context.Background(), b, msg("m-1"))
	p1 := ch.next(t)
	res2 := publishAsync(context.Background(), b, msg("m-2"))
	p2 := ch.next(t)
	ch.nack(p2.tag)
	// m-1's confirm is still out: m-2's outcome waits for it. The watcher
	// has nothing to do until then, so a short wait shows it.
	select {
	case err := <-res2:
		t.Fatalf("m-2 settled before m-1: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	ch.ack(p1.tag)
	assert.NoError(t, recv(t, res1, "m-1's result"))
	assert.ErrorIs(t, recv(t, res2, "m-2's result"), broker.ErrUnavailable)
}

// TestFakeContextEndsWaitingForWindow: with every window slot taken, a
// publish whose ctx ends was never sent, and says so.
func TestFakeContextEndsWaitingForWindow(t *testing.T) {
	b, _, _, ch := openFake(t, WithWindow(1))
	first := publishAsync(context.Background(), b, msg("m-1"))
	p := ch.next(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := b.Publish(ctx, msg("m-2"))
	assert.ErrorIs(t, err, broker.ErrUnavailable)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, broker.ErrOutcomeUnknown, "never sent")
	assert.Contains(t, err.Error(), "not sent")
	assert.Contains(t, err.Error(), "WithWindow")
	ch.ack(p.tag)
	require.NoError(t, recv(t, first, "m-1's result"))
}

// TestFakeContextEndsWaitingForConnection: a publish queued while
// disconnected, whose ctx ends, is withdrawn: never written later.
func TestFakeContextEndsWaitingForConnection(t *testing.T) {
	b, srv, conn, _ := openFake(t)
	srv.failDials(1000, errFakeRefused)
	conn.drop(&amqp.Error{Code: amqp.ConnectionForced, Server: true})
	brokertest.WaitFor(t, 5*time.Second, "the loss noticed", func() bool { return b.Health(context.Background()) != nil })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := b.Publish(ctx, msg("m-withdrawn"))
	assert.ErrorIs(t, err, broker.ErrUnavailable)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, broker.ErrOutcomeUnknown)
	assert.Contains(t, err.Error(), "not sent")

	res := publishAsync(context.Background(), b, msg("m-after"))
	srv.allowDials()
	ch2 := srv.nextConn(t).nextChannel(t)
	p := ch2.next(t)
	assert.Equal(t, "m-after", p.msg.MessageId, "the withdrawn message is never written")
	ch2.ack(p.tag)
	require.NoError(t, recv(t, res, "m-after's result"))
}

// TestFakeContextEndsAfterSend: the outcome of a message written but not
// yet confirmed is unknown; it stays in flight and is confirmed later.
func TestFakeContextEndsAfterSend(t *testing.T) {
	b, _, _, ch := openFake(t)
	ctx, cancel := context.WithCancel(context.Background())
	res := publishAsync(ctx, b, msg("m-1"))
	p := ch.next(t)
	cancel()
	err := recv(t, res, "the result")
	assert.ErrorIs(t, err, broker.ErrUnavailable)
	assert.ErrorIs(t, err, context.Canceled)
	assert.ErrorIs(t, err, broker.ErrOutcomeUnknown)
	assert.True(t, broker.IsRetryable(err))
	assert.Equal(t, 1, b.Stats().InFlight, "kept in flight")
	ch.ack(p.tag)
	brokertest.WaitFor(t, 5*time.Second, "the late confirm resolves it", func() bool { return b.Stats().InFlight == 0 })
	assert.Equal(t, int64(1), b.Stats().Confirmed)
}

// TestFakeTooLargeFailsAloneAndTheLimitIsLearned: the broker closes the
// channel because one message exceeds max_message_size: that one fails
// with ErrTooLarge, the others are written again on a new channel of the
// same connection (no reconnect), and the server's limit applies from then
// on, before sending.
func TestFakeTooLargeFailsAloneAndTheLimitIsLearned(t *testing.T) {
	b, srv, conn, ch := openFake(t)
	small1 := publishAsync(context.Background(), b, msg("small-1"))
	ch.next(t)
	big := msg("big")
	big.Body = make([]byte, 2<<20)
	bigRes := publishAsync(context.Background(), b, big)
	ch.next(t)
	small2 := publishAsync(context.Background(), b, msg("small-2"))
	ch.next(t)
	ch.fail(amqp.PreconditionFailed, "PRECONDITION_FAILED - message size 2097152 is larger than configured max size 1048576")

	err := recv(t, bigRes, "the big message's result")
	assert.ErrorIs(t, err, broker.ErrTooLarge)
	assert.False(t, broker.IsRetryable(err))
	ch2 := conn.nextChannel(t) // same connection
	for _, want := range []string{"small-1", "small-2"} {
		p := ch2.next(t)
		assert.Equal(t, want, p.msg.MessageId)
		ch2.ack(p.tag)
	}
	assert.NoError(t, recv(t, small1, "small-1"))
	assert.NoError(t, recv(t, small2, "small-2"))
	assert.Zero(t, b.Stats().Reconnects, "a channel error needs no new connection")
	assert.Len(t, srv.addrs(), 1)

	err = b.Publish(context.Background(), big)
	assert.ErrorIs(t, err, broker.ErrTooLarge, "the learned limit applies before sending")
	assert.Contains(t, err.Error(), "1048576")
}

// TestFakeUnknownCulpritIsIsolated: the broker closes the channel over a
// publish without saying which: the suspects are written one at a time on
// the new channel; the one that closes it again fails alone with the
// category of the close; the others are confirmed.
func TestFakeUnknownCulpritIsIsolated(t *testing.T) {
	b, _, conn, ch := openFake(t)
	ids := []string{"m-1", "m-bad", "m-3"}
	res := map[string]<-chan error{}
	for _, id := range ids {
		res[id] = publishAsync(context.Background(), b, msg(id))
		ch.next(t)
	}
	after := publishAsync(context.Background(), b, msg("m-after")) // queued behind the suspects
	ch.fail(amqp.AccessRefused, "ACCESS_REFUSED - write access to exchange denied")

	ch2 := conn.nextChannel(t)
	p := ch2.next(t)
	assert.Equal(t, "m-1", p.msg.MessageId)
	ch2.ack(p.tag) // alone: nothing else is written until it is confirmed
	p = ch2.next(t)
	assert.Equal(t, "m-bad", p.msg.MessageId)
	ch2.fail(amqp.AccessRefused, "ACCESS_REFUSED - write access to exchange denied")
	err := recv(t, res["m-bad"], "the culprit's result")
	assert.ErrorIs(t, err, broker.ErrUnauthorized)

	ch3 := conn.nextChannel(t)
	p = ch3.next(t)
	assert.Equal(t, "m-3", p.msg.MessageId)
	ch3.ack(p.tag)
	p = ch3.next(t)
	assert.Equal(t, "m-after", p.msg.MessageId)
	ch3.ack(p.tag)
	for _, id := range []string{"m-1", "m-3"} {
		assert.NoError(t, recv(t, res[id], id))
	}
	assert.NoError(t, recv(t, after, "m-after"))
}

// TestFakeWriteFailureReconnects: a write that fails (socket error) puts
// the message back and replaces the connection; the message is written on
// the next one.
func TestFakeWriteFailureReconnects(t *testing.T) {
	b, srv, _, ch := openFake(t)
	ch.failNextPublish(io.ErrUnexpectedEOF)
	res := publishAsync(context.Background(), b, msg("m-1"))
	ch2 := srv.nextConn(t).nextChannel(t)
	p := ch2.next(t)
	assert.Equal(t, "m-1", p.msg.MessageId)
	ch2.ack(p.tag)
	assert.NoError(t, recv(t, res, "the result"))
}

// TestFakeCloseWaitsForInFlight: Close waits for the confirms of what is
// in flight; the callers get them.
func TestFakeCloseWaitsForInFlight(t *testing.T) {
	b, _, _, ch := openFake(t)
	var res []<-chan error
	var tags []uint64
	for _, id := range []string{"m-1", "m-2"} {
		res = append(res, publishAsync(context.Background(), b, msg(id)))
		tags = append(tags, ch.next(t).tag)
	}
	closed := make(chan error, 1)
	go func() { closed <- b.Close(context.Background()) }()
	brokertest.WaitFor(t, 5*time.Second, "Close to begin", func() bool {
		return errors.Is(b.Health(context.Background()), broker.ErrClosed)
	})
	assert.ErrorIs(t, b.Publish(context.Background(), msg("late")), broker.ErrClosed, "Close stops accepting")
	for _, tag := range tags {
		ch.ack(tag)
	}
	require.NoError(t, recv(t, closed, "Close"))
	for _, r := range res {
		assert.NoError(t, recv(t, r, "a result"))
	}
	assert.NoError(t, b.Close(context.Background()), "second Close")
}

// TestFakeCloseGivesUp: Close's ctx ends with a message sent and one
// queued (disconnected): the sent one may have been stored (unknown), the
// queued one was not sent; Close returns ctx.Err() and every goroutine
// ends (CheckNoLeak in openFake).
func TestFakeCloseGivesUp(t *testing.T) {
	b, srv, conn, ch := openFake(t)
	sent := publishAsync(context.Background(), b, msg("m-sent"))
	ch.next(t)
	srv.failDials(1000, errFakeRefused)
	conn.drop(&amqp.Error{Code: amqp.ConnectionForced, Server: true})
	queued := publishAsync(context.Background(), b, msg("m-queued"))
	brokertest.WaitFor(t, 5*time.Second, "both in flight", func() bool { return b.Stats().InFlight == 2 })

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, b.Close(ctx), context.DeadlineExceeded)
	err := recv(t, sent, "the sent message's result")
	assert.ErrorIs(t, err, broker.ErrClosed)
	assert.ErrorIs(t, err, broker.ErrUnavailable)
	assert.ErrorIs(t, err, broker.ErrOutcomeUnknown)
	err = recv(t, queued, "the queued message's result")
	assert.ErrorIs(t, err, broker.ErrClosed)
	assert.NotErrorIs(t, err, broker.ErrOutcomeUnknown)
	assert.Contains(t, err.Error(), "could be sent")
}

// TestFakeCloseDuringReconnect: Close while the supervisor keeps failing
// to reconnect returns promptly.
func TestFakeCloseDuringReconnect(t *testing.T) {
	b, srv, conn, _ := openFake(t)
	srv.failDials(1000, errFakeRefused)
	conn.drop(&amqp.Error{Code: amqp.ConnectionForced, Server: true})
	brokertest.WaitFor(t, 5*time.Second, "reconnect attempts", func() bool { return len(srv.addrs()) >= 3 })
	require.NoError(t, b.Close(context.Background()), "nothing in flight: nothing to wait for")
	assert.ErrorIs(t, b.Publish(context.Background(), msg("m")), broker.ErrClosed)
}

// TestFakeLazyConnect: New returns without a connection; Health says why;
// a publish waits and goes out once connected.
func TestFakeLazyConnect(t *testing.T) {
	brokertest.CheckNoLeak(t)
	srv := newFakeServer()
	srv.failDials(3, errFakeRefused)
	b, err := New(context.Background(), fakeConfig(), withDialer(srv.dial), WithLogger(quietLogger()),
		WithReconnectBackoff(time.Millisecond, 5*time.Millisecond), WithLazyConnect())
	require.NoError(t, err, "the broker is down, New does not wait")
	defer b.Close(context.Background())
	res := publishAsync(context.Background(), b, msg("m-1"))
	ch := srv.nextConn(t).nextChannel(t)
	p := ch.next(t)
	ch.ack(p.tag)
	assert.NoError(t, recv(t, res, "the result"))
	assert.NoError(t, b.Health(context.Background()))
}

func TestFakeHealth(t *testing.T) {
	b, srv, conn, _ := openFake(t)
	assert.NoError(t, b.Health(context.Background()))
	conn.block(true, "memory alarm")
	brokertest.WaitFor(t, 5*time.Second, "blocked", func() bool { return b.Health(context.Background()) != nil })
	err := b.Health(context.Background())
	assert.ErrorIs(t, err, broker.ErrUnavailable)
	assert.Contains(t, err.Error(), "memory alarm")
	conn.block(false, "")
	brokertest.WaitFor(t, 5*time.Second, "unblocked", func() bool { return b.Health(context.Background()) == nil })

	srv.failDials(1000, errFakeRefused)
	conn.drop(&amqp.Error{Code: amqp.ConnectionForced, Reason: "broker shutdown", Server: true})
	brokertest.WaitFor(t, 5*time.Second, "a failed reconnect", func() bool {
		err := b.Health(context.Background())
		return err != nil && strings.Contains(err.Error(), "connection refused")
	})
	assert.ErrorIs(t, b.Health(context.Background()), broker.ErrUnavailable)
	require.NoError(t, b.Close(context.Background()))
	assert.ErrorIs(t, b.Health(context.Background()), broker.ErrClosed)
}

// TestFakeNewTriesEachAddressOnce: New with every address refusing fails
// with ErrUnavailable naming each; bad credentials stop at the first.
func TestFakeNewTriesEachAddressOnce(t *testing.T) {
	brokertest.CheckNoLeak(t)
	srv := newFakeServer()
	srv.failDials(2, errFakeRefused)
	_, err := New(context.Background(), fakeConfig("node-1:5672", "node-2:5672"), withDialer(srv.dial), WithLogger(quietLogger()))
	assert.ErrorIs(t, err, broker.ErrUnavailable)
	assert.Contains(t, err.Error(), "node-1:5672")
	assert.Contains(t, err.Error(), "node-2:5672")

	srv = newFakeServer()
	srv.failDials(2, amqp.ErrCredentials)
	_, err = New(context.Background(), fakeConfig("node-1:5672", "node-2:5672"), withDialer(srv.dial), WithLogger(quietLogger()))
	assert.ErrorIs(t, err, broker.ErrUnauthorized)
	assert.Equal(t, []string{"node-1:5672"}, srv.addrs(), "another node will not take the same credentials")
}

// TestFakeReconnectTriesTheNextAddress: after a loss the supervisor dials
// the addresses in turn.
func TestFakeReconnectTriesTheNextAddress(t *testing.T) {
	brokertest.CheckNoLeak(t)
	srv := newFakeServer()
	b, err := New(context.Background(), fakeConfig("node-1:5672", "node-2:5672"), withDialer(srv.dial), WithLogger(quietLogger()),
		WithReconnectBackoff(time.Millisecond, 5*time.Millisecond))
	require.NoError(t, err)
	defer b.Close(context.Background())
	conn := srv.nextConn(t)
	assert.Equal(t, "node-1:5672", conn.addr)
	conn.drop(&amqp.Error{Code: amqp.ConnectionForced, Server: true})
	assert.Equal(t, "node-2:5672", srv.nextConn(t).addr)
}

// TestFakeConcurrentPublishersPipeline: many publishers share the
// channel; all their messages are written before any is confirmed.
func TestFakeConcurrentPublishersPipeline(t *testing.T) {
	b, _, _, ch := openFake(t)
	const n = 64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			errs <- b.Publish(context.Background(), msg("m-"+string(rune('a'+i%26))+string(rune('a'+i/26))))
		})
	}
	var tags []uint64
	for range n {
		tags = append(tags, ch.next(t).tag) // all written, none confirmed yet
	}
	for _, tag := range tags {
		ch.ack(tag)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		assert.NoError(t, err)
	}
}

// TestFakeBackBrokerFoundWithinASecond: with the default backoff, a broker
// that comes back after a long outage is connected to within about a
// second (the largest wait is 1s), not after a 10s ceiling.
func TestFakeBackBrokerFoundWithinASecond(t *testing.T) {
	brokertest.CheckNoLeak(t)
	srv := newFakeServer()
	b, err := New(context.Background(), fakeConfig(), withDialer(srv.dial), WithLogger(quietLogger()))
	require.NoError(t, err)
	defer b.Close(context.Background())
	conn := srv.nextConn(t)
	srv.failDials(1000, errFakeRefused)
	conn.drop(&amqp.Error{Code: amqp.ConnectionForced, Server: true})
	brokertest.WaitFor(t, 30*time.Second, "the backoff to reach its ceiling", func() bool { return len(srv.addrs()) >= 8 })
	srv.allowDials()
	start := time.Now()
	srv.nextConn(t)
	took := time.Since(start)
	t.Logf("broker back: reconnected after %v", took)
	assert.Less(t, took, 1500*time.Millisecond, "the longest wait between attempts is 1s")
}

// TestFakeChannelThatOnlyNacksIsReplaced: a channel that nacks every
// publish for longer than a second (RabbitMQ 3.10 after a quorum queue's
// leader change, for a channel opened during the election) is replaced by
// a new one on the same connection, where the publishes are confirmed.
func TestFakeChannelThatOnlyNacksIsReplaced(t *testing.T) {
	b, srv, conn, ch := openFake(t, publisherOption(func(o *publisherOptions) error { o.nackReplace = 50 * time.Millisecond; return nil }))
	var nacked int
	replaced := func(c *fakeChannel, res <-chan error) {
		// The adapter gave up on the nacking channel: the publish goes out
		// on the new one, unless it was the nack that ended the streak
		// (the replacement starts before that nack is reported).
		select {
		case p := <-c.published:
			c.ack(p.tag)
		case err := <-res:
			assert.ErrorIs(t, err, broker.ErrUnavailable)
			nacked++
			res = publishAsync(context.Background(), b, msg("m-after"))
			p := c.next(t)
			c.ack(p.tag)
		case <-time.After(5 * time.Second):
			t.Fatal("timed out waiting for a publish on the new channel")
		}
		require.NoError(t, recv(t, res, "the publish on the new channel"))
		t.Logf("replaced after %d nacks; no new connection: %d dials", nacked, len(srv.addrs()))
		assert.Len(t, srv.addrs(), 1)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		res := publishAsync(context.Background(), b, msg("m-"+strconv.Itoa(nacked)))
		select {
		case p := <-ch.published:
			ch.nack(p.tag)
			select {
			case err := <-res:
				assert.ErrorIs(t, err, broker.ErrUnavailable)
				nacked++
			case c := <-conn.chans: // closed before the nack reached it: re-sent on the new channel
				replaced(c, res)
				return
			}
		case c := <-conn.chans:
			replaced(c, res)
			return
		}
	}
	t.Fatalf("after %d nacks the channel was never replaced", nacked)
}

// TestFakeCloseAfterAChannelFaultClosesTheConnection: a channel closed by
// the broker over one message leaves its connection to be reused; a Close
// that comes before the new channel closes that connection too, and
// InFlight reads 0 after it.
func TestFakeCloseAfterAChannelFaultClosesTheConnection(t *testing.T) {
	for range 50 {
		b, _, conn, ch := openFake(t)
		big := msg("big")
		big.Body = make([]byte, 2<<20)
		res := publishAsync(context.Background(), b, big)
		ch.next(t)
		ch.fail(amqp.PreconditionFailed, "PRECONDITION_FAILED - message size 2097152 is larger than configured max size 1048576")
		require.ErrorIs(t, recv(t, res, "the big message's result"), broker.ErrTooLarge)
		require.NoError(t, b.Close(context.Background()))
		assert.True(t, conn.IsClosed(), "the connection Close found without a channel is closed")
		assert.Zero(t, b.Stats().InFlight)
	}
}
