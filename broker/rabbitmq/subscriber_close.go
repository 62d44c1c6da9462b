package rabbitmq

import (
	"context"
	"fmt"
	"time"

	"github.com/domainevents/domainevents/broker"
)

// Close stops consuming (deliveries not started go back to the queue),
// waits for the running handlers to finish and be acknowledged, then
// disconnects. If ctx ends first, it cancels the handlers' ctx, closes the
// connection (what they did not finish is redelivered later) and returns
// ctx.Err() at once, even if a handler ignores its ctx: that handler's
// goroutine ends when the handler returns, and its outcome is discarded.
// Every other goroutine of the Subscriber has ended when Close returns. A
// second Close returns nil.
func (s *Subscriber) Close(ctx context.Context) error {
	s.mu.Lock()
	first := s.closing.Begin()
	ch, tag := s.ch, s.tag
	s.mu.Unlock()
	if !first {
		return nil
	}
	if ch != nil {
		// The broker stops delivering; best effort, it waits for the
		// broker's answer, which the connection's close below cuts short.
		s.wg.Go(func() { _ = ch.Cancel(tag, false) })
	}

	idle := make(chan struct{})
	go func() {
		s.busy.Wait()
		s.held.Wait() // held deliveries go back to the queue at once
		close(idle)
	}()
	var err error
	select {
	case <-idle:
	case <-ctx.Done():
		err = ctx.Err()
		s.cancelHandler()
		close(s.abort)
	}

	s.mu.Lock()
	link := s.link
	s.mu.Unlock()
	s.conn.stop() // aborts a reconnect in progress
	if link != nil {
		deadline := time.Now().Add(time.Second)
		if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
			deadline = dl
		}
		_ = link.CloseDeadline(deadline) // unacknowledged deliveries return to the queue
	}
	s.wg.Wait()
	s.cancelHandler()
	if perr := s.pub.Close(ctx); perr != nil && err == nil {
		err = perr
	}
	s.opts.conn.logger.Info("rabbitmq subscriber: closed", "component", s.conn.component, "queue", s.queue.Name,
		"handled", s.handled.Load(), "retried", s.retried.Load(), "dead_lettered", s.deadLettered.Load())
	return err
}

// Health reports whether the Subscriber is consuming: nil when connected;
// otherwise an error with the last connection error, matching
// broker.ErrUnauthorized when RabbitMQ refused the credentials or the
// virtual host (the Subscriber keeps trying), broker.ErrUnavailable
// otherwise; or broker.ErrClosed. It does not touch the network.
func (s *Subscriber) Health(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closing.Begun():
		return &broker.Error{Op: opConsume, Kind: broker.ErrClosed}
	case s.link == nil || s.link.IsClosed():
		why := "not connected yet"
		if s.lastErr != nil {
			why = fmt.Sprintf("not connected (last error: %v)", s.lastErr)
		}
		return &broker.Error{Op: opConsume, Kind: healthKind(s.lastErr), Err: fmt.Errorf("queue %s: %s", s.queue.Name, why)}
	}
	return s.pub.Health(ctx)
}
