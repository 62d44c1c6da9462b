package outbox

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/internal/lifecycle"
)

// Relay publishes what a [Store] holds: it claims due rows, publishes them
// through a broker.Broker (many in flight at once), and marks each one
// published once the broker confirmed it. Several relays, in one process
// or many, share a table without publishing a row twice in the normal
// course and without breaking per-key order; see the package doc for how.
//
// A Relay runs from [NewRelay] until [Relay.Close]. It does not own the
// Broker: close the Relay first, then the Broker. Give it the adapter
// itself (rabbitmq.New or kafka.New, with their WithLazyConnect to start
// while the broker is down; domainevents.OpenRelay builds it from the
// configuration), not a retry layer with a dead-letter sink: the table is
// the durable store and the relay waits for the broker itself, while a
// spool would take a key's event out of its order.
//
// On PostgreSQL a relay keeps two connections of the Store's *sql.DB for
// its claims (the claim loop's and the advancer's), set to plan each claim
// for the table as it is (plan_cache_mode = force_custom_plan, session
// level: behind a pooler in transaction mode, give the relay a direct
// connection); size the pool with them in mind. Its marks and settles use
// the pool as it comes.
type Relay struct {
	s     *Store
	b     broker.Broker
	c     relayConfig
	owner string

	closing lifecycle.Closing
	run     context.Context // cancelled when Close gives up
	cancel  context.CancelFunc
	wake    chan struct{}
	results chan result

	advances                                      chan []string
	claimer, publishers, marker, advancer, keeper sync.WaitGroup
	inflight                                      atomic.Int64

	spawnMu  sync.Mutex
	draining bool // Close waits for the publishers: spawn no more

	claimed, published, retried, deadLettered, lostLeases atomic.Int64
	lastErr                                               atomic.Pointer[errBox]

	// What the relay knows of the broker (relay_failure.go): its problems
	// for Health, its Health if it has one, and the watcher that learns
	// from it when an outage is over.
	bstate  brokerState
	health  broker.HealthChecker // b's, or nil
	down    chan struct{}        // (buffered 1) a publish failed: the broker may be away
	paused  atomic.Bool          // the broker's Health says it is away: claim nothing
	watcher sync.WaitGroup
}

type errBox struct{ err error }

// NewRelay starts a relay publishing s's rows through b. A nil store or
// broker, or a bad option (a publish timeout not shorter than half the lease
// included), is an error matching broker.ErrInvalid that names it.
func NewRelay(s *Store, b broker.Broker, opts ...RelayOption) (*Relay, error) {
	if s == nil || b == nil {
		return nil, invalid("options", errors.New("NewRelay: store and broker must not be nil"))
	}
	c := defaultRelayConfig()
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&c); err != nil {
			return nil, invalid("options", err)
		}
	}
	if c.publishTimeout >= c.lease/2 {
		// A row's publish and then its settling (a dead-letter write, bounded
		// by lease/2) must both fit in the lease, or another relay could take
		// the row meanwhile and publish or dead-letter it again.
		return nil, invalid("options", fmt.Errorf("NewRelay: publish timeout %v must be shorter than half the lease %v (WithPublishTimeout, WithLease)", c.publishTimeout, c.lease))
	}
	if c.owner == "" {
		c.owner = defaultOwner()
	}
	c.logger = c.logger.With("component", "outbox relay")
	r := &Relay{s: s, b: b, c: c, owner: c.owner, wake: make(chan struct{}, 1), results: make(chan result, c.maxInFlight),
		advances: make(chan []string, 64), down: make(chan struct{}, 1),
		bstate: brokerState{problems: map[string]*problem{}, faults: map[string]int{}}}
	r.health, _ = b.(broker.HealthChecker)
	r.run, r.cancel = context.WithCancel(context.Background())
	s.addWaker(r.wake)
	r.claimer.Add(1)
	go r.claimLoop()
	r.marker.Add(1)
	go r.markLoop()
	r.advancer.Add(1)
	go r.advanceLoop()
	r.keeper.Add(1)
	go r.housekeeping()
	if r.health != nil {
		r.watcher.Add(1)
		go r.watchBroker()
	}
	return r, nil
}

