package outbox

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/internal/backoff"
	"github.com/domainevents/domainevents/internal/lifecycle"
)

// Relay publishes what a [Store] holds: it claims due rows, publishes them
// through a broker.Broker (many in flight at once), and marks each one
// published once the broker confirmed it. Several relays, in one process
// or many, share a table without publishing a row twice in the normal
// course and without breaking per-key order; see the package doc for how.
//
// A Relay runs from [NewRelay] until [Relay.Close]. It does not own the
// Broker: close the Relay first, then the Broker.
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
}

type errBox struct{ err error }

// RelayOption configures [NewRelay]. Each option's doc names its default.
type RelayOption func(*relayConfig) error

type relayConfig struct {
	owner          string
	lease          time.Duration
	publishTimeout time.Duration
	batch          int
	maxInFlight    int
	poll           time.Duration
	maxAttempts    int
	backoff        backoff.Policy
	sink           broker.DeadLetterSink
	retention      time.Duration
	pruneEvery     time.Duration
	observer       broker.Observer
	gaugeEvery     time.Duration
	logger         *slog.Logger
}

func defaultRelayConfig() relayConfig {
	return relayConfig{
		lease:          30 * time.Second,
		publishTimeout: 10 * time.Second,
		batch:          100,
		maxInFlight:    1000,
		poll:           time.Second,
		maxAttempts:    10,
		backoff:        backoff.Policy{Initial: time.Second, Max: 5 * time.Minute},
		retention:      24 * time.Hour,
		pruneEvery:     time.Minute,
		gaugeEvery:     10 * time.Second,
		logger:         slog.Default(),
	}
}

// WithOwner sets the id this relay writes into the rows it leases (at most
// 64 bytes): unique per running relay. Default: host name, process id and
// a random suffix.
func WithOwner(id string) RelayOption {
	return func(c *relayConfig) error {
		if id == "" || len(id) > 64 {
			return fmt.Errorf("WithOwner(%q): want 1 to 64 bytes", id)
		}
		c.owner = id
		return nil
	}
}

// WithLease sets how long a claimed row stays this relay's: past it,
// another relay may claim the row again (the takeover after a crash). It
// must exceed the publish timeout. Default 30s.
func WithLease(d time.Duration) RelayOption {
	return func(c *relayConfig) error {
		if d < time.Millisecond {
			return fmt.Errorf("WithLease(%v): want at least 1ms", d)
		}
		c.lease = d
		return nil
	}
}

// WithPublishTimeout bounds each publish (the wait for the broker's
// confirm); it must be shorter than the lease, so that a row is settled
// before its lease can run out. Default 10s.
func WithPublishTimeout(d time.Duration) RelayOption {
	return func(c *relayConfig) error {
		if d <= 0 {
			return fmt.Errorf("WithPublishTimeout(%v): must be positive", d)
		}
		c.publishTimeout = d
		return nil
	}
}

// WithBatchSize sets how many rows one claim takes at most. Default 100.
func WithBatchSize(n int) RelayOption {
	return func(c *relayConfig) error {
		if n < 1 || n > 10000 {
			return fmt.Errorf("WithBatchSize(%d): want 1 to 10000", n)
		}
		c.batch = n
		return nil
	}
}

// WithMaxInFlight bounds the rows claimed and not yet settled (published,
// failed or dead-lettered): the publishing pipeline's depth (a claim and
// an advance racing may overshoot it by one batch). Default 1000.
func WithMaxInFlight(n int) RelayOption {
	return func(c *relayConfig) error {
		if n < 1 {
			return fmt.Errorf("WithMaxInFlight(%d): must be positive", n)
		}
		c.maxInFlight = n
		return nil
	}
}

// WithPollInterval sets how often the relay looks for due rows when
// nothing woke it ([Store.Notify], [Store.Transact], a settled row):
// the fallback for rows committed by other processes and for rows backing
// off. Default 1s.
func WithPollInterval(d time.Duration) RelayOption {
	return func(c *relayConfig) error {
		if d <= 0 {
			return fmt.Errorf("WithPollInterval(%v): must be positive", d)
		}
		c.poll = d
		return nil
	}
}

// WithMaxAttempts sets how many times a row is claimed before, failing
// again, it is dead-lettered (and its key moves on). Default 10.
func WithMaxAttempts(n int) RelayOption {
	return func(c *relayConfig) error {
		if n < 1 {
			return fmt.Errorf("WithMaxAttempts(%d): must be positive", n)
		}
		c.maxAttempts = n
		return nil
	}
}

