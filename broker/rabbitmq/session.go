package rabbitmq

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/domainevents/domainevents/broker"
)

// record is one message from Publish until its outcome.
//
// Its life: queued (in Broker.queue) → written to a session (in that
// session's tags, sent=true) → resolved (done closed). A lost session puts
// its unconfirmed records back at the front of the queue, in publish order,
// to be written again (same message id) on the next session. A record is
// in exactly one place at a time, so it is resolved exactly once.
type record struct {
	key  string // routing key
	pub  amqp.Publishing
	done chan struct{} // closed once err is the outcome
	err  error

	// Guarded by Broker.mu.
	sent    bool // written (or being written) to a session once: the broker may have it
	isolate bool // a suspect of a channel closed by a publish: write it alone

	// Guarded by the session.mu of the session it is on.
	returned *amqp.Return
	conf     pendingConfirm // of its write on that session; nil until written
}

// session is one confirm-mode channel of the publisher, on a connection.
// Each record written holds its own pending confirm from this channel, so
// confirms of a dead session are never mistaken for a later one's.
type session struct {
	id      uint64
	addr    string
	conn    connection
	ch      channel
	returns <-chan amqp.Return
	closed  chan *amqp.Error // the channel's close reason, then closed
	blocked <-chan amqp.Blocking
	wake    chan struct{} // (buffered 1) the watcher's wait for a written record is over

	mu       sync.Mutex         // guards the fields below; taken after Broker.mu
	tags     map[uint64]*record // written, awaiting confirm; nil once dead
	order    []uint64           // tags in write order (ascending); some may have left tags
	needWake bool               // the watcher waits on wake for the next record's confirm
	dead     bool
	probe    *record // an isolated suspect, in flight alone

	// Owned by the watcher: since when every confirm has been a nack.
	nackedSince time.Time
	replacing   bool
}

// openSession opens a confirm-mode channel on conn and declares the
// topology on it. blocked is the connection's blocked notifications,
// registered once per connection.
func (b *Broker) openSession(conn connection, addr string, blocked <-chan amqp.Blocking) (*session, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, wrap(opConnect, "open channel on "+addr, err)
	}
	if err := b.exchange.declare(ch); err != nil {
		_ = ch.Close()
		return nil, err
	}
	for _, q := range b.opts.queues {
		if err := declareBound(ch, q, b.exchange.name); err != nil {
			_ = ch.Close()
			return nil, err
		}
	}
	if err := ch.confirmMode(); err != nil {
		_ = ch.Close()
		return nil, wrap(opConnect, "enable publisher confirms on "+addr, err)
	}
	b.sessions++
	s := &session{id: b.sessions, addr: addr, conn: conn, ch: ch, tags: map[uint64]*record{}, blocked: blocked,
		wake: make(chan struct{}, 1)}
	// Unbuffered: amqp091 hands a return over before it reads the ack of
	// the same message, so the watcher marks it before it sees that ack.
	s.returns = ch.NotifyReturn(make(chan amqp.Return))
	s.closed = make(chan *amqp.Error, 1)
	ch.NotifyClose(s.closed)
	return s, nil
}

// connectSession dials the next address and opens a session on it.
func (b *Broker) connectSession(ctx context.Context) (*session, error) {
	conn, addr, err := b.conn.connect(ctx)
	if err != nil {
		return nil, err
	}
	blocked := conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	defer b.conn.closeOnStop(conn)()
	s, err := b.openSession(conn, addr, blocked)
	if err != nil {
		_ = conn.CloseDeadline(time.Now().Add(time.Second))
		return nil, err
	}
	return s, nil
}

// watch resolves s's confirms, oldest first, and its returns until its
// channel closes, then retires it (lose).
func (b *Broker) watch(s *session) {
	defer b.wg.Done()
	returns := s.returns
	blocked := s.blocked
	for {
		s.mu.Lock()
		front := s.front()
		s.mu.Unlock()
		select {
		case <-front:
			if b.settle(s) {
				// The channel is closing: its close notice follows. Keep
				// taking returns meanwhile: amqp091 may be handing one
				// over (for a message whose ack it then applies), and
				// the notice waits for that hand-over.
				b.lose(s, b.awaitClose(s, returns))
				return
			}
		case <-s.wake:
		case reason, ok := <-s.closed:
			if !ok {
				reason = nil
			}
			b.lose(s, reason)
			return
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			b.markReturned(s, r)
		case bl, ok := <-blocked:
			if !ok {
				blocked = nil
				continue
			}
			b.setBlocked(s, bl)
		}
	}
}

