package outbox

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/internal/backoff"
	"github.com/domainevents/domainevents/internal/reason"
)

// What a failed publish means for its row.
//
// The broker being away, or refusing what its configuration does not
// route or allow, is never a reason to give up on an event that is safe in
// the table: such rows wait, capped at a short backoff, for as long as it
// takes. Only a failure no retry can fix makes a row dead, and a failure
// that may be the message's own is bounded by WithMaxAttempts.

// failure classifies a publish error for the relay.
type failure int

const (
	// failUnavailable: the broker could not be reached, did not answer in
	// time (the publish's own deadline), or the outcome is unknown; the
	// adapter was closed or is reconnecting. Retried for as long as it
	// takes, never dead.
	failUnavailable failure = iota
	// failRefused: the broker is up and refuses what its configuration
	// does not route or allow (unroutable, unauthorized, rejected). The
	// row is held, reported loudly, and published once fixed; never dead.
	failRefused
	// failPermanent: the message can never be published (invalid, too
	// large): dead at once.
	failPermanent
	// failParked: the broker already put the message in a dead-letter
	// sink (a retry.Broker with one): marked dead at once, not duplicated.
	failParked
	// failOwn: an error of no category, or a panic in Publish: maybe the
	// message's own fault; dead after WithMaxAttempts of them.
	failOwn
)

// classify maps err (a Publish error) to a failure, by its first
// category in broker.Category's order: a dead-lettered or closed outcome
// before the cause it wraps.
func classify(err error) failure {
	switch broker.Category(err) {
	case broker.CategoryDeadLettered:
		return failParked
	case broker.CategoryClosed, broker.CategoryUnavailable, broker.CategoryDeadlineExceeded, broker.CategoryCanceled:
		return failUnavailable
	case broker.CategoryUnroutable, broker.CategoryUnauthorized, broker.CategoryRejected:
		return failRefused
	case broker.CategoryInvalid, broker.CategoryTooLarge:
		return failPermanent
	}
	return failOwn
}

// logEvery bounds how often the relay logs one kind of broker problem:
// the first at once, then at most once per interval.
const logEvery = 30 * time.Second

// problem is the latest failure of one category the broker caused.
type problem struct {
	err    error
	at     time.Time
	count  int64     // failures since the last log line
	logged time.Time // when the last log line was written
	// keys are the keys whose head a refusal holds (refusals only): the
	// problem is over once each of them published again.
	keys map[string]struct{}
}

// brokerState is what the relay learned about the broker from its own
// publishes: the latest problem of each category (unavailable,
// unroutable, unauthorized, rejected...), and the rows that failed for a
// reason that may be their own.
type brokerState struct {
	mu       sync.Mutex
	problems map[string]*problem
	faults   map[string]int // message id -> failures of class failOwn in this process
	backAt   time.Time      // when a success last made the waiting rows due
	// downSince is when the first publish failed for unavailability
	// since the last success; zero while the broker takes messages.
	downSince time.Time
}

// probeAfter is how long publishes must have failed for unavailability,
// none succeeding, before the relay takes the broker for away and sends
// one row at a time (a probe) instead of its whole window: each publish
// handed to an adapter that cannot deliver it stays there until its
// outcome is known (sarama keeps retrying it), and piles up duplicates and
// work for the broker's return. A key the broker alone refuses (a nacking
// queue) while others go through never gets there.
const probeAfter = time.Second

// probing reports whether the broker is taken for away: see probeAfter.
func (r *Relay) probing() bool {
	st := &r.bstate
	st.mu.Lock()
	defer st.mu.Unlock()
	return !st.downSince.IsZero() && time.Since(st.downSince) >= probeAfter
}

// errPublishPanicked is the kind of the error a panic in Publish becomes.
var errPublishPanicked = errors.New("outbox relay: Publish panicked")

// publishSafely calls the broker's Publish, turning a panic into an error
// of no category (a failOwn), so that a message that makes a broker or a
// middleware panic is bounded by WithMaxAttempts instead of taking the
// process down again after every lease. The error's text is one line (it
// becomes the row's last_error and the dead letter's reason); the stack is
// logged here, once.
func (r *Relay) publishSafely(ctx context.Context, msg broker.Message) (err error) {
	defer func() {
		if p := recover(); p != nil {
			pe := reason.NewPanic(errPublishPanicked, p)
			r.c.logger.Error("outbox relay: Publish panicked", "owner", r.owner, "id", msg.ID, "name", msg.Name, "key", msg.Key,
				"panic", pe.Error(), "stack", string(pe.PanicStack()))
			err = pe
		}
	}()
	return r.b.Publish(ctx, msg)
}

