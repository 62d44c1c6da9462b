package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/domainevents/domainevents/internal/rabbittest"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// runOrders runs examples/orders with the test's environment.
func runOrders(t *testing.T) {
	t.Helper()
	cmd := exec.Command("go", "run", "../orders")
	cmd.Env = os.Environ()
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
}

func checkOutput(t *testing.T, out string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3, out)
	assert.Contains(t, lines[0], "order.created")
	assert.Contains(t, lines[0], "total=12550.00")
	assert.Contains(t, lines[1], "created -> in_progress")
	assert.Contains(t, lines[2], "order.cancelled")
}

func TestConsumesWhatOrdersPublishesRabbitMQ(t *testing.T) {
	admin := rabbittest.RequireRabbit(t)
	exchange := "det.consumer." + strconv.FormatInt(time.Now().UnixNano(), 36)
	queue := exchange + ".q"
	t.Cleanup(func() {
		ch, err := admin.Channel()
		if err != nil {
			return
		}
		defer ch.Close()
		for _, q := range []string{queue, queue + ".retry", queue + ".dlq"} {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		_ = ch.ExchangeDelete(exchange, false, false)
	})
	t.Setenv("MESSAGE_BROKER_ENABLED", "true")
	t.Setenv("MESSAGE_BROKER_TYPE", "rabbitmq")
	t.Setenv("MESSAGE_BROKER_EXCHANGE", exchange)
	t.Setenv("MESSAGE_BROKER_QUEUE", queue)
	t.Setenv("MESSAGE_BROKER_SPOOL_DIR", t.TempDir())
	runOrders(t)

	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, run(ctx, quiet(), &out, 3))
	checkOutput(t, out.String())
}

func TestConsumesWhatOrdersPublishesKafka(t *testing.T) {
	c, err := kfake.NewCluster(kfake.SeedTopics(3, "orders.events", "orders.events.dlq"))
	require.NoError(t, err)
	defer c.Close()
	host, port, err := net.SplitHostPort(c.ListenAddrs()[0])
	require.NoError(t, err)
	t.Setenv("MESSAGE_BROKER_ENABLED", "true")
	t.Setenv("MESSAGE_BROKER_TYPE", "kafka")
	t.Setenv("MESSAGE_BROKER_HOST", host)
	t.Setenv("MESSAGE_BROKER_PORT", port)
	t.Setenv("MESSAGE_BROKER_SPOOL_DIR", t.TempDir())
	runOrders(t)

	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, run(ctx, quiet(), &out, 3))
	checkOutput(t, out.String())
}

func TestDisabledBrokerIsAClearError(t *testing.T) {
	t.Setenv("MESSAGE_BROKER_ENABLED", "false")
	err := run(context.Background(), quiet(), io.Discard, 1)
	assert.ErrorContains(t, err, "MESSAGE_BROKER_ENABLED")
}