// WithBackoff sets the wait before a failed row is tried again: full
// jitter, up to initial·2^(attempt-1) capped at max. Default 1s, 5m.
func WithBackoff(initial, max time.Duration) RelayOption {
	return func(c *relayConfig) error {
		if initial <= 0 || max < initial {
			return fmt.Errorf("WithBackoff(%v, %v): want 0 < initial <= max", initial, max)
		}
		c.backoff = backoff.Policy{Initial: initial, Max: max}
		return nil
	}
}

// WithDeadLetter puts each dead row's message into sink (with its reason,
// category and attempts) before marking the row dead; if the sink fails,
// the row stays pending and is tried again later. Default: none: the row
// is only marked dead in the table (state 2, dead_at, last_error), where
// it stays until you deal with it, and reported to the logger and
// observer.
func WithDeadLetter(sink broker.DeadLetterSink) RelayOption {
	return func(c *relayConfig) error {
		if sink == nil {
			return errors.New("WithDeadLetter: sink is nil")
		}
		c.sink = sink
		return nil
	}
}

// WithRetention deletes published rows once they are older than d,
// checking every interval ([Store.Prune]). Pending and dead rows are never
// deleted. d = 0 keeps published rows forever. Default 24h, every minute.
func WithRetention(d, interval time.Duration) RelayOption {
	return func(c *relayConfig) error {
		if d < 0 || interval <= 0 {
			return fmt.Errorf("WithRetention(%v, %v): want d >= 0 and a positive interval", d, interval)
		}
		c.retention, c.pruneEvery = d, interval
		return nil
	}
}

// WithObserver reports retries, dead letters, and every interval the
// backlog (ObservedOutboxBacklog, in rows) and the age of the oldest
// pending row (ObservedOutboxLag, in seconds). Default: none.
func WithObserver(o broker.Observer, interval time.Duration) RelayOption {
	return func(c *relayConfig) error {
		if o == nil || interval <= 0 {
			return fmt.Errorf("WithObserver: want an observer and a positive interval (got %v)", interval)
		}
		c.observer, c.gaugeEvery = o, interval
		return nil
	}
}

// WithLogger sets where database errors (Warn) and dead letters (Error)
// are logged. Default: slog.Default().
func WithLogger(l *slog.Logger) RelayOption {
	return func(c *relayConfig) error {
		if l == nil {
			return errors.New("WithLogger: logger is nil")
		}
		c.logger = l
		return nil
	}
}

