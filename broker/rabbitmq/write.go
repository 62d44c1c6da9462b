package rabbitmq

import (
	"errors"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// The write side of the publisher: one writer goroutine takes queued
// records, in order, and writes them to the current session.

// writeLoop writes queued records to the current session, in order, until
// Close stops it. It is the only goroutine that publishes on a session's
// channel, so a delivery tag is always the one its publish gets.
func (b *Broker) writeLoop() {
	defer b.wg.Done()
	for {
		select {
		case <-b.kick:
		case <-b.stopped:
			return
		}
		for b.writeNext() {
		}
	}
}

// writeNext writes the head of the queue to the current session, unless
// there is none, the session is dead, or an isolated suspect must wait for
// the channel to be idle (or is in flight). It reports whether it wrote.
func (b *Broker) writeNext() bool {
	b.mu.Lock()
	s := b.sess
	if s == nil || len(b.queue) == 0 {
		b.mu.Unlock()
		return false
	}
	r := b.queue[0]
	s.mu.Lock()
	// A channel amqp091 already marked closed refuses every write: wait
	// for its loss to be handled (and the next session's kick) rather
	// than spin on ErrClosed.
	ok := !s.dead && !s.ch.IsClosed() && s.probe == nil && !(r.isolate && len(s.tags) > 0)
	var tag uint64
	if ok {
		tag = s.ch.GetNextPublishSeqNo()
		s.tags[tag] = r
		s.order = append(s.order, tag)
		r.conf = nil
		if r.isolate {
			s.probe = r
		}
	}
	s.mu.Unlock()
	if !ok {
		b.mu.Unlock()
		return false
	}
	b.queue[0] = nil
	b.queue = b.queue[1:]
	// Sent from now on (a failed write may have reached the broker in
	// part), set under the lock already held rather than taking it again
	// after the write; a write refused before its first byte restores
	// what it was (an earlier session may have carried the record).
	wasSent := r.sent
	r.sent = true
	b.mu.Unlock()

	conf, err := s.ch.publish(b.exchange.name, r.key, r.pub)
	if err != nil {
		b.writeFailed(s, tag, r, err, wasSent)
		return true
	}
	s.mu.Lock()
	if s.tags[tag] == r { // else the session's loss already handed it back
		r.conf = conf
		if s.needWake {
			s.needWake = false
			select {
			case s.wake <- struct{}{}:
			default:
			}
		}
	}
	s.mu.Unlock()
	return true
}

// writeFailed handles a publish amqp091 could not write: the record goes
// back to the front of the queue (unless the session's loss already took
// it), and a connection that failed a write is closed so that it is
// replaced.
func (b *Broker) writeFailed(s *session, tag uint64, r *record, err error, wasSent bool) {
	// Both locks at once: between taking r back from s and putting it at
	// the front of the queue, s's loss must not hand back the records
	// written before r, or r would overtake them.
	b.mu.Lock()
	if errors.Is(err, amqp.ErrClosed) {
		r.sent = wasSent // refused before writing a byte: this write sent nothing
	}
	s.mu.Lock()
	if s.tags[tag] == r {
		delete(s.tags, tag)
		if s.probe == r {
			s.probe = nil
		}
		b.queue = append([]*record{r}, b.queue...)
	}
	s.mu.Unlock()
	b.mu.Unlock()
	if errors.Is(err, amqp.ErrClosed) {
		return // the channel is closing: its watcher retires it
	}
	b.log.Warn("rabbitmq publisher: write failed, reconnecting", "component", b.conn.component, "addr", s.addr, "err", err)
	b.kill(s.conn)
}

// kill closes conn in the background, bounding the close handshake (and a
// write blocked on a broker that stopped reading).
func (b *Broker) kill(conn connection) {
	b.wg.Go(func() { _ = conn.CloseDeadline(time.Now().Add(time.Second)) })
}

func (b *Broker) kickWriter() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}
