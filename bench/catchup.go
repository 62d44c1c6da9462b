package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/domainevents/domainevents/bridge"
	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/outbox"
)

// The catch-up suites ask whether a relay keeps up with writers that do
// not wait for the publish. Each run starts on empty tables; c writers
// commit order transactions (the order row and its order.created event
// through the Store, each order its own key) for -duration as fast as
// they can, while one relay publishes; a sampler reads the backlog
// (pending rows) every 250 ms. When the writers stop, the run waits until
// the relay has published and marked every committed event (at most
// -catchup-tail): a relay that kept up has a small backlog to finish; one
// that fell behind has a large one and, if its claim degraded, drains it
// slowly (the tail rate). Throughput is commits per second of the window;
// CPU, database and broker costs cover the window and the tail, per
// committed event.
//
// Contenders: outbox-postgres, outbox-postgres-custom-plans (the relay's
// connections with plan_cache_mode=force_custom_plan, so that no cached
// generic plan is used for the claim) and outbox-mariadb.

// catchupStats is what a catch-up run saw of the backlog.
type catchupStats struct {
	Committed     int64   `json:"committed"`
	PublishedIn   int64   `json:"published_in_window"` // marked published before the writers stopped
	PublishRate   float64 `json:"publish_rate"`        // PublishedIn ÷ window
	MaxBacklog    int64   `json:"max_backlog"`
	BacklogAtStop int64   `json:"backlog_at_stop"`
	TailSeconds   float64 `json:"tail_seconds"` // from the writers' stop until every event was published
	TailRate      float64 `json:"tail_rate"`    // events published after the stop ÷ TailSeconds
	Drained       bool    `json:"drained"`
	Series        []int64 `json:"backlog_series"` // pending rows every 250 ms, window then tail
}

func isCatchup(suite string) bool { return strings.HasPrefix(suite, "catchup-") }

func catchupContenders(sys string) []contender {
	var out []contender
	for _, n := range []string{"outbox-postgres", "outbox-postgres-custom-plans", "outbox-mariadb"} {
		out = append(out, contender{name: n, setup: func(context.Context) (func(context.Context) error, func(int64) string, func(), error) {
			return nil, nil, nil, errors.New("catch-up contender run as a publisher")
		}})
	}
	return out
}

func runCatchupWorker(name string, p, round int, d time.Duration, o drainOpts, profDir string) result {
	suite, cname, _ := strings.Cut(name, "/")
	res := result{Suite: suite, Contender: cname, Publishers: p, Round: round, Verified: "no"}
	if err := catchup(&res, suite, cname, p, d, o, profDir); err != nil {
		res.Err = err.Error()
	}
	res.PeakRSSKB = peakRSS()
	return res
}

