package lanes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/adapter"
	"github.com/domainevents/domainevents/internal/backoff"
)

// Item is one unit of work: a delivery and what the adapter needs to settle
// it.
type Item[T any] struct {
	// Key is the lane: items of one key run one at a time, in the order
	// they were added.
	Key string
	// Delivery is handed to the handler; its Attempt is the first call's
	// (from 1), each retry adds one.
	Delivery broker.Delivery
	// Value is the adapter's own (the native message), for Settle.
	Value T
	// Gone, if not nil, is closed when the item can no longer be settled
	// with the broker (see the package doc).
	Gone <-chan struct{}
}

func (it *Item[T]) gone() bool {
	if it.Gone == nil {
		return false
	}
	select {
	case <-it.Gone:
		return true
	default:
		return false
	}
}

// Outcome is how an item left the dispatcher.
type Outcome int

// The outcomes.
const (
	// Handled: the handler returned nil. Acknowledge it.
	Handled Outcome = iota + 1
	// DeadLettered: the handler gave up on it and Config.DeadLetter stored
	// its dead letter (or there is no DeadLetter). Acknowledge it.
	DeadLettered
	// Abandoned: not finished (closing, or Gone); the broker must deliver
	// it again. Return it (RabbitMQ: nack with requeue) or leave it
	// unacknowledged.
	Abandoned
)

