package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
)

// queues declares the main and retry queues of variant v.
func declare(ch *amqp.Channel, v, main string, delay time.Duration) error {
	quorum := amqp.Table{"x-queue-type": "quorum"}
	var mainArgs, retryArgs amqp.Table
	switch v {
	case "classic-ttl":
		retryArgs = amqp.Table{"x-message-ttl": delay.Milliseconds(), "x-dead-letter-exchange": "", "x-dead-letter-routing-key": main}
	case "quorum-dlx":
		mainArgs = quorum
		retryArgs = amqp.Table{
			"x-queue-type":              "quorum",
			"x-message-ttl":             delay.Milliseconds(),
			"x-dead-letter-exchange":    "",
			"x-dead-letter-routing-key": main,
			"x-dead-letter-strategy":    "at-least-once",
			"x-overflow":                "reject-publish",
		}
	case "hold-republish":
	case "hold-nack":
		mainArgs = quorum
	}
	if _, err := ch.QueueDeclare(main, true, false, false, false, mainArgs); err != nil {
		return fmt.Errorf("declare %s: %w", main, err)
	}
	if retryArgs != nil {
		if _, err := ch.QueueDeclare(main+".retry", true, false, false, false, retryArgs); err != nil {
			return fmt.Errorf("declare %s.retry: %w", main, err)
		}
	}
	return nil
}

// publishPaced publishes ids to queue through conn, spread evenly over
// window, and returns the ids the broker confirmed (ack). It stops
// publishing when the connection dies.
func publishPaced(conn *amqp.Connection, queue string, ids []string, window time.Duration) ([]string, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), window+30*time.Second)
	defer cancel()
	start := time.Now()
	dcs := make([]*amqp.DeferredConfirmation, len(ids))
	for i, id := range ids {
		if d := time.Until(start.Add(window * time.Duration(i) / time.Duration(len(ids)))); d > 0 {
			time.Sleep(d)
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false,
			amqp.Publishing{MessageId: id, DeliveryMode: amqp.Persistent, Body: []byte(id)})
		if err != nil {
			break // the node died: what was sent and confirmed counts
		}
		dcs[i] = dc
	}
	var confirmed []string
	for i, dc := range dcs {
		if dc == nil {
			break
		}
		if ok, err := dc.WaitContext(ctx); err == nil && ok {
			confirmed = append(confirmed, ids[i])
		}
	}
	return confirmed, nil
}

func newIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%05d", prefix, i)
	}
	return ids
}

// startNode starts the single experiment node (idempotent) and returns an
// admin connection.
func startNode(c config) (nodes, *amqp.Connection, error) {
	nd := singleNode(c.script)
	if err := nd.run("start"); err != nil {
		return nd, nil, err
	}
	conn, err := nd.dialRetry(0, 60*time.Second)
	return nd, conn, err
}

// killAndRestart SIGKILLs node i and starts it again; it returns when the
// node answers, with the kill time and how long the node was down.
func killAndRestart(nd nodes, i int) (killed time.Time, down time.Duration, err error) {
	if err := nd.run("kill", fmt.Sprint(i+1)); err != nil {
		return time.Time{}, 0, err
	}
	killed = time.Now()
	if err := nd.run("restart", fmt.Sprint(i+1)); err != nil {
		return killed, 0, err
	}
	return killed, time.Since(killed), nil
}