// awaitClose waits for s's close notice, marking the returns that arrive
// before it, and returns the close reason (nil for a close without one).
func (b *Broker) awaitClose(s *session, returns <-chan amqp.Return) *amqp.Error {
	for {
		select {
		case reason, ok := <-s.closed:
			if !ok {
				return nil
			}
			return reason
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			b.markReturned(s, r)
		}
	}
}

// front drops the tags that left s.tags from the head of s.order and
// returns the Done channel of the oldest pending confirm; nil, asking the
// writer for a wake, when the oldest record is not written yet or there is
// none. The caller holds s.mu.
func (s *session) front() <-chan struct{} {
	for len(s.order) > 0 {
		r := s.tags[s.order[0]]
		if r == nil {
			s.order = s.order[1:]
			continue
		}
		if r.conf == nil {
			break
		}
		return r.conf.Done()
	}
	s.needWake = true
	return nil
}

// markReturned notes that the earliest unconfirmed message with the
// returned id came back unroutable; its ack follows and fails it.
func (b *Broker) markReturned(s *session, ret amqp.Return) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var best uint64
	for tag, r := range s.tags {
		if r.returned == nil && r.pub.MessageId == ret.MessageId && (best == 0 || tag < best) {
			best = tag
		}
	}
	if best != 0 {
		s.tags[best].returned = &ret
	}
}

// settle resolves the records at the head of s whose confirm has come, in
// publish order. A record failed by the channel's close (not acked, channel
// closed) is left for lose to hand back, and settle reports closing.
func (b *Broker) settle(s *session) (closing bool) {
	type outcome struct {
		r   *record
		ack bool
		ret *amqp.Return
	}
	var done []outcome
	wake := false
	s.mu.Lock()
	for len(s.order) > 0 {
		tag := s.order[0]
		r := s.tags[tag]
		if r == nil {
			s.order = s.order[1:]
			continue
		}
		if r.conf == nil || !isDone(r.conf) {
			break
		}
		ack := r.conf.Acked()
		if !ack && s.ch.IsClosed() {
			closing = true // the channel's close failed it: lose hands it back
			break
		}
		s.order = s.order[1:]
		delete(s.tags, tag)
		if s.probe == r {
			s.probe = nil
			wake = true
		}
		done = append(done, outcome{r, ack, r.returned})
	}
	wake = wake || (len(done) > 0 && len(s.tags) == 0)
	s.mu.Unlock()
	if wake {
		b.kickWriter() // an isolated suspect may go now
	}
	for _, o := range done {
		b.confirm(s, o.r, o.ack, o.ret)
	}
	return closing
}

// confirm resolves r, acked or nacked by the broker on s (ret: it came
// back unroutable first).
func (b *Broker) confirm(s *session, r *record, ack bool, ret *amqp.Return) {
	if ack {
		s.nackedSince = time.Time{}
	} else {
		b.nackedStreak(s)
	}
	switch {
	case !ack:
		// A quorum queue nacks during a leader election, a queue with
		// overflow=reject-publish while it is full: both pass, so a nack is
		// retryable (the retry layer bounds how long).
		b.stats.nacked.Add(1)
		b.resolve(r, &broker.Error{Op: opPublish, Kind: broker.ErrUnavailable,
			Err: fmt.Errorf("exchange %s nacked message %s (%s): a queue is full (reject-publish) or electing its leader", b.exchange.name, r.pub.MessageId, r.key)})
	case ret != nil:
		b.stats.returned.Add(1)
		b.resolve(r, &broker.Error{Op: opPublish, Kind: broker.ErrUnroutable,
			Err: fmt.Errorf("exchange %s has no queue bound for routing key %q (message %s): %d %s; bind a queue or use WithQueue / WithAlternateExchange",
				b.exchange.name, r.key, r.pub.MessageId, ret.ReplyCode, ret.ReplyText)})
	default:
		b.stats.confirmed.Add(1)
		b.resolve(r, nil)
	}
}

// nackedStreak replaces a channel that has nacked everything for longer
// than nackReplace: RabbitMQ 3.10 leaves a channel opened while a quorum
// queue was electing its leader nacking every publish for good (measured on
// a 3-node cluster: a fresh channel on the same node is confirmed at once).
// The watcher calls it; the channel's close makes the watcher retire the
// session, and the supervisor opens a new channel on the same connection.
func (b *Broker) nackedStreak(s *session) {
	now := time.Now()
	if s.nackedSince.IsZero() {
		s.nackedSince = now
		return
	}
	if s.replacing || now.Sub(s.nackedSince) < b.opts.nackReplace {
		return
	}
	s.replacing = true
	b.log.Warn("rabbitmq publisher: the broker has nacked every publish on this channel for a while (a quorum queue that changed leader?): replacing the channel",
		"component", b.conn.component, "addr", s.addr, "since", s.nackedSince)
	b.wg.Go(func() { _ = s.ch.Close() })
}