func catchup(res *result, suite, cname string, p int, d time.Duration, o drainOpts, profDir string) error {
	ctx := context.Background()
	sys := strings.TrimPrefix(suite, "catchup-")
	kind, relayOpts := "postgres", o.dbOptions
	switch cname {
	case "outbox-mariadb":
		kind, relayOpts = "mysql", o.mysqlParams
	case "outbox-postgres-custom-plans":
		relayOpts = strings.TrimSpace(relayOpts + " -c plan_cache_mode=force_custom_plan")
	case "outbox-postgres":
	default:
		return errors.New("unknown contender")
	}
	writerOpts := ""
	if o.optionsWriters {
		writerOpts = o.optionsFor(kind)
	}
	wd, rd := benchDB(kind, writerOpts), benchDB(kind, relayOpts)
	workerDB.kind, workerDB.writer, workerDB.relay = kind, newDBCounter(), newDBCounter()
	db, err := wd.open(workerDB.writer)
	if err != nil {
		return err
	}
	defer db.Close()
	prefix := "bench_" + uuid.NewString()[:8] + "_"
	tables := outbox.Tables{Outbox: prefix + "outbox", Keys: prefix + "keys", Inbox: prefix + "inbox"}
	orders := prefix + "orders"
	defer func() {
		for _, t := range []string{orders, tables.Outbox, tables.Keys, tables.Inbox} {
			_, _ = db.Exec("DROP TABLE IF EXISTS " + wd.quote(t))
		}
	}()
	ddl, insert := "CREATE TABLE "+orders+" (id TEXT PRIMARY KEY, created_at TIMESTAMPTZ NOT NULL DEFAULT now())", "INSERT INTO "+orders+" (id) VALUES ($1)"
	if kind == "mysql" {
		ddl, insert = "CREATE TABLE "+orders+" (id VARCHAR(64) PRIMARY KEY, created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))", "INSERT INTO "+orders+" (id) VALUES (?)"
	}
	if _, err := db.Exec(ddl); err != nil {
		return fmt.Errorf("%s: %w", wd.label(), err)
	}
	store, err := outbox.New(db, wd.dialect(), outbox.WithTables(tables))
	if err == nil {
		err = store.Migrate(ctx)
	}
	if err != nil {
		return err
	}
	// The sampler's own pool, not counted.
	sdb, err := wd.open(nil)
	if err != nil {
		return err
	}
	defer sdb.Close()
	sampler, err := outbox.New(sdb, wd.dialect(), outbox.WithTables(tables))
	if err != nil {
		return err
	}
	rdb, err := rd.open(workerDB.relay)
	if err != nil {
		return err
	}
	defer rdb.Close()
	relayStore, err := outbox.New(rdb, rd.dialect(), outbox.WithTables(tables))
	if err != nil {
		return err
	}
	t, err := newBrokerTarget(sys)
	if err != nil {
		return err
	}
	defer t.teardown()
	b, err := t.ourBroker(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = b.Close(context.Background()) }()
	fwd, err := bridge.NewForwarder(store)
	if err != nil {
		return err
	}
	bus := eventbus.New()
	fwd.Attach(bus)
	ids := newIDSet(1 << 16)
	opts := []outbox.RelayOption{outbox.WithLogger(quiet())}
	if o.relayBatch > 0 {
		opts = append(opts, outbox.WithBatchSize(o.relayBatch))
	}
	if o.relayInFlight > 0 {
		opts = append(opts, outbox.WithMaxInFlight(o.relayInFlight))
	}
	relay, err := outbox.NewRelay(relayStore, recording{b, ids}, opts...)
	if err != nil {
		return err
	}
	relayClosed := false
	closeRelay := func() {
		if !relayClosed {
			relayClosed = true
			cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			_ = relay.Close(cctx)
			cancel()
		}
	}
	defer closeRelay()

	cs := &catchupStats{}
	res.Catchup = cs
	var seriesMu sync.Mutex
	sampleStop := make(chan struct{})
	var sampling sync.WaitGroup
	sampling.Go(func() {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-sampleStop:
				return
			case <-tick.C:
			}
			n, _, err := sampler.Backlog(ctx)
			if err != nil {
				continue
			}
			seriesMu.Lock()
			cs.Series = append(cs.Series, n)
			cs.MaxBacklog = max(cs.MaxBacklog, n)
			seriesMu.Unlock()
		}
	})
	defer func() {
		select {
		case <-sampleStop:
		default:
			close(sampleStop)
		}
		sampling.Wait()
	}()

	dbBefore := dbSnapshots()
	bnames, bpids := brokerProcesses(suite)
	stopProfile := cpuProfile(profilePath(profDir, *res))
	sm := startServerMeter(kind, bnames, bpids)
	m := startMeter()
	var committed, failed atomic.Int64
	var firstErr atomic.Value
	lat := make([][]time.Duration, p)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	t0 := time.Now()
	for g := range p {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := uuid.NewString()
				began := time.Now()
				err := store.Transact(ctx, func(ctx context.Context, tx *sql.Tx) error {
					if _, err := tx.ExecContext(ctx, insert, id); err != nil {
						return err
					}
					return eventbus.Publish(ctx, bus, orderEvent(id))
				})
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				relayStore.Notify() // as a relay in the writers' process is woken
				committed.Add(1)
				if i%16 == 0 && len(lat[g]) < maxSamples {
					lat[g] = append(lat[g], time.Since(began))
				}
			}
		})
	}
	time.Sleep(d)
	close(stop)
	wg.Wait()
	window := time.Since(t0)
	cs.Committed = committed.Load()
	cs.PublishedIn = relay.Stats().Published
	cs.PublishRate = float64(cs.PublishedIn) / window.Seconds()
	if n, _, err := sampler.Backlog(ctx); err == nil {
		cs.BacklogAtStop = n
	}
	tailStart := time.Now()
	tailErr := waitFor(ctx, "published after the writers stopped", o.catchupTail, func() (int64, int64) {
		return relay.Stats().Published, cs.Committed
	})
	cs.TailSeconds = time.Since(tailStart).Seconds()
	cs.Drained = tailErr == nil
	if cs.TailSeconds > 0 {
		cs.TailRate = float64(relay.Stats().Published-cs.PublishedIn) / cs.TailSeconds
	}
	m.stop(res, cs.Committed)
	sm.stop(res, cs.Committed)
	stopProfile()
	dbPerEvent(res, dbBefore, cs.Committed)
	close(sampleStop)
	sampling.Wait()

	res.N, res.Failed, res.Seconds = cs.Committed, failed.Load(), window.Seconds()
	res.MsgsPerSec = float64(cs.Committed) / window.Seconds()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	if len(all) > 0 {
		res.P50us = float64(all[len(all)/2]) / 1e3
		res.P99us = float64(all[len(all)*99/100]) / 1e3
	}
	if e, _ := firstErr.Load().(string); e != "" {
		res.Err = e
	}
	if tailErr != nil {
		res.Verified = "no: " + tailErr.Error()
		return nil
	}
	closeRelay()
	if v := ids.check(int(cs.Committed)); v != "yes" {
		res.Verified = v
		return nil
	}
	res.Verified = t.verify(int(cs.Committed))
	return nil
}
