package bridge

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/internal/lifecycle"
)

// asyncForwarder publishes queued messages from one goroutine per lane. A
// message's lane is chosen by its key, so one aggregate's messages are
// published one after the other, in the order they were queued.
type asyncForwarder struct {
	b       broker.Broker
	lanes   []chan broker.Message
	seed    maphash.Seed
	timeout time.Duration
	sink    broker.DeadLetterSink
	onError func(broker.Message, error)
	log     *slog.Logger

	closing lifecycle.Closing
	mu      sync.RWMutex   // guards closed against enqueue's check
	closed  bool           // set by close before it waits for sending
	sending sync.WaitGroup // enqueue calls that may still send on a lane
	work    context.Context
	stop    context.CancelFunc // cancels the publishes in progress when Close gives up
	workers sync.WaitGroup
	// closeCtx is Close's ctx, once Close began: it bounds the dead-letter
	// writes too.
	closeCtx atomic.Pointer[context.Context]

	enqueued, published, deadLettered, failed atomic.Int64
}

func newAsync(b broker.Broker, c asyncConfig, timeout time.Duration, sink broker.DeadLetterSink, onError func(broker.Message, error), log *slog.Logger) *asyncForwarder {
	a := &asyncForwarder{b: b, lanes: make([]chan broker.Message, c.workers), seed: maphash.MakeSeed(),
		timeout: timeout, sink: sink, onError: onError, log: log}
	a.work, a.stop = context.WithCancel(context.Background())
	perLane := max(1, (c.queue+c.workers-1)/c.workers)
	for i := range a.lanes {
		lane := make(chan broker.Message, perLane)
		a.lanes[i] = lane
		a.workers.Go(func() {
			for m := range lane {
				a.publish(m)
			}
		})
	}
	return a
}

// lane picks the lane of m: by key, so that one aggregate stays in order;
// a message without a key goes by id.
func (a *asyncForwarder) lane(m broker.Message) chan broker.Message {
	k := m.Key
	if k == "" {
		k = m.ID
	}
	return a.lanes[maphash.String(a.seed, k)%uint64(len(a.lanes))]
}

func (a *asyncForwarder) enqueue(ctx context.Context, m broker.Message) error {
	a.mu.RLock()
	if a.closed {
		a.mu.RUnlock()
		return &broker.Error{Op: "bridge: forward", Kind: broker.ErrClosed}
	}
	a.sending.Add(1)
	a.mu.RUnlock()
	defer a.sending.Done()
	lane := a.lane(m)
	select {
	case lane <- m:
		a.enqueued.Add(1)
		return nil
	case <-a.closing.Done():
		return &broker.Error{Op: "bridge: forward", Kind: broker.ErrClosed}
	case <-ctx.Done():
		return fmt.Errorf("forwarder lane full (%d events), event not accepted: %w", cap(lane), ctx.Err())
	}
}

func (a *asyncForwarder) publish(m broker.Message) {
	ctx, cancel := context.WithTimeout(a.work, a.timeout)
	start := time.Now()
	err := a.b.Publish(ctx, m)
	cancel()
	if err == nil {
		a.published.Add(1)
		return
	}
	if !errors.Is(err, broker.ErrDeadLettered) && a.sink != nil {
		d := broker.NewDeadLetter(m, err, 1, start, time.Now())
		sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
		if c := a.closeCtx.Load(); c != nil {
			defer context.AfterFunc(*c, scancel)() // Close's ctx bounds the writes left
		}
		if perr := a.sink.Put(sctx, d); perr == nil {
			err = &broker.Error{Op: "bridge: forward", Kind: broker.ErrDeadLettered, Err: err}
		} else {
			err = errors.Join(err, fmt.Errorf("dead-lettering failed: %w", perr))
		}
		scancel()
	}
	if errors.Is(err, broker.ErrDeadLettered) {
		a.deadLettered.Add(1)
	} else {
		a.failed.Add(1)
	}
	a.onError(m, err)
}

func (a *asyncForwarder) stats() Stats {
	return Stats{Enqueued: a.enqueued.Load(), Published: a.published.Load(),
		DeadLettered: a.deadLettered.Load(), Failed: a.failed.Load()}
}

func (a *asyncForwarder) close(ctx context.Context) error {
	if !a.closing.Begin() {
		return nil
	}
	a.closeCtx.Store(&ctx)
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	a.sending.Wait() // no enqueue can send on a lane any more
	for _, lane := range a.lanes {
		close(lane) // workers drain what is left, then stop
	}
	done := make(chan struct{})
	go func() {
		a.workers.Wait()
		close(done)
	}()
	cutoff, stopCutoff := lifecycle.Cutoff(ctx)
	defer stopCutoff()
	var err error
	select {
	case <-done:
	case <-cutoff:
		a.stop() // publishes fail fast now: the rest is dead-lettered in the time left
		select {
		case <-done:
		case <-ctx.Done():
			<-done
		}
		err = ctx.Err()
		if err == nil {
			err = fmt.Errorf("bridge: forwarder closed with events left: they were dead-lettered or reported: %w", context.DeadlineExceeded)
		}
	}
	a.stop()
	st := a.stats()
	a.log.Info("bridge forwarder: closed", "enqueued", st.Enqueued, "published", st.Published,
		"dead_lettered", st.DeadLettered, "failed", st.Failed)
	return err
}