// NewRelay starts a relay publishing s's rows through b. A nil store or
// broker, or a bad option (a publish timeout not shorter than the lease
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
	if c.publishTimeout >= c.lease {
		return nil, invalid("options", fmt.Errorf("NewRelay: publish timeout %v must be shorter than the lease %v (WithPublishTimeout, WithLease)", c.publishTimeout, c.lease))
	}
	if c.owner == "" {
		c.owner = defaultOwner()
	}
	r := &Relay{s: s, b: b, c: c, owner: c.owner, wake: make(chan struct{}, 1), results: make(chan result, c.maxInFlight),
		advances: make(chan []string, 64)}
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
	poll := time.NewTimer(0)
	defer poll.Stop()
	var failures int
	for {
		if r.closing.Begun() {
			return
		}
		room := r.c.maxInFlight - int(r.inflight.Load())
		n := min(room, r.c.batch)
		got := 0
		if n > 0 {
			rows, err := r.claim(n, nil)
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
	}
}

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
func (r *Relay) advance(keys []string) {
	if r.closing.Begun() || len(keys) == 0 {
		return
	}
	rows, err := r.claim(len(keys), keys)
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

// claim leases up to n due heads (of keys only, when given) to this relay
// for the lease duration, counting an attempt for each.
func (r *Relay) claim(n int, keys []string) ([]row, error) {
	ctx, cancel := context.WithTimeout(r.run, r.c.lease/2)
	defer cancel()
	q := r.s.q
	lease := r.c.lease.Microseconds()
	heads := make([]any, 0, len(keys)+1)
	for _, k := range keys {
		heads = append(heads, k)
	}
	heads = append(heads, n)
	var rows []row
	var err error
	switch r.s.dialect {
	case Postgres:
		rows, err = r.queryRows(ctx, r.s.db, q.claimSQL(len(keys)), append(heads, r.owner, lease)...)
	case SQLite:
		rows, err = r.queryRows(ctx, r.s.db, q.claimSQL(len(keys)), append([]any{r.owner, lease}, heads...)...)
	case MySQL:
		rows, err = r.claimMySQL(ctx, len(keys), heads, lease)
	}
	if err != nil {
		return nil, dbErr("claim", err)
	}
	r.claimed.Add(int64(len(rows)))
	return rows, nil
}

// claimMySQL claims in one transaction at READ COMMITTED (record locks on
// the claimed rows only, no gap locks): the heads by a plain read on one
// snapshot, then those rows locked by id, skipping rows another claim
// holds and re-checking state and lease on their latest version, then
// leased.
func (r *Relay) claimMySQL(ctx context.Context, nkeys int, heads []any, lease int64) ([]row, error) {
	q := r.s.q
	tx, err := r.s.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback() }()
	ids, err := tx.QueryContext(ctx, q.headsSQL(nkeys), heads...)
	if err != nil {
		return nil, err
	}
	var args []any
	for ids.Next() {
		var id string
		if err := ids.Scan(&id); err != nil {
			ids.Close()
			return nil, err
		}
		args = append(args, id)
	}
	if err := errors.Join(ids.Err(), ids.Close()); err != nil || len(args) == 0 {
		return nil, err
	}
	rows, err := r.queryRows(ctx, tx, q.lockSQL(len(args)), args...)
	if err != nil || len(rows) == 0 {
		return nil, err
	}
	largs := []any{r.owner, lease}
	for i := range rows {
		rows[i].attempts++ // read before the lease's increment
		largs = append(largs, rows[i].msg.ID)
	}
	if _, err := tx.ExecContext(ctx, q.leaseSQL(len(rows)), largs...); err != nil {
		return nil, err
	}
	return rows, tx.Commit()
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func (r *Relay) queryRows(ctx context.Context, db querier, query string, args ...any) ([]row, error) {
	rs, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []row
	for rs.Next() {
		var w row
		var headers sql.NullString
		var at any
		if err := rs.Scan(&w.msg.ID, &w.msg.Name, &w.msg.Key, &w.seq, &w.msg.Body, &w.msg.ContentType, &headers, &at, &w.attempts, &w.more); err != nil {
			return nil, err
		}
		if headers.Valid && headers.String != "" {
			if err := json.Unmarshal([]byte(headers.String), &w.msg.Headers); err != nil {
				return nil, fmt.Errorf("row %s: headers: %w", w.msg.ID, err)
			}
		}
		t, err := parseTime(at)
		if err != nil {
			return nil, fmt.Errorf("row %s: occurred_at: %w", w.msg.ID, err)
		}
		w.msg.Time = t
		out = append(out, w)
	}
	return out, rs.Err()
}

// parseTime reads occurred_at as the drivers return it: time.Time
// (PostgreSQL), a "2006-01-02 15:04:05.000000" string (MySQL, formatted by
// the query), or unix microseconds (SQLite).
func parseTime(v any) (time.Time, error) {
	switch v := v.(type) {
	case time.Time:
		return v.UTC(), nil
	case int64:
		return time.UnixMicro(v).UTC(), nil
	case []byte:
		return time.Parse(mysqlTime, string(v))
	case string:
		return time.Parse(mysqlTime, v)
	default:
		return time.Time{}, fmt.Errorf("unexpected %T", v)
	}
}

// publish sends one row. A confirmed row goes to the marker, which marks
// it with others; a failure is settled here, so that a slow dead-letter
// sink holds up its own row only.
func (r *Relay) publish(w row) {
	defer r.publishers.Done()
	ctx, cancel := context.WithTimeout(r.run, r.c.publishTimeout)
	err := r.b.Publish(ctx, w.msg)
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
		r.advance(keys)
	}
}