func defaultOwner() string {
	host, _ := os.Hostname()
	if len(host) > 32 {
		host = host[:32]
	}
	return host + "-" + strconv.Itoa(os.Getpid()) + "-" + rand.Text()[:8]
}

// Owner returns the lease owner id this relay writes into the rows it
// claims.
func (r *Relay) Owner() string { return r.owner }

// row is a claimed outbox row.
type row struct {
	msg      broker.Message
	seq      int64
	attempts int  // claims so far, this one included
	more     bool // a later row of the key existed at the claim: advance after it
}

type result struct {
	row  row
	err  error
	when time.Time
}

// claimLoop runs the full claim while there is room in flight, and hands
// each row to a publisher goroutine. It sleeps until woken (Notify, a
// failed or dead row, room in flight again), the poll interval, or Close.
func (r *Relay) claimLoop() {
	defer r.claimer.Done()
	var cc claimConn
	defer cc.drop()
	poll := time.NewTimer(0)
	defer poll.Stop()
	var failures int
	for {
		if r.closing.Begun() {
			return
		}
		room := r.c.maxInFlight - int(r.inflight.Load())
		switch {
		case r.paused.Load():
			room = 0 // the broker's Health says it is away: its watcher wakes us when it is back
		case r.probing():
			room = 1 - int(r.inflight.Load()) // the broker is away: one row at a time finds out when it is back
		}
		n := min(room, r.c.batch)
		got := 0
		var quiet time.Time // when a full claim may run again after a long one that found nothing
		if n > 0 {
			start := time.Now()
			rows, err := r.claim(&cc, n, nil)
			if took := time.Since(start); err == nil && len(rows) == 0 && took >= claimRestAfter {
				quiet = time.Now().Add(claimRest * took)
			}
			if err != nil {
				failures++
				r.setErr(err)
				if !errors.Is(err, context.Canceled) {
					r.c.logger.Warn("outbox relay: claim failed", "owner", r.owner, "err", err)
				}
				// Wait before trying again, but not longer than the poll.
				if !r.sleep(min(r.c.backoff.Delay(failures), r.c.poll)) {
					return
				}
				continue
			}
			failures = 0
			r.setErr(nil)
			got = len(rows)
			r.spawn(rows)
		}
		if got == n && n > 0 {
			continue // maybe more due: claim again at once
		}
		// Nothing (more) to claim, or no room: wait for a reason to look.
		if !poll.Stop() {
			select {
			case <-poll.C:
			default:
			}
		}
		poll.Reset(r.c.poll)
		select {
		case <-r.wake:
		case <-poll.C:
		case <-r.closing.Done():
			return
		}
		if d := time.Until(quiet); d > 0 && !r.sleep(d) {
			return
		}
	}
}

// claimRest spaces out full claims that found nothing and took long: the
// next one starts no sooner than claimRest times the last one's duration
// after it. Such a claim read past every due row without finding one it
// could take (on PostgreSQL: the rows of keys in flight or backing off);
// without a rest, every commit (Notify) and every settled batch would
// start another, and with a deep backlog of keys in flight the claims
// would take most of the database's time while finding nothing
// (bench/README.md). So those claims of one relay take at most a quarter
// of one connection's time; keys already in flight advance without them
// (advanceLoop). A claim that found rows, or took less than
// claimRestAfter, gets no rest: the next commit is claimed at once (a
// rest after every short claim tripled the commit-to-confirmed time at
// one writer and halved end-to-end throughput, bench/README.md).
const (
	claimRest      = 3
	claimRestAfter = 5 * time.Millisecond
)

// spawn publishes claimed rows, each in its own goroutine, unless Close
// has started draining (then their leases are given up by Close).
func (r *Relay) spawn(rows []row) {
	r.spawnMu.Lock()
	defer r.spawnMu.Unlock()
	if r.draining {
		return
	}
	for _, w := range rows {
		r.inflight.Add(1)
		r.publishers.Add(1)
		go r.publish(w)
	}
}

