package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/events"
)

// With the broker disabled the example prints three valid wire bodies of one
// order, in order.
func TestRunPrintsThreeEvents(t *testing.T) {
	t.Setenv("MESSAGE_BROKER_ENABLED", "false")
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), &out))

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 3)
	want := []string{events.NameOrderCreated, events.NameOrderStatusUpdated, events.NameOrderCancelled}
	var orderID string
	for i, line := range lines {
		env, err := events.Decode([]byte(line))
		require.NoError(t, err, line)
		assert.Equal(t, want[i], env.Name)
		if orderID == "" {
			orderID = env.Data.AggregateID()
		}
		assert.Equal(t, orderID, env.Data.AggregateID())
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	t.Setenv("MESSAGE_BROKER_TYPE", "redis")
	err := run(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), io.Discard)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "MESSAGE_BROKER_TYPE")
}
