package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/domainevents/domainevents/broker"
)

// checkSummary checks that the three events' send and process spans are
// all in the root span's trace.
func checkSummary(t *testing.T, out, errOut string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 7, "summary:\n%s\nstderr:\n%s", out, errOut)
	require.True(t, strings.HasPrefix(lines[0], "root span POST /orders: trace "), lines[0])
	trace := strings.TrimPrefix(lines[0], "root span POST /orders: trace ")
	for i, l := range lines[1:] {
		kind := "producer"
		if i%2 == 1 {
			kind = "consumer"
		}
		assert.True(t, strings.HasPrefix(strings.TrimSpace(l), kind), l)
		assert.Contains(t, l, "trace "+trace+" (same trace)")
	}
	// The spans went to stderr too, through the stdout exporter, and the
	// consumer's log line carries the trace id.
	assert.Contains(t, errOut, `"Name": "POST /orders"`)
	assert.Contains(t, errOut, `"TraceID": "`+trace+`"`)
	assert.Contains(t, errOut, "trace_id="+trace)
}

func TestExampleWithoutBroker(t *testing.T) {
	cfg, err := broker.LoadConfig(func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	var out, errOut bytes.Buffer
	require.NoError(t, run(context.Background(), cfg, &out, &errOut))
	checkSummary(t, out.String(), errOut.String())
	assert.Contains(t, errOut.String(), "MESSAGE_BROKER_ENABLED is not true")
	assert.Contains(t, out.String(), "send in-process")
}

func TestExampleRabbitMQ(t *testing.T) {
	admin, err := amqp.DialConfig("amqp://guest:guest@127.0.0.1:5672/", amqp.Config{Dial: amqp.DefaultDial(3 * time.Second)})
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("RabbitMQ is not reachable on 127.0.0.1:5672: %v", err)
		}
		t.Skipf("RabbitMQ is not reachable (%v); start it with `rabbitmq-server -detached`", err)
	}
	t.Cleanup(func() { _ = admin.Close() }) // after the cleanup below: cleanups run last-in first-out
	x := "det.otel.example." + uuid.NewString()[:8]
	t.Cleanup(func() {
		ch, err := admin.Channel()
		if err != nil {
			return
		}
		defer ch.Close()
		for _, q := range []string{x + ".q", x + ".q.retry", x + ".q.dlq", x + ".dlq"} {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		_ = ch.ExchangeDelete(x, false, false)
		_ = ch.ExchangeDelete(x+".dlx", false, false)
	})
	env := map[string]string{"MESSAGE_BROKER_ENABLED": "true", "MESSAGE_BROKER_HOST": "127.0.0.1",
		"MESSAGE_BROKER_EXCHANGE": x, "MESSAGE_BROKER_QUEUE": x + ".q", "MESSAGE_BROKER_SPOOL_DIR": t.TempDir()}
	cfg, err := broker.LoadConfig(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	require.NoError(t, err)
	var out, errOut bytes.Buffer
	require.NoError(t, run(context.Background(), cfg, &out, &errOut))
	checkSummary(t, out.String(), errOut.String())
	assert.Contains(t, out.String(), "process "+x+":order.created:"+x+".q")
}

func TestExampleKafka(t *testing.T) {
	topic := "det.otel.example." + uuid.NewString()[:8]
	c, err := kfake.NewCluster(kfake.SeedTopics(3, topic, topic+".dlq"))
	require.NoError(t, err)
	defer c.Close()
	env := map[string]string{"MESSAGE_BROKER_ENABLED": "true", "MESSAGE_BROKER_TYPE": "kafka",
		"MESSAGE_BROKER_ADDRESSES": strings.Join(c.ListenAddrs(), ","), "MESSAGE_BROKER_TOPIC": topic,
		"MESSAGE_BROKER_CLIENT_ID": "det-otel-example", "MESSAGE_BROKER_SPOOL_DIR": t.TempDir()}
	cfg, err := broker.LoadConfig(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	require.NoError(t, err)
	var out, errOut bytes.Buffer
	require.NoError(t, run(context.Background(), cfg, &out, &errOut))
	checkSummary(t, out.String(), errOut.String())
	assert.Contains(t, out.String(), "process "+topic)
}