// brokerPolicy is the backoff of rows the broker held back: WithBackoff's
// capped at WithBrokerBackoff, so that they go out within about that long
// once the broker is back or fixed, whatever backoff they had reached.
func (r *Relay) brokerPolicy() backoff.Policy {
	return backoff.Policy{Initial: min(r.c.backoff.Initial, r.c.brokerMax), Max: min(r.c.backoff.Max, r.c.brokerMax)}
}

// noteSuccess records confirmed publishes (ids, and the keys they
// belong to): the broker is reachable, and a refusal that held these keys
// is over for them.
func (r *Relay) noteSuccess(ids, keys []string) {
	st := &r.bstate
	now := time.Now()
	st.mu.Lock()
	// The first success after an outage says the broker is back, also when
	// its Health never said it was away (Kafka's says so only once the
	// producer gave up on a record); at most once per broker backoff, or a
	// key the broker keeps nacking while others go through would be
	// retried at the pace of their confirms.
	wasDown := st.problems[broker.CategoryUnavailable] != nil
	back := wasDown && now.Sub(st.backAt) >= r.c.brokerMax
	if back {
		st.backAt = now
	}
	delete(st.problems, broker.CategoryUnavailable)
	st.downSince = time.Time{}
	for cat, p := range st.problems {
		if p.keys == nil {
			continue
		}
		for _, k := range keys {
			delete(p.keys, k)
		}
		if len(p.keys) == 0 {
			delete(st.problems, cat) // every key it held went out: fixed
		}
	}
	for _, id := range ids {
		if len(st.faults) == 0 {
			break
		}
		delete(st.faults, id)
	}
	st.mu.Unlock()
	switch {
	case back:
		r.brokerBack()
	case wasDown:
		r.wakeClaimer() // no more probing: claim the whole window
	}
}

// noteBrokerFailure records a failure the broker caused, logs it at most
// every logEvery per category (Error when it needs a human, Warn for an
// outage), and, for an outage, has the watcher look for the broker's
// return.
func (r *Relay) noteBrokerFailure(class failure, cat string, err error, msgKey string) {
	st := &r.bstate
	now := time.Now()
	key := cat
	if class == failUnavailable {
		key = broker.CategoryUnavailable // timed out, closed...: one outage
	}
	st.mu.Lock()
	p := st.problems[key]
	if p == nil {
		p = &problem{}
		st.problems[key] = p
	}
	p.err, p.at = err, now
	p.count++
	if class == failRefused {
		if p.keys == nil {
			p.keys = make(map[string]struct{})
		}
		p.keys[msgKey] = struct{}{}
	}
	if class == failUnavailable && st.downSince.IsZero() {
		st.downSince = now
	}
	var n int64
	if now.Sub(p.logged) >= logEvery {
		p.logged, n, p.count = now, p.count, 0
	}
	st.mu.Unlock()
	if class == failUnavailable {
		select {
		case r.down <- struct{}{}:
		default:
		}
	}
	if n == 0 {
		return
	}
	if class == failRefused {
		r.c.logger.Error("outbox relay: the broker refuses messages; their rows stay pending and are published once this is fixed",
			"owner", r.owner, "category", cat, "failures", n, "err", err)
		return
	}
	r.c.logger.Warn("outbox relay: broker unavailable; the rows wait and are published when it is back",
		"owner", r.owner, "category", cat, "failures", n, "err", err)
}

// ownFault counts a failure of class failOwn of the message and returns
// how many it had in this process.
func (r *Relay) ownFault(id string) int {
	st := &r.bstate
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.faults) >= 10000 {
		// Rows another relay took over are never settled here: start
		// afresh rather than grow (the count is a lower bound anyway).
		clear(st.faults)
	}
	st.faults[id]++
	return st.faults[id]
}

func (r *Relay) forgetFaults(id string) {
	st := &r.bstate
	st.mu.Lock()
	delete(st.faults, id)
	st.mu.Unlock()
}

// problemWindow is how long a broker problem is reported after its latest
// failure when nothing says it is over (a refusal is over as soon as every
// key it held published again: noteSuccess): a held row is tried again
// within the broker backoff, the poll and a publish; twice that, and the
// problem is over.
func (r *Relay) problemWindow() time.Duration {
	return 2 * (r.c.brokerMax + r.c.poll + r.c.publishTimeout)
}

