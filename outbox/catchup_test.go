package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/internal/dbtest"
	"github.com/domainevents/domainevents/internal/testenv"
	"github.com/domainevents/domainevents/outbox"
)

// valve is a broker whose publishes wait while it is shut (ignoring ctx
// until it opens): a broker far slower than the writers.
type valve struct {
	brokertest.Recorder
	open chan struct{}
	once sync.Once
}

func (v *valve) Publish(ctx context.Context, m broker.Message) error {
	<-v.open
	return v.Recorder.Publish(context.WithoutCancel(ctx), m)
}

func (v *valve) release() { v.once.Do(func() { close(v.open) }) }

// TestRelayCatchesUp: a relay starting on empty tables, whose broker
// takes nothing while writers commit (first only its window is claimed,
// then the backlog grows from nothing to thousands of rows, most keys with
// one event, some with many), then opens while they go on writing: the
// relay publishes the whole backlog, every event once by id, each key's in
// seq order. On PostgreSQL this is the shape in which a claim planned
// while the table was nearly empty (a cached generic plan) read the
// pending rows once per head and never caught up (bench/README.md).
func TestRelayCatchesUp(t *testing.T) {
	for _, kind := range []string{"postgres", "mysql"} {
		t.Run(kind, func(t *testing.T) {
			var db *dbtest.DB
			if kind == "postgres" {
				db = dbtest.RequirePostgres(t)
			} else {
				db = dbtest.RequireMariaDB(t)
			}
			runCatchUp(t, db, testenv.Count(1500, 20000))
		})
	}
}

func runCatchUp(t *testing.T, db *dbtest.DB, events int) {
	s := newStore(t, db)
	v := &valve{open: make(chan struct{})}
	t.Cleanup(v.release)
	r := startRelay(t, s, v, fastRelay(outbox.WithMaxInFlight(16), outbox.WithLogger(brokertest.Logger(t)))...)

	// 16 writers: every tenth event on one of 20 shared keys, the others
	// on keys of their own; the valve opens half way through.
	const writers, shared = 16, 20
	var next atomic.Int64
	var opened sync.Once
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			for {
				i := next.Add(1) - 1
				if i >= int64(events) {
					return
				}
				if i == int64(events/2) {
					opened.Do(v.release)
				}
				key := "own-" + strconv.FormatInt(i, 10)
				if i%10 == 0 {
					key = fmt.Sprintf("shared-%d", i/10%shared)
				}
				m := newMsg(key)
				m.ID = fmt.Sprintf("catchup-%07d", i)
				if err := s.Transact(ctx, func(ctx context.Context, _ *sql.Tx) error { return s.Publish(ctx, m) }); err != nil {
					t.Errorf("write %d: %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	require.False(t, t.Failed())

	brokertest.WaitFor(t, 10*time.Minute, "the relay to publish the backlog", func() bool {
		return r.Stats().Published >= int64(events)
	})
	rows, _, err := s.Backlog(context.Background())
	require.NoError(t, err)
	require.Zero(t, rows, "rows left pending")

	seen := map[string]int{}
	last := map[string]int64{}
	for _, m := range v.Messages() {
		seen[m.ID]++
		seq, err := strconv.ParseInt(m.Headers[broker.HeaderSeq], 10, 64)
		require.NoError(t, err)
		require.Greater(t, seq, last[m.Key], "key %s published out of order", m.Key)
		last[m.Key] = seq
	}
	for i := range events {
		require.Equal(t, 1, seen[fmt.Sprintf("catchup-%07d", i)], "event %d published once", i)
	}
}

// TestRelayOddKeys: keys and ids with the characters an array literal
// quotes (", \, comma, braces, space, NULL spelled out), several events
// per key (the advance claim's key list, the mark's id list): every event
// is published and marked, each key's in order.
func TestRelayOddKeys(t *testing.T) {
	dbtest.All(t, func(t *testing.T, db *dbtest.DB) {
		s := newStore(t, db)
		rec := &brokertest.Recorder{}
		r := startRelay(t, s, rec, fastRelay()...)
		keys := []string{`a"b`, `c\d`, `e,f`, `{g}`, `h i`, `NULL`, `"`, `\`, `é`}
		var all []broker.Message
		for round := range 3 {
			var msgs []broker.Message
			for _, k := range keys {
				m := newMsg(k)
				m.ID = fmt.Sprintf(`%s"\,{%d}`, k, round)
				msgs = append(msgs, m)
			}
			write(t, s, msgs...)
			all = append(all, msgs...)
		}
		brokertest.WaitFor(t, time.Minute, "every odd event published and marked", func() bool {
			return r.Stats().Published >= int64(len(all))
		})
		got := map[string]bool{}
		last := map[string]int64{}
		for _, m := range rec.Messages() {
			got[m.ID] = true
			seq, err := strconv.ParseInt(m.Headers[broker.HeaderSeq], 10, 64)
			require.NoError(t, err)
			require.Greater(t, seq, last[m.Key], "key %q out of order", m.Key)
			last[m.Key] = seq
		}
		for _, m := range all {
			require.True(t, got[m.ID], "event %q published", m.ID)
		}
		require.Equal(t, 0, count(t, db, "state = 0"), "rows left pending")
	})
}
