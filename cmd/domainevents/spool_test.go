package main

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/deadletter"
	"github.com/domainevents/domainevents/internal/rabbittest"
)

// spool list works while a service owns the spool, spool replay refuses
// then (naming the owner), and replays everything to RabbitMQ once the
// spool is free.
func TestSpoolListAndReplay(t *testing.T) {
	admin := rabbittest.RequireRabbit(t)
	exchange := "det.domainevents." + strconv.FormatInt(time.Now().UnixNano(), 36)
	queue := exchange + ".q"
	t.Cleanup(func() {
		ch, err := admin.Channel()
		if err != nil {
			return
		}
		defer ch.Close()
		_, _ = ch.QueueDelete(queue, false, false, false)
		_, _ = ch.QueueDelete(exchange+".dlq", false, false, false)
		_ = ch.ExchangeDelete(exchange, false, false)
		_ = ch.ExchangeDelete(exchange+".dlx", false, false)
	})
	dir := t.TempDir()
	t.Setenv("MESSAGE_BROKER_SPOOL_DIR", dir)
	t.Setenv("MESSAGE_BROKER_ENABLED", "true")
	t.Setenv("MESSAGE_BROKER_EXCHANGE", exchange)
	t.Setenv("MESSAGE_BROKER_QUEUE", queue)

	service, err := deadletter.OpenSpool(dir) // what a running service holds
	require.NoError(t, err)
	var ids []string
	for range 3 {
		m := brokertest.NewMessage("order.created")
		ids = append(ids, m.ID)
		require.NoError(t, service.Put(context.Background(), broker.DeadLetter{Message: m, Reason: "connection refused", Category: "unavailable", Attempts: 5}))
	}

	out, err := cli(t, "spool", "list")
	require.NoError(t, err, "list works while the service runs")
	for _, id := range ids {
		assert.Contains(t, out, id)
	}
	assert.Contains(t, out, "connection refused")
	assert.Contains(t, out, "3 event(s)")

	_, err = cli(t, "spool", "replay")
	require.ErrorIs(t, err, deadletter.ErrLocked, "replay refuses while the service owns the spool")
	assert.Contains(t, err.Error(), "process "+strconv.Itoa(os.Getpid()))
	require.NoError(t, service.Close())

	out, err = cli(t, "spool", "replay")
	require.NoError(t, err)
	assert.Contains(t, out, "replayed 3/3")
	ch, err := admin.Channel()
	require.NoError(t, err)
	defer ch.Close()
	got := map[string]bool{}
	for range 3 {
		d, ok, err := ch.Get(queue, true)
		require.NoError(t, err)
		require.True(t, ok, "replayed events in %s", queue)
		got[d.MessageId] = true
	}
	for _, id := range ids {
		assert.True(t, got[id], "event %s replayed", id)
	}
	out, err = cli(t, "spool", "list")
	require.NoError(t, err)
	assert.Contains(t, out, "0 event(s)")
}