// runPark: n confirmed messages wait in the retry queue; the node dies
// while it dead-letters them.
func runPark(c config, run int) (string, error) {
	nd, admin, err := startNode(c)
	if err != nil {
		return "", err
	}
	main := "exp.park." + uuid.NewString()[:8]
	ch, err := admin.Channel()
	if err != nil {
		return "", err
	}
	if err := declare(ch, c.variant, main, c.delay); err != nil {
		return "", err
	}
	_ = ch.Close()

	start := time.Now()
	killDone := make(chan error, 1)
	var down time.Duration
	if c.kill {
		go func() {
			time.Sleep(time.Until(start.Add(c.killAfter)))
			logf(c, "park: kill")
			var err error
			_, down, err = killAndRestart(nd, 0)
			killDone <- err
		}()
	} else {
		killDone <- nil
	}
	ids := newIDs(main, c.n)
	confirmed, err := publishPaced(admin, main+".retry", ids, c.window)
	if err != nil {
		return "", err
	}
	logf(c, "park: %d of %d confirmed", len(confirmed), len(ids))
	if err := <-killDone; err != nil {
		return "", err
	}
	_ = admin.Close()
	conn, err := nd.dialRetry(0, 60*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	// Wait for the retry queue to empty (what it still holds expires).
	deadline := time.Now().Add(c.delay + 60*time.Second)
	for {
		n, err := queueDepth(conn, main+".retry")
		if err != nil {
			return "", err
		}
		if n == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(time.Second) // dead-lettering in flight lands in main
	leftInRetry, _ := queueDepth(conn, main+".retry")
	got, err := drain(conn, main, 2*time.Second)
	if err != nil {
		return "", err
	}
	lost, dups := 0, 0
	for _, id := range confirmed {
		if got[id] == 0 {
			lost++
		}
	}
	for _, k := range got {
		if k > 1 {
			dups += k - 1
		}
	}
	deleteQueues(conn, main, main+".retry")
	return fmt.Sprintf("park variant=%s run=%d confirmed=%d/%d in_main=%d lost=%d dups=%d left_in_retry=%d down=%s killed=%v",
		c.variant, run, len(confirmed), len(ids), len(got), lost, dups, leftInRetry, down.Round(100*time.Millisecond), c.kill), nil
}

// consumerRun is one run of the consumer experiment.
type consumerRun struct {
	c    config
	nd   nodes
	main string

	mu           sync.Mutex
	attempts     map[string]int
	successes    map[string]int
	firstFail    map[string]time.Time
	doneAt       map[string]time.Time
	maxDelivCnt  int64 // highest x-delivery-count seen
	crashRedeliv int   // deliveries with the redelivered flag

	lastSuccess atomic.Int64 // unix nanos
	retryErrs   atomic.Int64 // copies that could not be published/confirmed
}

// session is one connection of the consumer.
type session struct {
	conn *amqp.Connection
	ch   *amqp.Channel
	dead chan struct{} // closed when the connection is gone
}

func (r *consumerRun) connect() (*session, <-chan amqp.Delivery, error) {
	conn, err := r.nd.dial(0)
	if err != nil {
		return nil, nil, err
	}
	ch, err := conn.Channel()
	if err == nil {
		err = declare(ch, r.c.variant, r.main, r.c.delay)
	}
	if err == nil {
		err = ch.Qos(r.c.prefetch, 0, false)
	}
	if err == nil {
		err = ch.Confirm(false)
	}
	var ds <-chan amqp.Delivery
	if err == nil {
		ds, err = ch.Consume(r.main, "", false, false, false, false, nil)
	}
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	s := &session{conn: conn, ch: ch, dead: make(chan struct{})}
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	go func() { <-closed; close(s.dead) }()
	return s, ds, nil
}

// handle runs the "handler" (fails the first c.fails attempts of each id)
// and the variant's retry path.
func (r *consumerRun) handle(s *session, d amqp.Delivery) {
	if r.c.work > 0 {
		time.Sleep(r.c.work)
	}
	id := d.MessageId
	r.mu.Lock()
	r.attempts[id]++
	n := r.attempts[id]
	if v, ok := d.Headers["x-delivery-count"]; ok {
		if k, ok := v.(int64); ok && k > r.maxDelivCnt {
			r.maxDelivCnt = k
		}
	}
	if d.Redelivered {
		r.crashRedeliv++
	}
	if n > r.c.fails {
		r.successes[id]++
		if _, ok := r.doneAt[id]; !ok {
			r.doneAt[id] = time.Now()
		}
		r.mu.Unlock()
		r.lastSuccess.Store(time.Now().UnixNano())
		_ = d.Ack(false)
		return
	}
	if _, ok := r.firstFail[id]; !ok {
		r.firstFail[id] = time.Now()
	}
	r.mu.Unlock()

	copyOf := func() amqp.Publishing {
		return amqp.Publishing{MessageId: id, DeliveryMode: amqp.Persistent, Body: d.Body, Headers: amqp.Table{"x-attempt": int32(n + 1)}}
	}
	publish := func(queue string) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		dc, err := s.ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false, copyOf())
		if err != nil {
			r.retryErrs.Add(1)
			return false
		}
		ok, err := dc.WaitContext(ctx)
		if err != nil || !ok {
			r.retryErrs.Add(1)
			return false
		}
		return true
	}
	wait := func() bool {
		t := time.NewTimer(r.c.delay)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-s.dead: // the broker redelivers the original
			return false
		}
	}
	go func() {
		switch r.c.variant {
		case "classic-ttl", "quorum-dlx":
			if publish(r.main + ".retry") {
				_ = d.Ack(false)
			}
		case "hold-republish":
			if wait() && publish(r.main) {
				_ = d.Ack(false)
			}
		case "hold-nack":
			if wait() {
				_ = d.Nack(false, true)
			}
		}
	}()
}