// advance claims the next heads of keys, whose rows this relay just
// published: a few index probes instead of a scan of every key.
func (r *Relay) advance(cc *claimConn, keys []string) {
	if r.closing.Begun() || len(keys) == 0 {
		return
	}
	rows, err := r.claim(cc, len(keys), keys)
	if err != nil {
		r.setErr(err)
		r.wakeClaimer() // the next full claim takes them
		return
	}
	r.spawn(rows)
}

func (r *Relay) wakeClaimer() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// sleep waits d or until Close; false when closing.
func (r *Relay) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.closing.Done():
		return false
	}
}

// publish sends one row. A confirmed row goes to the marker, which marks
// it with others; a failure is settled here, so that a slow dead-letter
// sink holds up its own row only.
func (r *Relay) publish(w row) {
	defer r.publishers.Done()
	ctx, cancel := context.WithTimeout(r.run, r.c.publishTimeout)
	err := r.publishSafely(ctx, w.msg)
	cancel()
	res := result{row: w, err: err, when: time.Now()}
	if err == nil {
		r.results <- res
		return
	}
	r.fail(res)
	r.settled(1, true) // a dead row's key moves on: let a full claim find it
}

// settled frees room in flight. The claimer is woken when the window was
// full (it may be waiting for room: a wake sent before it waits stays
// buffered), or (wake) when the row's key may move on without an advance.
func (r *Relay) settled(n int, wake bool) {
	before := r.inflight.Add(-int64(n)) + int64(n)
	if wake || before >= int64(r.c.maxInFlight) {
		r.wakeClaimer()
	}
}

// markLoop marks the confirmed rows, whatever has arrived together in one
// UPDATE.
func (r *Relay) markLoop() {
	defer r.marker.Done()
	for res := range r.results {
		batch := []result{res}
	drain:
		for len(batch) < 500 {
			select {
			case more, ok := <-r.results:
				if !ok {
					break drain
				}
				batch = append(batch, more)
			default:
				break drain
			}
		}
		keys := r.markPublished(batch)
		r.settled(len(batch), false)
		if len(keys) > 0 {
			select {
			case r.advances <- keys:
			default:
				r.wakeClaimer() // the advancer is behind: a full claim finds them
			}
		}
	}
}

// advanceLoop claims the next heads of the keys the marker settled, all
// that arrived while the previous claim ran in one claim, so that marking
// and claiming overlap.
func (r *Relay) advanceLoop() {
	defer r.advancer.Done()
	var cc claimConn
	defer cc.drop()
	for keys := range r.advances {
		seen := make(map[string]bool, len(keys))
		for _, k := range keys {
			seen[k] = true
		}
	more:
		for len(keys) < r.c.maxInFlight {
			select {
			case ks, ok := <-r.advances:
				if !ok {
					break more
				}
				for _, k := range ks {
					if !seen[k] {
						seen[k] = true
						keys = append(keys, k)
					}
				}
			default:
				break more
			}
		}
		r.advance(&cc, keys)
	}
}

// housekeeping prunes published rows and reports the gauges.
func (r *Relay) housekeeping() {
	defer r.keeper.Done()
	prune := time.NewTicker(r.c.pruneEvery)
	defer prune.Stop()
	var gauge <-chan time.Time
	if r.c.observer != nil {
		t := time.NewTicker(r.c.gaugeEvery)
		defer t.Stop()
		gauge = t.C
	}
	for {
		select {
		case <-r.closing.Done():
			return
		case <-prune.C:
			if r.c.retention > 0 {
				if _, err := r.s.Prune(r.run, r.c.retention, 1000); err != nil && r.run.Err() == nil {
					r.c.logger.Warn("outbox relay: prune failed", "err", err)
				}
			}
		case <-gauge:
			rows, lag, err := r.s.Backlog(r.run)
			if err != nil {
				continue
			}
			r.observe(broker.Observation{Kind: broker.ObservedOutboxBacklog, Value: float64(rows)})
			r.observe(broker.Observation{Kind: broker.ObservedOutboxLag, Value: lag.Seconds()})
		}
	}
}

