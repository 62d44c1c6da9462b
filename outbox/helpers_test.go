package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/internal/dbtest"
	"github.com/domainevents/domainevents/outbox"
)

func dialectOf(db *dbtest.DB) outbox.Dialect { return outbox.Dialect(db.Kind) }

func tablesOf(db *dbtest.DB) outbox.Tables {
	return outbox.Tables{Outbox: db.Table("outbox"), Keys: db.Table("keys"), Inbox: db.Table("inbox")}
}

// newStore returns a migrated Store on db with the test's tables.
func newStore(t testing.TB, db *dbtest.DB, opts ...outbox.Option) *outbox.Store {
	t.Helper()
	s, err := outbox.New(db.DB, dialectOf(db), append([]outbox.Option{outbox.WithTables(tablesOf(db))}, opts...)...)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, s.Migrate(ctx))
	return s
}

// fastRelay are options for tests: quick polls and backoff. The lease stays
// long: the relay bounds each database statement by half of it, and a
// loaded machine can take seconds for one (a mark that times out publishes
// the row again). Tests that need a lease to run out set it (setLease).
func fastRelay(extra ...outbox.RelayOption) []outbox.RelayOption {
	return append([]outbox.RelayOption{
		outbox.WithPollInterval(20 * time.Millisecond),
		outbox.WithBackoff(5*time.Millisecond, 20*time.Millisecond),
		outbox.WithLease(2 * time.Minute),
		outbox.WithPublishTimeout(time.Minute - time.Second),
	}, extra...)
}

// startRelay starts a relay closed at the end of the test.
func startRelay(t testing.TB, s *outbox.Store, b broker.Broker, opts ...outbox.RelayOption) *outbox.Relay {
	t.Helper()
	r, err := outbox.NewRelay(s, b, opts...)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = r.Close(ctx)
	})
	return r
}

func newMsg(key string) broker.Message {
	m := brokertest.NewMessage("order.created")
	m.Key = key
	return m
}

// write stores msgs in one committed transaction.
func write(t testing.TB, s *outbox.Store, msgs ...broker.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, s.Transact(ctx, func(ctx context.Context, _ *sql.Tx) error {
		for _, m := range msgs {
			if err := s.Publish(ctx, m); err != nil {
				return err
			}
		}
		return nil
	}))
}

// rowState is a row's relay state as the table has it.
type rowState struct {
	State, Attempts int
	Seq             int64
	Owner           sql.NullString
	LastError       sql.NullString
	Exists          bool
}

func stateOf(t testing.TB, db *dbtest.DB, id string) rowState {
	t.Helper()
	var r rowState
	err := db.QueryRow(rebind(db, "SELECT state, attempts, seq, lease_owner, last_error FROM "+db.Table("outbox")+" WHERE id = ?"), id).
		Scan(&r.State, &r.Attempts, &r.Seq, &r.Owner, &r.LastError)
	if err == sql.ErrNoRows {
		return r
	}
	require.NoError(t, err)
	r.Exists = true
	return r
}

func count(t testing.TB, db *dbtest.DB, where string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, db.QueryRow(rebind(db, "SELECT count(*) FROM "+db.Table("outbox")+" WHERE "+where), args...).Scan(&n))
	return n
}

// setLease makes owner hold id's lease for d more (by the database's clock).
func setLease(t testing.TB, db *dbtest.DB, id, owner string, d time.Duration) {
	t.Helper()
	until := map[string]string{
		"postgres": fmt.Sprintf("now() + interval '%d milliseconds'", d.Milliseconds()),
		"mysql":    fmt.Sprintf("UTC_TIMESTAMP(6) + INTERVAL %d MICROSECOND", d.Microseconds()),
		"sqlite":   fmt.Sprintf("CAST(unixepoch('subsec') * 1000000 AS INTEGER) + %d", d.Microseconds()),
	}[db.Kind]
	_, err := db.Exec(rebind(db, "UPDATE "+db.Table("outbox")+" SET lease_owner = ?, lease_until = "+until+" WHERE id = ?"), owner, id)
	require.NoError(t, err)
}

func rebind(db *dbtest.DB, q string) string {
	if db.Kind != "postgres" {
		return q
	}
	out, n := []byte{}, 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			out = append(out, fmt.Sprintf("$%d", n)...)
			continue
		}
		out = append(out, q[i])
	}
	return string(out)
}

// gate is a broker whose publishes of held ids wait until released,
// ignoring ctx (a frozen process): they then return held[id]'s outcome.
type gate struct {
	brokertest.Recorder
	mu      sync.Mutex
	held    map[string]chan struct{}
	waiting map[string]bool
}

func newGate() *gate { return &gate{held: map[string]chan struct{}{}, waiting: map[string]bool{}} }

func (g *gate) hold(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.held[id] = make(chan struct{})
}

func (g *gate) release(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.held[id])
}

func (g *gate) isWaiting(id string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiting[id]
}

func (g *gate) Publish(ctx context.Context, m broker.Message) error {
	g.mu.Lock()
	ch := g.held[m.ID]
	if ch != nil {
		g.waiting[m.ID] = true
	}
	g.mu.Unlock()
	if ch != nil {
		<-ch
	}
	return g.Recorder.Publish(context.WithoutCancel(ctx), m)
}

func newID() string { return uuid.NewString() }

// noLeak is brokertest.CheckNoLeak, not counting the test database's pool
// (opened before the check, closed after it).
func noLeak(t testing.TB) {
	t.Helper()
	brokertest.CheckNoLeak(t, "database/sql.(*DB).connectionOpener", "go-sql-driver/mysql.(*mysqlConn).startWatcher")
}
