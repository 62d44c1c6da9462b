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

// TestLoadConfigBadValues: every bad value is an error naming its
// variable and the value, and a password planted anywhere (its own
// variable, or in a URL given where an address belongs) never appears.
func TestLoadConfigBadValues(t *testing.T) {
	const pw = "s3cr3t-PW"
	tests := []struct {
		name, variable, value string
		shown                 string // how the value appears in the error; default: itself
	}{
		{"port not a number", "MESSAGE_BROKER_PORT", "abc", ""},
		{"port out of range", "MESSAGE_BROKER_PORT", "70000", ""},
		{"port zero", "MESSAGE_BROKER_PORT", "0", ""},
		{"port negative", "MESSAGE_BROKER_PORT", "-1", ""},
		{"port float", "MESSAGE_BROKER_PORT", "5672.5", ""},
		{"unknown type", "MESSAGE_BROKER_TYPE", "redis", ""},
		{"enabled maybe", "MESSAGE_BROKER_ENABLED", "maybe", ""},
		{"enabled yes", "MESSAGE_BROKER_ENABLED", "yes", ""},
		{"tls yes-ish", "MESSAGE_BROKER_TLS", "sure", ""},
		{"host with a space", "MESSAGE_BROKER_HOST", "bad host", ""},
		{"host a URL", "MESSAGE_BROKER_HOST", "http://rabbit-1", ""},
		{"host with a port", "MESSAGE_BROKER_HOST", "rabbit-1:5672", ""},
		{"host with a slash", "MESSAGE_BROKER_HOST", "rabbit/1", ""},
		{"host a URL with credentials", "MESSAGE_BROKER_HOST", "amqp://guest:" + pw + "@rabbit-1", "<redacted>@rabbit-1"},
		{"host with credentials", "MESSAGE_BROKER_HOST", "guest:" + pw + "@rabbit-1", "<redacted>@rabbit-1"},
		{"address without port", "MESSAGE_BROKER_ADDRESSES", "r1", ""},
		{"address bad port", "MESSAGE_BROKER_ADDRESSES", "r1:x", ""},
		{"address port out of range", "MESSAGE_BROKER_ADDRESSES", "r1:99999", ""},
		{"address empty host", "MESSAGE_BROKER_ADDRESSES", ":5672", ""},
		{"address a URL", "MESSAGE_BROKER_ADDRESSES", "amqp://rabbit-1:5672", ""},
		{"address a URL with credentials", "MESSAGE_BROKER_ADDRESSES", "amqp://guest:" + pw + "@rabbit-1:5672", "<redacted>@rabbit-1:5672"},
		{"address with credentials", "MESSAGE_BROKER_ADDRESSES", "guest:" + pw + "@rabbit-1:5672", "<redacted>@rabbit-1:5672"},
		{"address list of commas", "MESSAGE_BROKER_ADDRESSES", ",,,", ""},
		{"address with a space", "MESSAGE_BROKER_ADDRESSES", "rab bit:5672", ""},
		{"kafka topic with a space", "MESSAGE_BROKER_TOPIC", "orders events", ""},
		{"kafka topic with a slash", "MESSAGE_BROKER_TOPIC", "orders/events", ""},
		{"kafka topic too long", "MESSAGE_BROKER_TOPIC", strings.Repeat("t", 250), strings.Repeat("t", 100) + "..."},
		{"exchange too long", "MESSAGE_BROKER_EXCHANGE", strings.Repeat("x", 256), strings.Repeat("x", 100) + "..."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vars := map[string]string{tt.variable: tt.value, "MESSAGE_BROKER_PASSWORD": pw}
			if strings.Contains(tt.variable, "TOPIC") {
				vars["MESSAGE_BROKER_TYPE"] = "kafka"
			}
			_, err := broker.LoadConfig(env(vars))
			require.Error(t, err)
			assert.ErrorIs(t, err, broker.ErrInvalid)
			shown := tt.shown
			if shown == "" {
				shown = tt.value
			}
			assert.Contains(t, err.Error(), tt.variable+"="+fmt.Sprintf("%q", shown), "names the variable and the value")
			assert.NotContains(t, err.Error(), pw)
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
	assert.ErrorContains(t, err, "config Host (MESSAGE_BROKER_HOST)")
	assert.ErrorContains(t, err, "config Exchange (MESSAGE_BROKER_EXCHANGE)")
}

func TestPasswordNeverPrinted(t *testing.T) {
	c := broker.DefaultConfig()
	c.Password = broker.NewSecret("hunter2")
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "cfg", c, "pw", c.Password)
	js, err := json.Marshal(c)
	require.NoError(t, err)
	wrapped := struct{ C broker.Config }{c}
	type holder struct{ cfg broker.Config } // unexported: fmt cannot call Format, it reflects
	hidden := holder{c}
	type pwHolder struct{ pw broker.Secret }
	for _, s := range []string{
		fmt.Sprintf("%+v", hidden), fmt.Sprintf("%#v", hidden), fmt.Sprintf("%v", hidden), fmt.Sprintf("%+v", &hidden),
		fmt.Sprintf("%+v", pwHolder{c.Password}), fmt.Sprintf("%#v", pwHolder{c.Password}),
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