func (r *Relay) observe(o broker.Observation) {
	if r.c.observer == nil {
		return
	}
	o.Component = "outbox relay"
	o.Destination = r.s.tables.Outbox
	r.c.observer.Observe(r.run, o)
}

func (r *Relay) setErr(err error) {
	if err == nil {
		r.lastErr.Store(nil)
		return
	}
	r.lastErr.Store(&errBox{err})
}

// Health returns nil while the relay can do its work: the database
// answers and the broker takes its messages. Otherwise it returns what is
// wrong, every problem joined, each matching its category:
//
//   - the database does not answer, or the last claim failed: an error
//     matching [ErrDatabase] (and broker.ErrUnavailable) with the driver's
//     error;
//   - the broker refuses the relay's messages (no queue bound for their
//     routing key, no permission, a broker-specific refusal): an error
//     matching broker.ErrUnroutable, broker.ErrUnauthorized or
//     broker.ErrRejected with the broker's reason, while such failures go
//     on (their rows stay pending and are published once it is fixed; the
//     report ends a few backoffs after the last failure);
//   - the broker is unavailable: the broker's own Health error, when it
//     implements broker.HealthChecker, or an error matching
//     broker.ErrUnavailable with the last failure, until a publish
//     succeeds;
//   - after Close: broker.ErrClosed.
//
// It pings the database and asks the broker's Health, bounded by ctx.
func (r *Relay) Health(ctx context.Context) error {
	if r.closing.Begun() {
		return &broker.Error{Op: "outbox: health", Kind: broker.ErrClosed}
	}
	var errs []error
	if err := r.s.db.PingContext(ctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		errs = append(errs, dbErr("health", err))
	} else if b := r.lastErr.Load(); b != nil {
		errs = append(errs, b.err)
	}
	errs = append(errs, r.brokerProblems(ctx)...)
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

// RelayStats counts a relay's work since it started.
type RelayStats struct {
	// Claimed rows (a row claimed again after a failure counts again).
	Claimed int64
	// Published rows: confirmed by the broker and marked.
	Published int64
	// Retried rows: failed, backing off.
	Retried int64
	// DeadLettered rows: marked dead (after the sink took them, if any).
	DeadLettered int64
	// LostLeases counts rows confirmed (or dead-lettered) by the broker
	// that this relay could not mark because another relay had claimed
	// them meanwhile: each is published at least twice.
	LostLeases int64
	// InFlight rows: claimed, not settled yet.
	InFlight int64
}

// Stats returns the counters.
func (r *Relay) Stats() RelayStats {
	return RelayStats{Claimed: r.claimed.Load(), Published: r.published.Load(), Retried: r.retried.Load(),
		DeadLettered: r.deadLettered.Load(), LostLeases: r.lostLeases.Load(), InFlight: r.inflight.Load()}
}

// Close stops claiming, waits for the publishes in flight and marks their
// outcomes, then gives up the leases of rows it still holds, so that other
// relays take them at once. If ctx ends first, the publishes in flight are
// cancelled and Close returns ctx.Err() once its goroutines have stopped;
// the rows it still held are taken again when their leases run out (some
// may then be published twice). It does not close the Broker or the
// Store. A second Close returns nil.
func (r *Relay) Close(ctx context.Context) error {
	if !r.closing.Begin() {
		return nil
	}
	r.s.removeWaker(r.wake)
	done := make(chan struct{})
	go func() {
		r.claimer.Wait()
		r.keeper.Wait()
		r.watcher.Wait()
		r.spawnMu.Lock()
		r.draining = true
		r.spawnMu.Unlock()
		r.publishers.Wait()
		close(r.results)
		r.marker.Wait()
		close(r.advances)
		r.advancer.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
		rctx, cancel := context.WithTimeout(ctx, r.c.lease/2)
		if _, rerr := r.s.db.ExecContext(rctx, r.s.q.release, r.owner); rerr != nil {
			err = dbErr("close", rerr)
		}
		cancel()
	case <-ctx.Done():
		r.cancel()
		<-done
		err = ctx.Err()
	}
	r.cancel()
	return err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