func (o Outcome) String() string {
	switch o {
	case Handled:
		return "handled"
	case DeadLettered:
		return "dead-lettered"
	case Abandoned:
		return "abandoned"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Config configures [New]. Workers, Handler and Settle are required.
type Config[T any] struct {
	// Workers is how many handler calls may run at once.
	Workers int
	// Capacity bounds the items held (waiting, retrying or running).
	// Default 4 × Workers.
	Capacity int
	// LaneCapacity bounds the items of one key. Default Capacity.
	LaneCapacity int
	// MaxAttempts is the Delivery.Attempt after whose failure an item is
	// dead (broker/adapter.Outcome). Default 1: no retry.
	MaxAttempts int
	// Backoff is the wait before retry n (from 1) of an item, and before
	// storing its dead letter again. The zero Policy retries at once.
	Backoff backoff.Policy
	// Handler handles a delivery, through broker/adapter.CallHandler.
	Handler broker.Handler
	// Logger is where broker/adapter.CallHandler logs a panicking
	// handler's stack (once per panic). Nil: slog.Default().
	Logger *slog.Logger
	// Settle is told how each item left (see the package doc). It and the
	// other callbacks must not keep it past their return: its memory
	// holds the next items.
	Settle func(it *Item[T], o Outcome)
	// DeadLetter stores a dead item's dead letter (cause is the handler's
	// last error); an error makes it try again after the backoff, holding
	// the lane. Nil: dead items are settled as DeadLettered at once. Its
	// ctx ends when Close gives up.
	DeadLetter func(ctx context.Context, it *Item[T], dl broker.DeadLetter, cause error) error
	// Retrying, if not nil, is told of each handler failure that will be
	// tried again after wait (attempt is the Delivery.Attempt that failed).
	Retrying func(it *Item[T], err error, attempt int, wait time.Duration)
	// DeadLetterFailed, if not nil, is told of each DeadLetter failure that
	// will be tried again after wait.
	DeadLetterFailed func(it *Item[T], err error, wait time.Duration)
	// Context, if not nil, is the parent of the ctx given to Handler and
	// DeadLetter: ending it ends theirs (as Close giving up does), so that
	// an adapter running several dispatchers can cancel them all at once.
	// Default: context.Background().
	Context context.Context
}

// ErrClosed is what Add returns once Close has begun.
var ErrClosed = errors.New("lanes: dispatcher closed")

// Dispatcher runs items on lanes by key. See the package doc.
type Dispatcher[T any] struct {
	// Lock order: mu only; never held while a callback or handler runs, or
	// while waiting on anything but cond.
	c      Config[T]
	ctx    context.Context // the handlers' ctx, ended when Close gives up
	cancel context.CancelFunc
	quit   chan struct{} // closed by Close
	done   chan struct{} // closed when every worker and timer has ended

	mu      sync.Mutex
	cond    sync.Cond           // on mu: a lane became ready, or Close began
	ready   []*lane[T]          // lanes whose head may run, oldest first
	lanes   map[string]*lane[T] // lanes holding items, running or not
	total   int                 // items held
	room    chan struct{}       // closed (and replaced) when an item leaves while someone waits
	waiters int                 // Add and Idle calls waiting on room
	closed  bool
	running int
	spare   []*lane[T]  // lanes emptied by their worker, for new keys: no allocation per key
	free    []*entry[T] // entries settled by a worker, for new items: no allocation per item

	workers, timers sync.WaitGroup
	aborted         atomic.Bool // Close gave up on the running handlers
	closing         atomic.Bool // closed, read without mu

	handled, retried, deadLettered, abandoned atomic.Int64
}

type laneState int8

const (
	queued  laneState = iota // in ready
	running                  // a worker has it
	waiting                  // a retry's timer will queue it
)

// A lane is in the map while it holds items. One emptied by Expire while
// queued stays in ready, empty, and the worker that takes it drops it.
type lane[T any] struct {
	key   string
	q     []*entry[T] // q[0] is the head
	state laneState
	timer *time.Timer // while waiting
	gen   uint64      // counts waits: a stopped wait's late timer is ignored
}

type entry[T any] struct {
	Item[T]
	tries     int                // failed handler calls here
	first     time.Time          // the first failure
	dead      *broker.DeadLetter // the handler gave up: store this
	cause     error              // and why
	deadTries int                // failed DeadLetter calls
}

// New starts a dispatcher's workers. A bad Config is an error naming the
// field.
func New[T any](c Config[T]) (*Dispatcher[T], error) {
	switch {
	case c.Workers < 1:
		return nil, fmt.Errorf("lanes: Workers %d: must be at least 1", c.Workers)
	case c.Handler == nil:
		return nil, errors.New("lanes: Handler is nil")
	case c.Settle == nil:
		return nil, errors.New("lanes: Settle is nil")
	case c.Capacity < 0 || c.LaneCapacity < 0 || c.MaxAttempts < 0:
		return nil, fmt.Errorf("lanes: Capacity %d, LaneCapacity %d, MaxAttempts %d: must not be negative", c.Capacity, c.LaneCapacity, c.MaxAttempts)
	case c.Backoff.Initial < 0 || c.Backoff.Max < c.Backoff.Initial:
		return nil, fmt.Errorf("lanes: Backoff %v..%v: want 0 <= Initial <= Max", c.Backoff.Initial, c.Backoff.Max)
	}
	if c.Capacity == 0 {
		c.Capacity = 4 * c.Workers
	}
	if c.LaneCapacity == 0 || c.LaneCapacity > c.Capacity {
		c.LaneCapacity = c.Capacity
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 1
	}
	d := &Dispatcher[T]{c: c, quit: make(chan struct{}), done: make(chan struct{}),
		lanes: map[string]*lane[T]{}, room: make(chan struct{})}
	d.cond.L = &d.mu
	parent := c.Context
	if parent == nil {
		parent = context.Background()
	}
	d.ctx, d.cancel = context.WithCancel(parent)
	for range c.Workers {
		d.workers.Go(d.work)
	}
	return d, nil
}

// Add queues it on its key's lane, waiting while the dispatcher or the lane
// is full. It returns ctx.Err() if ctx ends first and ErrClosed once Close
// has begun; the item is then not taken (settle it yourself). Add is meant
// for one feeder goroutine per ordered stream: the order of Adds is the
// order of a key's items.
func (d *Dispatcher[T]) Add(ctx context.Context, it Item[T]) error {
	d.mu.Lock()
	for {
		if d.closed {
			d.mu.Unlock()
			return ErrClosed
		}
		l := d.lanes[it.Key]
		if d.total < d.c.Capacity && (l == nil || len(l.q) < d.c.LaneCapacity) {
			e := d.newEntry(it)
			if l == nil {
				l = d.newLane(it.Key)
				l.q = append(l.q, e)
				d.lanes[it.Key] = l
				d.push(l)
			} else {
				l.q = append(l.q, e)
			}
			d.total++
			d.mu.Unlock()
			return nil
		}
		if err := d.wait(ctx); err != nil {
			return err
		}
	}
}

// wait waits, with mu held, until an item leaves, Close begins or ctx
// ends (its error). It returns with mu held unless it returns an error.
func (d *Dispatcher[T]) wait(ctx context.Context) error {
	room := d.room
	d.waiters++
	d.mu.Unlock()
	var err error
	select {
	case <-room:
	case <-d.quit:
	case <-ctx.Done():
		err = ctx.Err()
	}
	d.mu.Lock()
	d.waiters--
	if err != nil {
		d.mu.Unlock()
	}
	return err
}

// newLane returns an empty lane for key, a spare one if there is. Called
// with mu held.
func (d *Dispatcher[T]) newLane(key string) *lane[T] {
	if n := len(d.spare); n > 0 {
		l := d.spare[n-1]
		d.spare[n-1] = nil
		d.spare = d.spare[:n-1]
		l.key = key
		return l
	}
	return &lane[T]{key: key}
}

// newEntry returns an entry holding it, a free one if there is. Called
// with mu held.
func (d *Dispatcher[T]) newEntry(it Item[T]) *entry[T] {
	if n := len(d.free); n > 0 {
		e := d.free[n-1]
		d.free[n-1] = nil
		d.free = d.free[:n-1]
		e.Item = it
		return e
	}
	return &entry[T]{Item: it}
}

// push queues lane l for a worker. Called with mu held.
func (d *Dispatcher[T]) push(l *lane[T]) {
	l.state = queued
	d.ready = append(d.ready, l)
	d.cond.Signal()
}

// left counts n items gone and wakes whoever waits for room. Called with
// mu held.
func (d *Dispatcher[T]) left(n int) {
	d.total -= n
	if d.waiters > 0 {
		close(d.room)
		d.room = make(chan struct{})
	}
}

func (d *Dispatcher[T]) work() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for {
		for len(d.ready) == 0 && !d.closed {
			d.cond.Wait()
		}
		if d.closed {
			return
		}
		l := d.ready[0]
		d.ready[0] = nil
		d.ready = d.ready[1:]
		if len(l.q) == 0 {
			continue // emptied by Expire
		}
		l.state = running
		d.running++
		d.run(l)
	}
}

// run works on lane l until it is empty, waiting for a retry, or handed
// back to the ready queue because another lane waits for a worker. It is
// called, and returns, with mu held.
func (d *Dispatcher[T]) run(l *lane[T]) {
	for {
		e := l.q[0] // while the lane runs, only its worker removes the head
		d.mu.Unlock()
		o, wait := d.step(e)
		d.mu.Lock()
		if o == 0 { // try again after wait, holding the lane
			if !d.closed && !e.gone() {
				d.running--
				d.hold(l, wait)
				return
			}
			o = Abandoned
		}
		d.mu.Unlock()
		d.settle(e, o)
		d.mu.Lock()
		copy(l.q, l.q[1:]) // the array keeps its start, to be reused (lanes are short)
		l.q[len(l.q)-1] = nil
		l.q = l.q[:len(l.q)-1]
		d.left(1)
		if len(d.free) < d.c.Capacity { // Settle has returned: nothing refers to e
			*e = entry[T]{}
			d.free = append(d.free, e)
		}
		switch {
		case len(l.q) == 0:
			delete(d.lanes, l.key)
			d.running--
			// Spare it: only a lane its worker emptied is in no ready
			// queue and has no timer (a late timer's gen no longer
			// matches: gen only grows).
			if len(d.spare) < d.c.Capacity {
				l.q = l.q[:0]
				d.spare = append(d.spare, l)
			}
			return
		case len(d.ready) > 0:
			// Another lane waits for a worker: take turns.
			d.running--
			d.push(l)
			return
		}
	}
}

// hold makes lane l wait before its head's next attempt. Called with mu
// held.
func (d *Dispatcher[T]) hold(l *lane[T], wait time.Duration) {
	l.state = waiting
	d.timers.Add(1)
	l.gen++
	gen := l.gen
	l.timer = time.AfterFunc(wait, func() { d.wake(l, gen) })
}

// Run is Add for a dispatcher of one worker (Workers 1) whose feeder can
// spare its goroutine: when the dispatcher holds no item, Run makes the
// item's first attempt on the calling goroutine (the handler's ctx is the
// workers') and settles it there, sparing the hand-over to the worker. If
// that attempt fails and the item is to be tried again, its lane waits
// for the backoff as on the worker, the later items of its key behind it
// and the other keys going on (on the worker: Run hands every item over
// while the dispatcher holds one). Close waits for a running Run's
// handler as for a worker's. Otherwise (more workers, items held) it is
// Add. Like Add, it is for the stream's one feeder goroutine.
func (d *Dispatcher[T]) Run(ctx context.Context, it Item[T]) error {
	d.mu.Lock()
	if d.c.Workers != 1 || d.total > 0 || d.closed {
		d.mu.Unlock()
		return d.Add(ctx, it)
	}
	// Nothing held, and only this goroutine adds: the dispatcher stays
	// empty but for e until Run returns. Counted as a worker (there is
	// one, not closed: the count is above zero), so Close waits for it.
	e := d.newEntry(it)
	d.total++
	d.running++
	d.workers.Add(1)
	d.mu.Unlock()
	defer d.workers.Done()
	o, wait := d.step(e)
	d.mu.Lock()
	if o == 0 {
		if !d.closed && !e.gone() {
			l := d.newLane(e.Key) // none holds items: the dispatcher held none
			l.q = append(l.q, e)
			d.lanes[e.Key] = l
			d.running--
			d.hold(l, wait)
			d.mu.Unlock()
			return nil
		}
		o = Abandoned
	}
	d.mu.Unlock()
	d.settle(e, o)
	d.mu.Lock()
	d.running--
	d.left(1)
	if len(d.free) < d.c.Capacity {
		*e = entry[T]{}
		d.free = append(d.free, e)
	}
	d.mu.Unlock()
	return nil
}

// step makes one attempt at e: its handler call, or storing its dead
// letter. It returns the outcome, or 0 and how long to wait before the
// next attempt.
func (d *Dispatcher[T]) step(e *entry[T]) (Outcome, time.Duration) {
	if d.isClosed() || e.gone() {
		return Abandoned, 0
	}
	if e.dead == nil {
		del := e.Delivery
		del.Attempt = max(del.Attempt, 1) + e.tries
		err := adapter.CallHandler(d.ctx, d.c.Logger, d.c.Handler, del)
		switch {
		case d.aborted.Load():
			return Abandoned, 0
		case err == nil:
			return Handled, 0
		case d.isClosed() || e.gone():
			return Abandoned, 0 // not tried again here: the broker delivers it again
		}
		now := time.Now()
		if e.first.IsZero() {
			e.first = now
		}
		e.tries++
		if !adapter.Outcome(err, del.Attempt, d.c.MaxAttempts) {
			wait := d.c.Backoff.Delay(e.tries)
			d.retried.Add(1)
			if d.c.Retrying != nil {
				d.c.Retrying(&e.Item, err, del.Attempt, wait)
			}
			return 0, wait
		}
		dl := adapter.DeadLetterOf(del, err, del.Attempt, e.first, now)
		e.dead, e.cause = &dl, err
	}
	if d.c.DeadLetter == nil {
		return DeadLettered, 0
	}
	err := d.c.DeadLetter(d.ctx, &e.Item, *e.dead, e.cause)
	switch {
	case err == nil:
		return DeadLettered, 0
	case d.aborted.Load() || d.isClosed() || e.gone():
		return Abandoned, 0
	}
	e.deadTries++
	wait := d.c.Backoff.Delay(e.deadTries)
	if d.c.DeadLetterFailed != nil {
		d.c.DeadLetterFailed(&e.Item, err, wait)
	}
	return 0, wait
}

func (d *Dispatcher[T]) isClosed() bool { return d.closing.Load() }

// wake queues a lane whose retry (number gen) is due, unless Close or
// Expire stopped that wait meanwhile.
func (d *Dispatcher[T]) wake(l *lane[T], gen uint64) {
	defer d.timers.Done()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || l.state != waiting || l.gen != gen {
		return
	}
	l.timer = nil
	d.push(l)
}

// settle counts and reports an outcome.
func (d *Dispatcher[T]) settle(e *entry[T], o Outcome) {
	switch o {
	case Handled:
		d.handled.Add(1)
	case DeadLettered:
		d.deadLettered.Add(1)
	case Abandoned:
		d.abandoned.Add(1)
	}
	d.c.Settle(&e.Item, o)
}

// stopTimer stops a waiting lane's timer, accounting for its callback if
// it will not run. Called with mu held.
func (d *Dispatcher[T]) stopTimer(l *lane[T]) {
	if l.timer != nil && l.timer.Stop() {
		d.timers.Done()
	}
	l.timer = nil
	l.gen++
}

// Expire settles as Abandoned every item not running whose Gone is
// closed, and lets the lanes they held go on with their next items.
func (d *Dispatcher[T]) Expire() {
	var out []*entry[T]
	d.mu.Lock()
	for key, l := range d.lanes {
		from := 0
		if l.state == running {
			from = 1 // the head is the worker's
		}
		head := l.q[0]
		kept := l.q[:from]
		for _, e := range l.q[from:] {
			if e.gone() {
				out = append(out, e)
			} else {
				kept = append(kept, e)
			}
		}
		if len(kept) == len(l.q) {
			continue
		}
		clear(l.q[len(kept):])
		l.q = kept
		switch {
		case len(l.q) == 0: // not running: queued (a worker will drop it) or waiting
			d.stopTimer(l)
			delete(d.lanes, key)
		case l.state == waiting && l.q[0] != head: // the retried head went: go on at once
			d.stopTimer(l)
			d.push(l)
		}
	}
	if len(out) > 0 {
		d.left(len(out))
	}
	d.mu.Unlock()
	for _, e := range out {
		d.settle(e, Abandoned)
	}
}

// Idle waits until the dispatcher holds no item (every item added was
// settled), or ctx ends (ctx.Err()), or Close begins (ErrClosed).
func (d *Dispatcher[T]) Idle(ctx context.Context) error {
	d.mu.Lock()
	for d.total > 0 {
		if d.closed {
			d.mu.Unlock()
			return ErrClosed
		}
		if err := d.wait(ctx); err != nil {
			return err
		}
	}
	d.mu.Unlock()
	return nil
}

// Close stops accepting items, settles those not running as Abandoned,
// waits for the running handler calls and settles them, and returns once
// every worker has ended. If ctx ends first it cancels the handlers' ctx
// and returns ctx.Err() (see the package doc). A second Close waits like
// the first, within its own ctx.
func (d *Dispatcher[T]) Close(ctx context.Context) error {
	var out []*entry[T]
	d.mu.Lock()
	if !d.closed {
		d.closed = true
		d.closing.Store(true)
		for key, l := range d.lanes {
			from := 0
			if l.state == running {
				from = 1
			}
			out = append(out, l.q[from:]...)
			clear(l.q[from:])
			l.q = l.q[:from]
			d.stopTimer(l)
			if len(l.q) == 0 {
				delete(d.lanes, key)
			}
		}
		clear(d.ready)
		d.ready = nil
		d.left(len(out))
		close(d.quit)
		d.cond.Broadcast()
		go func() {
			d.workers.Wait()
			d.timers.Wait()
			d.cancel()
			close(d.done)
		}()
	}
	d.mu.Unlock()
	for _, e := range out {
		d.settle(e, Abandoned)
	}
	select {
	case <-d.done:
		return nil
	case <-ctx.Done():
		d.aborted.Store(true)
		d.cancel()
		return ctx.Err()
	}
}

// Stats are a dispatcher's counters.
type Stats struct {
	// Handled, DeadLettered and Abandoned count settled items by outcome.
	Handled, DeadLettered, Abandoned int64
	// Retried counts handler failures followed by another attempt.
	Retried int64
	// Held is the items held now; Running the lanes a worker is on.
	Held, Running int
	// Keys is the number of keys holding items.
	Keys int
}

// Stats returns the counters.
func (d *Dispatcher[T]) Stats() Stats {
	d.mu.Lock()
	held, running, keys := d.total, d.running, len(d.lanes)
	d.mu.Unlock()
	return Stats{Handled: d.handled.Load(), DeadLettered: d.deadLettered.Load(), Abandoned: d.abandoned.Load(),
		Retried: d.retried.Load(), Held: held, Running: running, Keys: keys}
}