// markPublished marks the batch's rows published (those this relay still
// holds) and returns the keys that have a later row to advance to.
func (r *Relay) markPublished(ok []result) []string {
	args := make([]any, 0, len(ok)+1)
	args = append(args, r.owner)
	for _, res := range ok {
		args = append(args, res.row.msg.ID)
	}
	ctx, cancel := context.WithTimeout(r.run, r.c.lease/2)
	defer cancel()
	res, err := r.s.db.ExecContext(ctx, r.s.q.markPublished+r.s.q.in(1, len(ok)), args...)
	if err != nil {
		// Unmarked rows stay leased until the lease ends, then are
		// published again: a duplicate, never a loss.
		r.setErr(dbErr("mark", err))
		r.c.logger.Warn("outbox relay: could not mark rows published; they will be published again after the lease", "owner", r.owner, "rows", len(ok), "err", err)
		return nil
	}
	n, _ := res.RowsAffected()
	r.published.Add(n)
	if lost := int64(len(ok)) - n; lost > 0 {
		r.lostLeases.Add(lost)
		r.c.logger.Warn("outbox relay: lease lost before marking: another relay published or will publish these rows again", "owner", r.owner, "rows", lost)
	}
	keys := make([]string, 0, len(ok))
	seen := make(map[string]bool, len(ok))
	for _, res := range ok {
		if k := res.row.msg.Key; res.row.more && !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	return keys
}

// fail settles a failed publish: back off, or dead-letter it when the
// attempts are used up or retrying cannot help. A failure caused by the
// relay's own shutdown only lets the row go.
func (r *Relay) fail(res result) {
	w := res.row
	ctx, cancel := context.WithTimeout(r.run, r.c.lease/2)
	defer cancel()
	if r.run.Err() != nil {
		return // Close gave up: the lease runs out, the row is tried again
	}
	cat := broker.Category(res.err)
	reason := truncate(res.err.Error(), 2000)
	var err error
	switch {
	case errors.Is(res.err, broker.ErrDeadLettered):
		// The broker (a retry.Broker with its own sink) already keeps it.
		err = r.markDead(ctx, w, cat, reason)
	case errors.Is(res.err, broker.ErrClosed) && !errors.Is(res.err, broker.ErrUnavailable):
		// The broker was closed under us: nothing was tried; let it go.
		_, err = r.s.db.ExecContext(ctx, r.s.q.markRetry, r.c.poll.Microseconds(), reason, r.owner, w.msg.ID)
	case w.attempts >= r.c.maxAttempts || errors.Is(res.err, broker.ErrInvalid) || errors.Is(res.err, broker.ErrTooLarge):
		err = r.deadLetter(ctx, w, res, cat, reason)
	default:
		delay := r.c.backoff.Delay(w.attempts)
		r.retried.Add(1)
		r.observe(broker.Observation{Kind: broker.ObservedRetry, MessageID: w.msg.ID, MessageName: w.msg.Name,
			Category: cat, Attempt: w.attempts, Delay: delay, Value: delay.Seconds(), Err: res.err})
		_, err = r.s.db.ExecContext(ctx, r.s.q.markRetry, delay.Microseconds(), reason, r.owner, w.msg.ID)
	}
	if err != nil {
		r.setErr(err)
		r.c.logger.Warn("outbox relay: could not record a failed publish; the row is tried again after its lease", "owner", r.owner,
			"id", w.msg.ID, "err", err)
	}
}

// deadLetter puts the message into the sink (if any), then marks its row
// dead so that its key moves on. If the sink fails, the row backs off and
// is tried again.
func (r *Relay) deadLetter(ctx context.Context, w row, res result, cat, reason string) error {
	if r.c.sink != nil {
		dl := broker.DeadLetter{Message: w.msg, Reason: reason, Category: cat, Attempts: w.attempts,
			FirstFailure: res.when, LastFailure: res.when}
		if err := r.c.sink.Put(ctx, dl); err != nil {
			r.c.logger.Error("outbox relay: dead-letter sink failed; the row stays pending", "id", w.msg.ID, "err", err)
			_, merr := r.s.db.ExecContext(ctx, r.s.q.markRetry, r.c.backoff.Delay(w.attempts).Microseconds(),
				truncate("dead-letter sink: "+err.Error()+"; publish: "+reason, 2000), r.owner, w.msg.ID)
			return merr
		}
	}
	return r.markDead(ctx, w, cat, reason)
}

func (r *Relay) markDead(ctx context.Context, w row, cat, reason string) error {
	res, err := r.s.db.ExecContext(ctx, r.s.q.markDead, reason, r.owner, w.msg.ID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		r.lostLeases.Add(1)
		return nil
	}
	r.deadLettered.Add(1)
	r.c.logger.Error("outbox relay: message dead-lettered; its key moves on", "id", w.msg.ID, "name", w.msg.Name,
		"key", w.msg.Key, "seq", w.seq, "attempts", w.attempts, "reason", reason)
	r.observe(broker.Observation{Kind: broker.ObservedDeadLetter, MessageID: w.msg.ID, MessageName: w.msg.Name,
		Category: cat, Attempt: w.attempts})
	return nil
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

// Health returns nil while the relay runs and its last claim reached the
// database; an error matching broker.ErrUnavailable with the last database
// error otherwise, or broker.ErrClosed after Close. It pings the database
// (bounded by ctx).
func (r *Relay) Health(ctx context.Context) error {
	if r.closing.Begun() {
		return &broker.Error{Op: "outbox: health", Kind: broker.ErrClosed}
	}
	if err := r.s.db.PingContext(ctx); err != nil {
		return dbErr("health", err)
	}
	if b := r.lastErr.Load(); b != nil {
		return &broker.Error{Op: "outbox: health", Kind: broker.ErrUnavailable, Err: b.err}
	}
	return nil
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
