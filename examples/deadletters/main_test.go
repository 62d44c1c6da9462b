package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/deadletter"
)

func TestListAndReplay(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("DEADLETTER_DIR", dir)
	t.Setenv("MESSAGE_BROKER_ENABLED", "false")
	s, err := deadletter.OpenSpool(dir)
	require.NoError(t, err)
	var ids []string
	for range 3 {
		m := brokertest.NewMessage("order.created")
		ids = append(ids, m.ID)
		require.NoError(t, s.Put(context.Background(), broker.DeadLetter{Message: m, Reason: "connection refused", Category: "unavailable", Attempts: 5}))
	}
	require.NoError(t, s.Close())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	var out bytes.Buffer
	require.NoError(t, run(context.Background(), log, &out, []string{"list"}))
	for _, id := range ids {
		assert.Contains(t, out.String(), id)
	}
	assert.Contains(t, out.String(), "connection refused")
	assert.Contains(t, out.String(), "3 event(s)")

	out.Reset()
	require.NoError(t, run(context.Background(), log, &out, []string{"replay"}))
	assert.Contains(t, out.String(), "replayed 3/3")
	out.Reset()
	require.NoError(t, run(context.Background(), log, &out, []string{"list"}))
	assert.Contains(t, out.String(), "0 event(s)")

	assert.Error(t, run(context.Background(), log, &out, []string{"explode"}))
}
