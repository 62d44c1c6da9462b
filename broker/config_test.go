package broker_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/domainevents/domainevents/broker"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestLoadConfigDefaults(t *testing.T) {
	c, err := broker.LoadConfig(env(nil))
	require.NoError(t, err)
	assert.False(t, c.Enabled)
	assert.Equal(t, broker.RabbitMQ, c.Type)
	assert.Equal(t, "localhost", c.Host)
	assert.Equal(t, 5672, c.Port)
	assert.Equal(t, "guest", c.Username)
	assert.Equal(t, "guest", c.Password.Reveal())
	assert.Equal(t, "/", c.VHost)
	assert.Equal(t, "orders.events", c.Exchange)
	assert.Equal(t, "orders.events", c.Topic)
	assert.Equal(t, []string{"localhost:5672"}, c.Addrs())
}

func TestLoadConfigValues(t *testing.T) {
	c, err := broker.LoadConfig(env(map[string]string{
		"MESSAGE_BROKER_ENABLED":   "true",
		"MESSAGE_BROKER_TYPE":      "Kafka",
		"MESSAGE_BROKER_HOST":      "kafka-1",
		"MESSAGE_BROKER_USERNAME":  "svc",
		"MESSAGE_BROKER_PASSWORD":  " s3cret pass ",
		"MESSAGE_BROKER_TLS":       "1",
		"MESSAGE_BROKER_TOPIC":     "orders.v2",
		"MESSAGE_BROKER_CLIENT_ID": "orders-7",
	}))
	require.NoError(t, err)
	assert.True(t, c.Enabled)
	assert.Equal(t, broker.Kafka, c.Type)
	assert.Equal(t, 9092, c.Port, "kafka's default port when none is given")
	assert.Equal(t, " s3cret pass ", c.Password.Reveal())
	assert.True(t, c.TLS)
	assert.Equal(t, "orders.v2", c.Topic)
	assert.Equal(t, []string{"kafka-1:9092"}, c.Addrs())

	c, err = broker.LoadConfig(env(map[string]string{"MESSAGE_BROKER_ADDRESSES": "r1:5672, r2:5673,,[::1]:5674"}))
	require.NoError(t, err)
	assert.Equal(t, []string{"r1:5672", "r2:5673", "[::1]:5674"}, c.Addrs())
}

func TestLoadConfigBadValues(t *testing.T) {
	tests := []struct {
		name, variable, value string
	}{
		{"port not a number", "MESSAGE_BROKER_PORT", "abc"},
		{"port out of range", "MESSAGE_BROKER_PORT", "70000"},
		{"unknown type", "MESSAGE_BROKER_TYPE", "redis"},
		{"enabled maybe", "MESSAGE_BROKER_ENABLED", "maybe"},
		{"tls yes-ish", "MESSAGE_BROKER_TLS", "sure"},
		{"address without port", "MESSAGE_BROKER_ADDRESSES", "r1"},
		{"address bad port", "MESSAGE_BROKER_ADDRESSES", "r1:x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := broker.LoadConfig(env(map[string]string{tt.variable: tt.value, "MESSAGE_BROKER_PASSWORD": "hunter2"}))
			require.Error(t, err)
			assert.ErrorIs(t, err, broker.ErrInvalid)
			assert.Contains(t, err.Error(), tt.variable)
			assert.Contains(t, err.Error(), fmt.Sprintf("%q", tt.value))
			assert.NotContains(t, err.Error(), "hunter2")
		})
	}
	_, err := broker.LoadConfig(env(map[string]string{"MESSAGE_BROKER_PORT": "abc", "MESSAGE_BROKER_TYPE": "redis"}))
	assert.ErrorContains(t, err, "MESSAGE_BROKER_PORT")
	assert.ErrorContains(t, err, "MESSAGE_BROKER_TYPE", "every bad variable is reported")
}

func TestValidateNamesField(t *testing.T) {
	c := broker.DefaultConfig()
	c.Host = ""
	c.Exchange = ""
	err := c.Validate()
	assert.ErrorIs(t, err, broker.ErrInvalid)
	assert.ErrorContains(t, err, "Host")
	assert.ErrorContains(t, err, "Exchange")
}

func TestPasswordNeverPrinted(t *testing.T) {
	c := broker.DefaultConfig()
	c.Password = "hunter2"
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "cfg", c, "pw", c.Password)
	js, err := json.Marshal(c)
	require.NoError(t, err)
	wrapped := struct{ C broker.Config }{c}
	for _, s := range []string{
		fmt.Sprint(c), fmt.Sprintf("%v", c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprintf("%s", c),
		fmt.Sprintf("%x", c.Password), fmt.Sprintf("%q", c.Password), fmt.Sprintf("%d", c.Password),
		fmt.Sprintf("%+v", wrapped), fmt.Sprintf("%#v", wrapped), fmt.Sprintf("%v", &c),
		string(js), logged.String(),
	} {
		assert.NotContains(t, s, "hunter2")
		assert.NotContains(t, s, fmt.Sprintf("%x", "hunter2"))
	}
	assert.Contains(t, c.String(), "[redacted]")
}
