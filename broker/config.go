package broker

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// Type names a broker implementation.
type Type string

// The broker types MESSAGE_BROKER_TYPE accepts.
const (
	RabbitMQ Type = "rabbitmq"
	Kafka    Type = "kafka"
)

// Default ports, used when MESSAGE_BROKER_PORT is not set.
const (
	DefaultRabbitMQPort = 5672
	DefaultKafkaPort    = 9092
)

// DefaultDestination is the default RabbitMQ exchange and Kafka topic.
const DefaultDestination = "orders.events"

// Secret is a string that never prints: fmt verbs, JSON and slog all show
// "[redacted]" (or "" when it is empty). Call Reveal to use it.
type Secret string

const redacted = "[redacted]"

func (s Secret) shown() string {
	if s == "" {
		return ""
	}
	return redacted
}

// Reveal returns the secret itself. Only adapters should call it.
func (s Secret) Reveal() string { return string(s) }

// String returns "[redacted]".
func (s Secret) String() string { return s.shown() }

// GoString returns "[redacted]" quoted, for %#v.
func (s Secret) GoString() string { return strconv.Quote(s.shown()) }

// Format prints "[redacted]" whatever the verb.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(s.shown())) }

// MarshalText returns "[redacted]", so JSON and text encoders never leak it.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.shown()), nil }

// Config is the connection configuration shared by the adapters. Load it
// from the environment with [ConfigFromEnv] or start from [DefaultConfig].
// Printing a Config (%v, %+v, %#v, JSON, slog) never shows the password.
type Config struct {
	// Enabled: MESSAGE_BROKER_ENABLED, default false. When false,
	// applications use the noop broker.
	Enabled bool
	// Type: MESSAGE_BROKER_TYPE, "rabbitmq" (default) or "kafka".
	Type Type
	// Host: MESSAGE_BROKER_HOST, default "localhost".
	Host string
	// Port: MESSAGE_BROKER_PORT, default 5672 for rabbitmq, 9092 for kafka.
	Port int
	// Username: MESSAGE_BROKER_USERNAME, default "guest".
	Username string
	// Password: MESSAGE_BROKER_PASSWORD, default "guest".
	Password Secret
	// Addresses: MESSAGE_BROKER_ADDRESSES, a comma-separated list of
	// host:port for a cluster (RabbitMQ nodes tried in turn, Kafka bootstrap
	// brokers). When set it replaces Host and Port. Default empty.
	Addresses []string
	// VHost: MESSAGE_BROKER_VHOST, the RabbitMQ virtual host, default "/".
	VHost string
	// Exchange: MESSAGE_BROKER_EXCHANGE, the RabbitMQ topic exchange,
	// default "orders.events".
	Exchange string
	// Topic: MESSAGE_BROKER_TOPIC, the Kafka topic for all events, default
	// "orders.events".
	Topic string
	// TLS: MESSAGE_BROKER_TLS, connect with TLS (amqps / Kafka TLS), default
	// false.
	TLS bool
	// ClientID: MESSAGE_BROKER_CLIENT_ID, the Kafka client id and the
	// RabbitMQ connection name, default "orders-service".
	ClientID string
}

// DefaultConfig returns the seed's defaults: disabled, rabbitmq on
// localhost:5672, guest/guest, vhost "/", destination "orders.events".
func DefaultConfig() Config {
	return Config{
		Type:     RabbitMQ,
		Host:     "localhost",
		Port:     DefaultRabbitMQPort,
		Username: "guest",
		Password: "guest",
		VHost:    "/",
		Exchange: DefaultDestination,
		Topic:    DefaultDestination,
		ClientID: "orders-service",
	}
}

// Environment variable names.
const (
	EnvEnabled   = "MESSAGE_BROKER_ENABLED"
	EnvType      = "MESSAGE_BROKER_TYPE"
	EnvHost      = "MESSAGE_BROKER_HOST"
	EnvPort      = "MESSAGE_BROKER_PORT"
	EnvUsername  = "MESSAGE_BROKER_USERNAME"
	EnvPassword  = "MESSAGE_BROKER_PASSWORD"
	EnvAddresses = "MESSAGE_BROKER_ADDRESSES"
	EnvVHost     = "MESSAGE_BROKER_VHOST"
	EnvExchange  = "MESSAGE_BROKER_EXCHANGE"
	EnvTopic     = "MESSAGE_BROKER_TOPIC"
	EnvTLS       = "MESSAGE_BROKER_TLS"
	EnvClientID  = "MESSAGE_BROKER_CLIENT_ID"
)

// ConfigFromEnv reads the MESSAGE_BROKER_* variables over [DefaultConfig].
// See [LoadConfig].
func ConfigFromEnv() (Config, error) { return LoadConfig(os.LookupEnv) }

