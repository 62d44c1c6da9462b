package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func contracts(t *testing.T, args ...string) (string, error) {
	var out bytes.Buffer
	err := run(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), &out, append([]string{"contracts"}, args...))
	return out.String(), err
}

// TestContractsWritesFiles: --out writes a schema per order event and the
// AsyncAPI document (their validity is tested in package contract).
func TestContractsWritesFiles(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("MESSAGE_BROKER_EXCHANGE", "shop.events")
	_, err := contracts(t, "--out", dir, "--service", "orders-service", "--version", "2.0.0")
	require.NoError(t, err)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	assert.Equal(t, []string{"asyncapi.json", "order.cancelled.schema.json", "order.created.schema.json", "order.status.updated.schema.json"}, names)

	var doc struct {
		AsyncAPI string `json:"asyncapi"`
		Info     struct{ Title, Version string }
		Channels map[string]struct {
			Bindings struct {
				AMQP struct{ Exchange struct{ Name string } } `json:"amqp"`
			}
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "asyncapi.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &doc))
	assert.Equal(t, "3.0.0", doc.AsyncAPI)
	assert.Equal(t, "orders-service", doc.Info.Title)
	assert.Equal(t, "2.0.0", doc.Info.Version)
	assert.Equal(t, "shop.events", doc.Channels["order.created"].Bindings.AMQP.Exchange.Name, "the exchange comes from MESSAGE_BROKER_EXCHANGE")
}

func TestContractsPrints(t *testing.T) {
	out, err := contracts(t, "--format", "asyncapi", "--broker", "kafka", "--topic-per-event")
	require.NoError(t, err)
	var doc struct{ Channels map[string]any }
	require.NoError(t, json.Unmarshal([]byte(out), &doc))
	assert.Len(t, doc.Channels, 3, "a topic per event")

	out, err = contracts(t, "--format", "jsonschema", "--event", "order.cancelled")
	require.NoError(t, err)
	var schema struct {
		Schema string `json:"$schema"`
		Title  string
	}
	require.NoError(t, json.Unmarshal([]byte(out), &schema))
	assert.Equal(t, "https://json-schema.org/draft/2020-12/schema", schema.Schema)
	assert.Equal(t, "order.cancelled", schema.Title)

	out, err = contracts(t)
	require.NoError(t, err)
	var all map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(out), &all), "several documents print as one object")
	assert.Len(t, all, 4)
}

func TestContractsBadFlags(t *testing.T) {
	cases := map[string]struct {
		args []string
		want string
	}{
		"format":        {[]string{"--format", "xml"}, `--format "xml": want jsonschema, asyncapi or all`},
		"broker":        {[]string{"--broker", "nats"}, `--broker "nats": want rabbitmq or kafka`},
		"event":         {[]string{"--format", "jsonschema", "--event", "payment.captured"}, `--event "payment.captured": not an order event`},
		"event alone":   {[]string{"--event", "order.created"}, "give --format jsonschema with it"},
		"argument":      {[]string{"extra"}, `unexpected argument "extra"`},
		"empty version": {[]string{"--version", ""}, "Service.Version is empty"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := contracts(t, c.args...)
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
		})
	}
	t.Run("unknown command", func(t *testing.T) {
		err := run(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), io.Discard, []string{"contract"})
		require.ErrorContains(t, err, `unknown command "contract": want one of spool, outbox, dlq, contracts`)
	})
}