// lose retires a dead session: its unconfirmed messages go back to the
// front of the queue, in publish order. If the broker closed the channel
// because of a message it was given, the suspects are dealt with first: a
// size over the server's limit fails the too-large ones at once (and the
// limit applies from now on); otherwise a suspect written alone that closes
// the channel again is the culprit, failed alone; the others are written
// one at a time until the culprit is known. Then the supervisor reconnects.
func (b *Broker) lose(s *session, reason *amqp.Error) {
	type outcome struct {
		r   *record
		ret *amqp.Return
	}
	var acked []outcome // before the channel closed
	s.mu.Lock()
	s.dead = true
	tags := make([]uint64, 0, len(s.tags))
	for t := range s.tags {
		tags = append(tags, t)
	}
	slices.Sort(tags)
	suspects := make([]*record, 0, len(tags))
	for _, t := range tags {
		r := s.tags[t]
		if r.conf != nil && isDone(r.conf) && r.conf.Acked() {
			acked = append(acked, outcome{r, r.returned})
			continue
		}
		r.returned = nil
		suspects = append(suspects, r)
	}
	probe := s.probe
	s.tags, s.probe, s.order = nil, nil, nil
	s.mu.Unlock()
	for _, o := range acked {
		b.confirm(s, o.r, true, o.ret)
	}

	var failed []*record
	var cause error = amqp.ErrClosed
	if reason != nil {
		cause = reason
	}
	b.mu.Lock()
	if publishFault(reason) && len(suspects) > 0 {
		if limit, ok := serverMaxSize(reason); ok {
			b.limitSize(limit)
			suspects = slices.DeleteFunc(suspects, func(r *record) bool {
				if len(r.pub.Body) > limit {
					failed = append(failed, r)
					return true
				}
				return false
			})
		} else if probe != nil && len(suspects) == 1 && suspects[0] == probe {
			failed, suspects = suspects, nil // sent alone, it closed the channel: the culprit
		} else {
			for _, r := range suspects {
				r.isolate = true
			}
		}
	}
	b.queue = append(suspects, b.queue...)
	if b.sess == s {
		b.sess = nil
	}
	b.lastErr = wrap(opPublish, "channel to "+s.addr+" closed", cause)
	b.last = s
	closing := b.state != stateOpen
	b.mu.Unlock()
	b.stats.republished.Add(int64(len(suspects)))

	for _, r := range failed {
		b.resolve(r, wrap(opPublish, fmt.Sprintf("message %s (%s, %d bytes) refused, the broker closed the channel", r.pub.MessageId, r.key, len(r.pub.Body)), reason))
	}
	if len(failed) > 0 {
		b.log.Warn("rabbitmq publisher: message refused, the broker closed the channel; the others are re-sent",
			"component", b.conn.component, "addr", s.addr, "failed", len(failed), "resent", len(suspects), "err", reason)
	} else if !closing || reason != nil {
		b.log.Warn("rabbitmq publisher: connection lost, reconnecting", "component", b.conn.component,
			"addr", s.addr, "unconfirmed", len(suspects), "err", cause)
	}
	b.conn.observe(broker.Observation{Kind: broker.ObservedDisconnected, Address: s.addr, Destination: b.exchange.name, Err: cause})
	select {
	case b.lost <- struct{}{}:
	default:
	}
}

// isDone reports whether c's outcome has come.
func isDone(c pendingConfirm) bool {
	select {
	case <-c.Done():
		return true
	default:
		return false
	}
}

func (b *Broker) setBlocked(s *session, bl amqp.Blocking) {
	b.mu.Lock()
	if bl.Active {
		b.blocked = bl.Reason
	} else {
		b.blocked = ""
	}
	b.mu.Unlock()
	if bl.Active {
		b.log.Warn("rabbitmq publisher: the broker blocks publishing (resource alarm)", "component", b.conn.component, "addr", s.addr, "reason", bl.Reason)
	} else {
		b.log.Info("rabbitmq publisher: the broker unblocked publishing", "component", b.conn.component, "addr", s.addr)
	}
}