// brokerProblems returns the broker problems to report: each category of
// refusal seen within the window, and the outage: the adapter's own Health
// when it has one, or the relay's failures since the last success.
func (r *Relay) brokerProblems(ctx context.Context) []error {
	window := r.problemWindow()
	now := time.Now()
	var errs []error
	var outage *problem
	r.bstate.mu.Lock()
	for cat, p := range r.bstate.problems {
		if now.Sub(p.at) > window {
			continue
		}
		if cat == broker.CategoryUnavailable {
			cp := *p // cleared by a success: noteSuccess
			outage = &cp
			continue
		}
		errs = append(errs, &broker.Error{Op: "outbox: relay", Kind: kindOf(cat),
			Err: fmt.Errorf("the broker refuses the relay's messages; their rows stay pending and are published once this is fixed; last, %s ago: %w",
				now.Sub(p.at).Round(time.Second), p.err)})
	}
	r.bstate.mu.Unlock()
	if r.health != nil {
		if err := r.health.Health(ctx); err != nil {
			return append(errs, err)
		}
	}
	if outage != nil {
		errs = append(errs, &broker.Error{Op: "outbox: relay", Kind: broker.ErrUnavailable,
			Err: fmt.Errorf("publishes fail; the rows wait and are published when the broker is back; last, %s ago: %w",
				now.Sub(outage.at).Round(time.Second), outage.err)})
	}
	return errs
}

// kindOf returns the sentinel of a refusal's category.
func kindOf(cat string) error {
	switch cat {
	case broker.CategoryUnroutable:
		return broker.ErrUnroutable
	case broker.CategoryUnauthorized:
		return broker.ErrUnauthorized
	case broker.CategoryRejected:
		return broker.ErrRejected
	}
	return broker.ErrUnavailable
}

// How the relay learns that the broker is back.

// healthEvery is how often the watcher asks an unavailable broker's
// Health whether it is back; healthTimeout bounds each question.
const (
	healthEvery   = 250 * time.Millisecond
	healthTimeout = 2 * time.Second
)

// watchBroker runs while the broker implements broker.HealthChecker.
// After a publish failed because the broker was unavailable, it asks the
// broker's Health until it answers nil. While Health says the broker is
// away, the relay claims nothing (paused): rows handed to an adapter that
// cannot deliver them only pile up there, and Kafka's producer opens a
// circuit breaker for 10 s at each failure, which would delay the return.
// Once Health says nil after it had said the broker was down, the broker
// is back: [Relay.brokerBack]. (A Health that never said down, while
// publishes time out, proves nothing: the rows keep their capped backoff,
// and the relay probes with one row at a time.)
func (r *Relay) watchBroker() {
	defer r.watcher.Done()
	for {
		select {
		case <-r.down:
		case <-r.closing.Done():
			return
		}
		sawDown := false
		for {
			ctx, cancel := context.WithTimeout(r.run, healthTimeout)
			err := r.health.Health(ctx)
			cancel()
			if err == nil {
				break
			}
			if errors.Is(err, broker.ErrClosed) || r.closing.Begun() {
				r.paused.Store(false)
				return
			}
			sawDown = true
			r.paused.Store(true)
			if !r.sleep(healthEvery) {
				return
			}
		}
		r.paused.Store(false)
		if sawDown {
			r.brokerBack()
		}
	}
}

// brokerBack makes every pending row backing off due now (one UPDATE) and
// wakes the claimer: the backlog the outage left goes out at once instead
// of after the backoff each row had reached. Rows backing off for another
// reason get one early try, which is harmless.
func (r *Relay) brokerBack() {
	ctx, cancel := context.WithTimeout(r.run, r.c.lease/2)
	defer cancel()
	res, err := r.s.db.ExecContext(ctx, r.s.q.dueNow)
	if err != nil {
		if r.run.Err() == nil {
			r.c.logger.Warn("outbox relay: the broker is back, but the waiting rows could not be made due; they go out after their backoff",
				"owner", r.owner, "err", dbErr("due now", err))
		}
	} else {
		n, _ := res.RowsAffected()
		r.c.logger.Info("outbox relay: the broker is back; the waiting rows are due now", "owner", r.owner, "rows", n)
	}
	r.wakeClaimer()
}
