package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/events"
	"github.com/domainevents/domainevents/health"
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

// addrHandler captures the "addr" attribute of the log record saying where
// the status endpoint listens.
type addrHandler struct {
	slog.Handler
	addr chan string
}

func (h addrHandler) Handle(ctx context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "addr" {
			select {
			case h.addr <- a.Value.String():
			default:
			}
		}
		return true
	})
	return nil
}

// With EXAMPLE_STATUS_ADDR the example serves /healthz and /status until
// interrupted.
func TestRunServesStatus(t *testing.T) {
	t.Setenv("MESSAGE_BROKER_ENABLED", "false")
	t.Setenv("EXAMPLE_STATUS_ADDR", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := addrHandler{slog.NewTextHandler(io.Discard, nil), make(chan string, 1)}
	done := make(chan error, 1)
	go func() { done <- run(ctx, slog.New(h), io.Discard) }()

	var addr string
	select {
	case addr = <-h.addr:
	case err := <-done:
		t.Fatalf("run returned before serving: %v", err)
	}
	resp, err := http.Get("http://" + addr + "/healthz")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "ok\n", string(body))

	resp, err = http.Get("http://" + addr + "/status")
	require.NoError(t, err)
	var rep health.Report
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&rep))
	resp.Body.Close()
	assert.Equal(t, health.StatusOK, rep.Status)
	assert.Contains(t, rep.Parts["publisher"].Details, "SpoolEntries")

	cancel()
	require.NoError(t, <-done)
}
