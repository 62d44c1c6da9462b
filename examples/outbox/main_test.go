package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/events"
	"github.com/domainevents/domainevents/internal/dbtest"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// On a fresh machine: SQLite and stdout. Exactly the committed order's two
// events are printed, in order; nothing of the rolled-back one.
func TestRunSQLite(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	t.Setenv("MESSAGE_BROKER_ENABLED", "false")
	var out bytes.Buffer
	res, err := run(context.Background(), quiet(), &out)
	require.NoError(t, err)
	checkLines(t, strings.Split(strings.TrimSpace(out.String()), "\n"), res)
}

func checkLines(t *testing.T, lines []string, res result) {
	t.Helper()
	require.Len(t, lines, 2)
	for i, name := range []string{events.NameOrderCreated, events.NameOrderStatusUpdated} {
		env, err := events.Decode([]byte(lines[i]))
		require.NoError(t, err, lines[i])
		assert.Equal(t, name, env.Name)
		assert.Equal(t, res.Committed, env.Data.AggregateID())
		assert.NotContains(t, lines[i], res.RolledBack)
	}
}

// Against PostgreSQL and RabbitMQ: the queue receives the committed
// order's two events and nothing else.
func TestRunPostgresRabbitMQ(t *testing.T) {
	db := dbtest.RequirePostgres(t)
	conn, err := amqp.Dial("amqp://guest:guest@127.0.0.1:5672/")
	if err != nil {
		if testingCI() {
			t.Fatalf("RabbitMQ is not reachable on 127.0.0.1:5672: %v", err)
		}
		t.Skipf("RabbitMQ is not reachable on 127.0.0.1:5672 (%v); start it with `rabbitmq-server -detached`", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	exchange := "det.example." + db.Prefix
	queue := exchange + "q"
	t.Cleanup(func() {
		_, _ = ch.QueueDelete(queue, false, false, false)
		_ = ch.ExchangeDelete(exchange, false, false)
	})
	t.Setenv("DATABASE_URL", db.DSN)
	t.Setenv("OUTBOX_TABLE_PREFIX", db.Prefix)
	t.Setenv("MESSAGE_BROKER_ENABLED", "true")
	t.Setenv("MESSAGE_BROKER_TYPE", "rabbitmq")
	t.Setenv("MESSAGE_BROKER_EXCHANGE", exchange)
	t.Setenv("EXAMPLE_QUEUE", queue)

	var out bytes.Buffer
	res, err := run(context.Background(), quiet(), &out)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	checkLines(t, lines, res)
	for i := range 2 {
		d, ok, err := ch.Get(queue, true)
		require.NoError(t, err)
		require.True(t, ok, "event %d missing from %s", i, queue)
		assert.Equal(t, lines[i], string(d.Body))
	}
	_, ok, err := ch.Get(queue, true)
	require.NoError(t, err)
	assert.False(t, ok, "nothing else in the queue")
}

func TestBadDatabaseURL(t *testing.T) {
	t.Setenv("DATABASE_URL", "oracle://x")
	_, err := run(context.Background(), quiet(), io.Discard)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "DATABASE_URL")
}

func testingCI() bool { return os.Getenv("CI") != "" }