// LoadConfig reads the MESSAGE_BROKER_* variables through lookup (os.LookupEnv
// in production, a map in tests) over [DefaultConfig], then validates. Every
// bad value is reported, each error naming the variable and the value (never
// the password's value), joined; all match [ErrInvalid].
func LoadConfig(lookup func(string) (string, bool)) (Config, error) {
	c := DefaultConfig()
	var errs []error
	bad := func(name, value, problem string) {
		errs = append(errs, &configError{fmt.Sprintf("%s=%q: %s", name, value, problem)})
	}
	get := func(name string) (string, bool) {
		v, ok := lookup(name)
		v = strings.TrimSpace(v)
		return v, ok && v != ""
	}
	boolVar := func(name string, dst *bool) {
		if v, ok := get(name); ok {
			b, err := strconv.ParseBool(v)
			if err != nil {
				bad(name, v, "want true or false")
				return
			}
			*dst = b
		}
	}
	strVar := func(name string, dst *string) {
		if v, ok := get(name); ok {
			*dst = v
		}
	}

	boolVar(EnvEnabled, &c.Enabled)
	if v, ok := get(EnvType); ok {
		c.Type = Type(strings.ToLower(v))
		if c.Type != RabbitMQ && c.Type != Kafka {
			bad(EnvType, v, "want rabbitmq or kafka")
		}
	}
	if c.Type == Kafka {
		c.Port = DefaultKafkaPort
	}
	strVar(EnvHost, &c.Host)
	if v, ok := get(EnvPort); ok {
		p, err := strconv.Atoi(v)
		if err != nil || p < 1 || p > 65535 {
			bad(EnvPort, v, "want a port number from 1 to 65535")
		} else {
			c.Port = p
		}
	}
	strVar(EnvUsername, &c.Username)
	if v, ok := lookup(EnvPassword); ok { // a password may have spaces
		c.Password = Secret(v)
	}
	if v, ok := get(EnvAddresses); ok {
		for _, a := range strings.Split(v, ",") {
			a = strings.TrimSpace(a)
			if a == "" {
				continue
			}
			if err := checkHostPort(a); err != nil {
				bad(EnvAddresses, a, err.Error())
				continue
			}
			c.Addresses = append(c.Addresses, a)
		}
	}
	strVar(EnvVHost, &c.VHost)
	strVar(EnvExchange, &c.Exchange)
	strVar(EnvTopic, &c.Topic)
	boolVar(EnvTLS, &c.TLS)
	strVar(EnvClientID, &c.ClientID)

	if len(errs) == 0 {
		if err := c.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return c, errors.Join(errs...)
}

func checkHostPort(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return errors.New("want host:port")
	}
	if host == "" {
		return errors.New("host is empty")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return errors.New("port is not a number from 1 to 65535")
	}
	return nil
}

// Validate checks the fields, naming the field and value in each error
// (joined, all matching [ErrInvalid]).
func (c Config) Validate() error {
	var errs []error
	bad := func(field, value, problem string) {
		errs = append(errs, &configError{fmt.Sprintf("config %s %q: %s", field, value, problem)})
	}
	if c.Type != RabbitMQ && c.Type != Kafka {
		bad("Type", string(c.Type), "want rabbitmq or kafka")
	}
	if len(c.Addresses) == 0 {
		if c.Host == "" || strings.ContainsAny(c.Host, " /") {
			bad("Host", c.Host, "want a host name or IP address")
		}
		if c.Port < 1 || c.Port > 65535 {
			bad("Port", strconv.Itoa(c.Port), "want a port number from 1 to 65535")
		}
	}
	for _, a := range c.Addresses {
		if err := checkHostPort(a); err != nil {
			bad("Addresses", a, err.Error())
		}
	}
	switch c.Type {
	case RabbitMQ:
		if c.Exchange == "" {
			bad("Exchange", "", "required for rabbitmq")
		}
	case Kafka:
		if c.Topic == "" {
			bad("Topic", "", "required for kafka")
		}
	}
	return errors.Join(errs...)
}

// Addrs returns the broker addresses as host:port: Addresses when set,
// otherwise Host:Port.
func (c Config) Addrs() []string {
	if len(c.Addresses) > 0 {
		return append([]string(nil), c.Addresses...)
	}
	return []string{net.JoinHostPort(c.Host, strconv.Itoa(c.Port))}
}

// String describes c without the password.
func (c Config) String() string {
	return fmt.Sprintf("broker.Config{Enabled:%t Type:%s Addrs:%v Username:%s Password:%s VHost:%s Exchange:%s Topic:%s TLS:%t ClientID:%s}",
		c.Enabled, c.Type, c.Addrs(), c.Username, c.Password.shown(), c.VHost, c.Exchange, c.Topic, c.TLS, c.ClientID)
}

// GoString is String, for %#v.
func (c Config) GoString() string { return c.String() }

// Format prints String for every verb, so no verb can reach the password.
func (c Config) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(c.String())) }

// configError is a bad configuration value; it matches ErrInvalid.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

func (e *configError) Is(target error) bool { return target == ErrInvalid }
