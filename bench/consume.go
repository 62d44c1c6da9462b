package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The consume suites measure how fast a contender's subscriber drains a
// queue (topic) of N waiting events with handler concurrency c, and the
// latency publish→handled of a paced stream afterwards. Each run is its
// own child process with a fresh queue (topic):
//
//  1. prefill: a raw pipelined publisher puts N events there, each with a
//     distinct id, in the wire format the contender's own publisher would
//     write; not measured;
//  2. measured window: the contender's subscriber starts, its handler
//     records the id and returns; acks (offset marks) follow the handler;
//     the window ends when all N distinct ids were handled (5 min deadline).
//     msg/s = N ÷ window; CPU, allocations and bytes are the window's; the
//     window includes the subscriber's start-up (first_ms says how long
//     until the first event was handled);
//  3. latency: while the subscriber runs, pacedRate events/s for pacedFor,
//     each id carrying its send time; latency = handled − sent;
//  4. the subscriber is closed and the run verified: every id handled
//     (duplicates counted), nothing left unacknowledged (RabbitMQ: the queue
//     holds 0; Kafka: the group's committed offsets equal the end offsets).

const (
	pacedRate     = 500
	pacedFor      = 2 * time.Second
	drainDeadline = 5 * time.Minute
)

// consumeRun is one consume run's fixture and contender.
type consumeRun struct {
	// prefill puts ids[i] for every i on the queue (topic), confirmed.
	prefill func(ctx context.Context, ids []string) error
	// start starts the contender's subscriber with handler concurrency c;
	// each handled event's id goes to seen before it is acknowledged.
	// stop closes the subscriber (acks flushed, offsets committed).
	start func(ctx context.Context, c int, seen func(id string)) (stop func() error, err error)
	// paced publishes one event with the given id, without waiting for
	// more than the send; flush waits for their confirms.
	paced func(ctx context.Context, id string) error
	flush func(ctx context.Context) error
	// verify runs after stop: nothing unacknowledged, nothing more.
	verify   func(handled int64) string
	teardown func()
}

type consumeContender struct {
	name  string
	setup func(ctx context.Context, c int) (*consumeRun, error)
}

// asContenders wraps consume contenders in the suite table's type; their
// publish-side setup is never called (runConsumeWorker dispatches).
func asContenders(cs []consumeContender) []contender {
	out := make([]contender, len(cs))
	for i, c := range cs {
		out[i] = contender{name: c.name, setup: func(context.Context) (func(context.Context) error, func(int64) string, func(), error) {
			return nil, nil, nil, errors.New("consume contender run as a publisher")
		}}
	}
	return out
}

var consumeSuites = map[string]func() []consumeContender{
	"consume-rabbitmq":     rabbitConsumers,
	"consume-rabbitmq-2ms": rabbitSlowConsumers,
	"consume-kafka":        kafkaConsumers,
}

func consumeRabbitContenders() []contender     { return asContenders(rabbitConsumers()) }
func consumeRabbitSlowContenders() []contender { return asContenders(rabbitSlowConsumers()) }
func consumeKafkaContenders() []contender      { return asContenders(kafkaConsumers()) }

// tracker records handled ids: distinct ones, duplicates, and the latency
// of paced ids ("p-<unix nanos>-<n>").
type tracker struct {
	mu      sync.Mutex
	seen    map[string]struct{}
	dups    int64
	lat     []time.Duration
	goal    int
	reached chan struct{}
	first   time.Time
}

func newTracker(capacity int) *tracker {
	return &tracker{seen: make(map[string]struct{}, capacity), lat: make([]time.Duration, 0, int(pacedRate*pacedFor/time.Second)+16)}
}

func (t *tracker) handled(id string) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.seen[id]; ok {
		t.dups++
		return
	}
	t.seen[id] = struct{}{}
	if len(t.seen) == 1 {
		t.first = now
	}
	if rest, ok := strings.CutPrefix(id, "p-"); ok {
		ns, _, _ := strings.Cut(rest, "-")
		if n, err := strconv.ParseInt(ns, 10, 64); err == nil {
			t.lat = append(t.lat, now.Sub(time.Unix(0, n)))
		}
	}
	if len(t.seen) == t.goal {
		close(t.reached)
	}
}