func (r *consumerRun) succeeded() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.successes)
}

// runConsumer: events fail c.fails times each and take the variant's retry
// path; the node dies while copies wait.
func runConsumer(c config, run int) (string, error) {
	nd, admin, err := startNode(c)
	if err != nil {
		return "", err
	}
	r := &consumerRun{c: c, nd: nd, main: "exp.cons." + uuid.NewString()[:8],
		attempts: map[string]int{}, successes: map[string]int{}, firstFail: map[string]time.Time{}, doneAt: map[string]time.Time{}}
	ch, err := admin.Channel()
	if err != nil {
		return "", err
	}
	if err := declare(ch, c.variant, r.main, c.delay); err != nil {
		return "", err
	}
	_ = ch.Close()

	stop := make(chan struct{})
	consumerDone := make(chan struct{})
	var sessions atomic.Int64
	go func() { // the consumer, reconnecting until stop
		defer close(consumerDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			s, ds, err := r.connect()
			if err != nil {
				time.Sleep(200 * time.Millisecond)
				continue
			}
			sessions.Add(1)
			for {
				select {
				case d, ok := <-ds:
					if !ok {
						goto next
					}
					r.handle(s, d)
				case <-stop:
					_ = s.conn.Close()
					return
				}
			}
		next:
			_ = s.conn.Close()
		}
	}()

	start := time.Now()
	killDone := make(chan error, 1)
	var down time.Duration
	if c.kill {
		go func() {
			time.Sleep(time.Until(start.Add(c.killAfter)))
			logf(c, "consumer: kill after %d successes", r.succeeded())
			var err error
			_, down, err = killAndRestart(nd, 0)
			killDone <- err
		}()
	} else {
		killDone <- nil
	}
	ids := newIDs(r.main, c.n)
	confirmed, err := publishPaced(admin, r.main, ids, c.window)
	if err != nil {
		return "", err
	}
	_ = admin.Close()
	if err := <-killDone; err != nil {
		return "", err
	}
	// Wait until every confirmed event succeeded, or nothing has happened
	// for long enough that nothing more will.
	quiet := 2*c.delay + 15*time.Second
	r.lastSuccess.Store(time.Now().UnixNano())
	for r.succeeded() < len(confirmed) && time.Since(time.Unix(0, r.lastSuccess.Load())) < quiet {
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	<-consumerDone

	conn, err := nd.dialRetry(0, 30*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	inMain, _ := queueDepth(conn, r.main)
	inRetry := 0
	if c.variant == "classic-ttl" || c.variant == "quorum-dlx" {
		inRetry, _ = queueDepth(conn, r.main+".retry")
	}
	deleteQueues(conn, r.main, r.main+".retry")

	r.mu.Lock()
	defer r.mu.Unlock()
	lost, dups := 0, 0
	for _, id := range confirmed {
		switch k := r.successes[id]; {
		case k == 0:
			lost++
		case k > 1:
			dups += k - 1
		}
	}
	extraAttempts := 0
	var overhead []time.Duration
	for _, id := range confirmed {
		if a := r.attempts[id]; a > c.fails+1 {
			extraAttempts += a - (c.fails + 1)
		}
		if done, ok := r.doneAt[id]; ok {
			overhead = append(overhead, done.Sub(r.firstFail[id])-time.Duration(c.fails)*c.delay)
		}
	}
	slices.Sort(overhead)
	pct := func(p float64) time.Duration {
		if len(overhead) == 0 {
			return 0
		}
		return overhead[min(len(overhead)-1, int(p*float64(len(overhead))))].Round(time.Millisecond)
	}
	return fmt.Sprintf("consumer variant=%s work=%s run=%d confirmed=%d/%d handled=%d lost=%d dups=%d extra_attempts=%d redelivered=%d max_x_delivery_count=%d retry_publish_errors=%d left_main=%d left_retry=%d sessions=%d down=%s killed=%v retry_overhead_p50=%s p99=%s",
		c.variant, c.work, run, len(confirmed), len(ids), len(r.successes), lost, dups, extraAttempts, r.crashRedeliv, r.maxDelivCnt,
		r.retryErrs.Load(), inMain, inRetry, sessions.Load(), down.Round(100*time.Millisecond), c.kill, pct(0.5), pct(0.99)), nil
}
