package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
)

// pubSession is the publishers' shared connection; it is replaced after a
// connection loss by one to the next node that answers.
type pubSession struct {
	conn *amqp.Connection
	node int
	dead chan struct{}
}

type clusterRun struct {
	c  config
	nd nodes
	q  string

	mu   sync.Mutex
	sess *pubSession
	gen  int

	confirmed   sync.Map // id -> struct{}
	nConfirmed  atomic.Int64
	resent      atomic.Int64 // publishes repeated after an unknown outcome
	nacks       atomic.Int64
	reconnects  atomic.Int64
	confirmedAt []time.Time // guarded by mu
}

// session returns the current connection, opening one to the first node
// that answers (starting after the one that failed) when there is none or
// the current one is failed.
func (r *clusterRun) session(failed *pubSession) (*pubSession, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sess != nil && r.sess != failed {
		return r.sess, nil
	}
	start := 0
	if failed != nil {
		start = failed.node + 1
		r.reconnects.Add(1)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		for k := range len(r.nd.addrs) {
			i := (start + k) % len(r.nd.addrs)
			conn, err := r.nd.dial(i)
			if err != nil {
				continue
			}
			s := &pubSession{conn: conn, node: i, dead: make(chan struct{})}
			closed := conn.NotifyClose(make(chan *amqp.Error, 1))
			go func() { <-closed; close(s.dead) }()
			r.sess = s
			logf(r.c, "cluster: publishers connected to node %d", i+1)
			return s, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, fmt.Errorf("no node answered for 60s")
}

// publisher publishes its share of ids, each until confirmed; after a
// connection loss it re-sends the message whose outcome it did not learn.
func (r *clusterRun) publisher(ids <-chan string) error {
	var s *pubSession
	var ch *amqp.Channel
	for id := range ids {
		for {
			if ch == nil {
				if s == nil || isClosed(s.dead) {
					var err error
					if s, err = r.session(s); err != nil {
						return err
					}
				}
				var err error
				if ch, err = s.conn.Channel(); err == nil {
					err = ch.Confirm(false)
				}
				if err != nil {
					ch = nil
					continue // the session died meanwhile: the next call replaces it
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", r.q, true, false,
				amqp.Publishing{MessageId: id, DeliveryMode: amqp.Persistent, Body: []byte(id)})
			var ok bool
			if err == nil {
				ok, err = dc.WaitContext(ctx)
			}
			cancel()
			if err == nil && ok {
				r.confirmed.Store(id, struct{}{})
				r.nConfirmed.Add(1)
				r.mu.Lock()
				r.confirmedAt = append(r.confirmedAt, time.Now())
				r.mu.Unlock()
				break
			}
			if err == nil && !ok {
				r.nacks.Add(1)
			}
			// Outcome unknown (or nacked): send it again, on a new channel.
			r.resent.Add(1)
			_ = ch.Close()
			ch = nil
			select {
			case <-s.dead:
			default:
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	if ch != nil {
		_ = ch.Close()
	}
	return nil
}

// leader asks the cluster which node leads q.
func (r *clusterRun) leader() (string, error) {
	for i := range r.nd.addrs {
		out, err := r.nd.output("ctl", fmt.Sprint(i+1), "list_queues", "name", "leader", "--formatter", "json")
		if err != nil {
			continue
		}
		var qs []struct{ Name, Leader string }
		if json.Unmarshal([]byte(out), &qs) != nil {
			continue
		}
		for _, q := range qs {
			if q.Name == r.q {
				return q.Leader, nil
			}
		}
	}
	return "", fmt.Errorf("no leader found for %s", r.q)
}

// runCluster: a quorum queue led by node 1, publishers connected to node 1,
// node 1 SIGKILLed mid-way; is every confirmed id in the queue?
func runCluster(c config, run int) (string, error) {
	nd := testCluster(c.script)
	if err := nd.run("start"); err != nil {
		return "", err
	}
	r := &clusterRun{c: c, nd: nd, q: "exp.cluster." + uuid.NewString()[:8]}
	admin, err := nd.dialRetry(0, 30*time.Second)
	if err != nil {
		return "", err
	}
	ch, err := admin.Channel()
	if err != nil {
		return "", err
	}
	if _, err := ch.QueueDeclare(r.q, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		return "", err
	}
	_ = admin.Close()
	leaderBefore, err := r.leader()
	if err != nil {
		return "", err
	}

	ids := make(chan string, c.n)
	for i := range c.n {
		ids <- fmt.Sprintf("%s-%06d", r.q, i)
	}
	close(ids)

	start := time.Now()
	var killedAt time.Time
	killErr := make(chan error, 1)
	go func() {
		for r.nConfirmed.Load() < int64(float64(c.n)*c.killAt) {
			time.Sleep(5 * time.Millisecond)
		}
		logf(c, "cluster: SIGKILL node 1 at %d confirmed", r.nConfirmed.Load())
		killedAt = time.Now()
		killErr <- nd.run("kill", "1")
	}()
	var wg sync.WaitGroup
	errs := make(chan error, c.publishers)
	for range c.publishers {
		wg.Go(func() {
			if err := r.publisher(ids); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		return "", err
	}
	if err := <-killErr; err != nil {
		return "", err
	}
	r.mu.Lock()
	if r.sess != nil {
		_ = r.sess.conn.Close()
	}
	times := slices.Clone(r.confirmedAt)
	r.mu.Unlock()
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	var maxGap time.Duration
	var gapAt time.Time
	for i := 1; i < len(times); i++ {
		if g := times[i].Sub(times[i-1]); g > maxGap {
			maxGap, gapAt = g, times[i-1]
		}
	}
	leaderAfter, _ := r.leader()

	// Bring node 1 back, then count through node 2.
	restartStart := time.Now()
	if err := nd.run("restart", "1"); err != nil {
		return "", err
	}
	restartTook := time.Since(restartStart)
	conn, err := nd.dialRetry(1, 30*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	got, err := drain(conn, r.q, 3*time.Second)
	if err != nil {
		return "", err
	}
	deleteQueues(conn, r.q)
	lost, dups, unknown := 0, 0, 0
	r.confirmed.Range(func(k, _ any) bool {
		if got[k.(string)] == 0 {
			lost++
		}
		return true
	})
	for id, k := range got {
		if k > 1 {
			dups += k - 1
		}
		if _, ok := r.confirmed.Load(id); !ok {
			unknown++
		}
	}
	return fmt.Sprintf("cluster run=%d n=%d publishers=%d confirmed=%d in_queue=%d lost_confirmed=%d dups=%d unconfirmed_in_queue=%d resent=%d nacks=%d reconnects=%d leader_before=%s leader_after=%s max_confirm_gap=%s gap_starts_after_kill=%s elapsed=%s rate=%.0f/s node_restart=%s",
		run, c.n, c.publishers, r.nConfirmed.Load(), len(got), lost, dups, unknown, r.resent.Load(), r.nacks.Load(), r.reconnects.Load(),
		short(leaderBefore), short(leaderAfter), maxGap.Round(time.Millisecond), gapAt.Sub(killedAt).Round(time.Millisecond),
		elapsed.Round(100*time.Millisecond), float64(c.n)/elapsed.Seconds(), restartTook.Round(time.Second)), nil
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func short(node string) string { n, _, _ := strings.Cut(node, "@"); return n }