// await waits until n distinct ids were handled, or the deadline.
func (t *tracker) await(n int, d time.Duration) error {
	t.mu.Lock()
	t.goal, t.reached = n, make(chan struct{})
	if len(t.seen) >= n {
		close(t.reached)
	}
	reached := t.reached
	t.mu.Unlock()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-reached:
		return nil
	case <-timer.C:
		t.mu.Lock()
		defer t.mu.Unlock()
		return fmt.Errorf("%d of %d ids handled after %v", len(t.seen), n, d)
	}
}

func (t *tracker) counts() (distinct int, dups int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.seen), t.dups
}

func runConsumeWorker(name string, c, round, n int, profDir string) result {
	suite, cname, _ := strings.Cut(name, "/")
	res := result{Suite: suite, Contender: cname, Publishers: c, Round: round, Verified: "no"}
	var cc *consumeContender
	for _, x := range consumeSuites[suite]() {
		if x.name == cname {
			cc = &x
		}
	}
	if cc == nil {
		res.Err = "unknown contender"
		return res
	}
	if suite == "consume-slow-kafka" {
		n = slowEvents(n, c)
	}
	if err := consume(&res, cc, c, n, profDir); err != nil {
		res.Err = err.Error()
	}
	res.PeakRSSKB = peakRSS()
	return res
}

func consume(res *result, cc *consumeContender, c, n int, profDir string) error {
	ctx := context.Background()
	run, err := cc.setup(ctx, c)
	if err != nil {
		return err
	}
	defer run.teardown()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("f-%08d", i)
	}
	if err := run.prefill(ctx, ids); err != nil {
		return fmt.Errorf("prefill: %w", err)
	}
	paced := int(pacedRate * pacedFor / time.Second)
	t := newTracker(n + paced)

	stopProfile := cpuProfile(profilePath(profDir, *res))
	m := startMeter()
	stop, err := run.start(ctx, c, t.handled)
	if err != nil {
		stopProfile()
		return fmt.Errorf("start: %w", err)
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = stop()
		}
	}()
	drainErr := t.await(n, drainDeadline)
	elapsed := m.stop(res, int64(n))
	stopProfile()
	if drainErr != nil {
		return drainErr
	}
	res.N, res.Seconds, res.MsgsPerSec = int64(n), elapsed.Seconds(), float64(n)/elapsed.Seconds()
	t.mu.Lock()
	res.FirstMs = float64(t.first.Sub(m.t0)) / 1e6 // start-up (connect, declare, join) inside the window
	t.mu.Unlock()

	// Latency: a paced stream while the subscriber runs.
	interval := time.Second / pacedRate
	t0 := time.Now()
	for i := range paced {
		if d := time.Until(t0.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d) // pacing, not waiting for an outcome
		}
		if err := run.paced(ctx, fmt.Sprintf("p-%d-%d", time.Now().UnixNano(), i)); err != nil {
			return fmt.Errorf("paced publish: %w", err)
		}
	}
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := run.flush(fctx); err != nil {
		return fmt.Errorf("paced publish: %w", err)
	}
	if err := t.await(n+paced, 30*time.Second); err != nil {
		return fmt.Errorf("paced: %w", err)
	}
	stopped = true
	if err := stop(); err != nil {
		return fmt.Errorf("close subscriber: %w", err)
	}
	distinct, dups := t.counts()
	res.Duplicates = dups
	t.mu.Lock()
	lat := slices.Clone(t.lat)
	t.mu.Unlock()
	slices.Sort(lat)
	if len(lat) > 0 {
		res.P50us = float64(lat[len(lat)/2]) / 1e3
		res.P99us = float64(lat[len(lat)*99/100]) / 1e3
	}
	if distinct != n+paced {
		res.Verified = fmt.Sprintf("no: %d distinct ids handled, want %d", distinct, n+paced)
		return nil
	}
	res.Verified = run.verify(int64(n + paced))
	return nil
}

// closeWithin is a contender's stop function: close, bounded by 30 s.
func closeWithin(close func(context.Context) error) func() error {
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return close(ctx)
	}
}
