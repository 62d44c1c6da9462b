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
	// ClientID: MESSAGE_BROKER_CLIENT_ID, the Kafka client id (and the
	// consumer group of domainevents.OpenSubscriber) and the RabbitMQ
	// connection name, default "orders-service".
	ClientID string
	// Queue: MESSAGE_BROKER_QUEUE, the RabbitMQ queue that domainevents.Open
	// declares and binds to the exchange for every routing key, so that
	// events have somewhere to go, and that domainevents.OpenSubscriber
	// consumes. Default empty: Open declares none (events no queue is bound
	// for are dead-lettered as unroutable), OpenSubscriber requires it.
	Queue string
	// SpoolDir: MESSAGE_BROKER_SPOOL_DIR, the directory of the local
	// dead-letter spool domainevents.Open keeps for events the broker
	// cannot take. Default empty: a directory named after ClientID in the
	// system's temporary directory, which may not survive a reboot: set a
	// persistent one in production.
	SpoolDir string
	// CloudEventsSource: MESSAGE_BROKER_CLOUDEVENTS_SOURCE, the CloudEvents
	// source attribute (a URI-reference naming the producing service, e.g.
	// "/orders-service"). Default empty: messages carry only this
	// library's headers. When set, the adapters' publishers also write the
	// CloudEvents attributes as headers (binary content mode; the body is
	// unchanged), see docs/cloudevents.md. Subscribers read CloudEvents
	// headers whatever it says.
	CloudEventsSource string
}

// DefaultConfig returns the defaults: disabled, rabbitmq on
// localhost:5672, guest/guest, vhost "/", destination "orders.events".
func DefaultConfig() Config {
	return Config{
		Type:     RabbitMQ,
		Host:     "localhost",
		Port:     DefaultRabbitMQPort,
		Username: "guest",
		Password: NewSecret("guest"),
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
	EnvQueue     = "MESSAGE_BROKER_QUEUE"
	EnvSpoolDir  = "MESSAGE_BROKER_SPOOL_DIR"
	// EnvCloudEventsSource sets [Config.CloudEventsSource].
	EnvCloudEventsSource = "MESSAGE_BROKER_CLOUDEVENTS_SOURCE"
)

// ConfigFromEnv reads the MESSAGE_BROKER_* variables over [DefaultConfig].
// See [LoadConfig].
func ConfigFromEnv() (Config, error) { return LoadConfig(os.LookupEnv) }

// LoadConfig reads the MESSAGE_BROKER_* variables through lookup (os.LookupEnv
// in production, a map in tests) over [DefaultConfig], then validates. Every
// bad value is reported, joined, each error naming the variable and the
// value; all match [ErrInvalid]. A value that may hold credentials (anything
// before an "@") and the password are never repeated.
func LoadConfig(lookup func(string) (string, bool)) (Config, error) {
	c := DefaultConfig()
	var errs []error
	bad := func(name, value, problem string) {
		errs = append(errs, &configError{fmt.Sprintf("%s=%q: %s", name, shownValue(value), problem)})
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
	}
	if c.Type == Kafka {
		c.Port = DefaultKafkaPort
	}
	strVar(EnvHost, &c.Host)
	if v, ok := get(EnvPort); ok {
		p, err := strconv.Atoi(v)
		if err != nil {
			bad(EnvPort, v, "want a port number from 1 to 65535")
		} else {
			c.Port = p
		}
	}
	strVar(EnvUsername, &c.Username)
	if v, ok := lookup(EnvPassword); ok { // a password may have spaces
		c.Password = NewSecret(v)
	}
	if v, ok := get(EnvAddresses); ok {
		for _, a := range strings.Split(v, ",") {
			if a = strings.TrimSpace(a); a != "" {
				c.Addresses = append(c.Addresses, a)
			}
		}
		if len(c.Addresses) == 0 {
			bad(EnvAddresses, v, "no address in the list: want host:port[,host:port...]")
		}
	}
	strVar(EnvVHost, &c.VHost)
	strVar(EnvExchange, &c.Exchange)
	strVar(EnvTopic, &c.Topic)
	boolVar(EnvTLS, &c.TLS)
	strVar(EnvClientID, &c.ClientID)
	strVar(EnvQueue, &c.Queue)
	strVar(EnvSpoolDir, &c.SpoolDir)
	strVar(EnvCloudEventsSource, &c.CloudEventsSource)

	for _, p := range c.problems() {
		bad(p.env, p.value, p.problem)
	}
	return c, errors.Join(errs...)
}

// Validate checks the fields, naming the field, its variable and the value
// in each error (joined, all matching [ErrInvalid]).
func (c Config) Validate() error {
	var errs []error
	for _, p := range c.problems() {
		errs = append(errs, &configError{fmt.Sprintf("config %s (%s) %q: %s", p.field, p.env, shownValue(p.value), p.problem)})
	}
	return errors.Join(errs...)
}

// problem is one bad field, with the variable that sets it.
type problem struct{ field, env, value, problem string }

// problems is the one list of checks, shared by [LoadConfig] and
// [Config.Validate].
func (c Config) problems() []problem {
	var ps []problem
	bad := func(field, env, value, msg string) { ps = append(ps, problem{field, env, value, msg}) }
	if c.Type != RabbitMQ && c.Type != Kafka {
		bad("Type", EnvType, string(c.Type), "want rabbitmq or kafka")
	}
	if len(c.Addresses) == 0 {
		if err := checkHost(c.Host); err != nil {
			bad("Host", EnvHost, c.Host, err.Error())
		}
		if c.Port < 1 || c.Port > 65535 {
			bad("Port", EnvPort, strconv.Itoa(c.Port), "want a port number from 1 to 65535")
		}
	}
	for _, a := range c.Addresses {
		if err := checkHostPort(a); err != nil {
			bad("Addresses", EnvAddresses, a, err.Error())
		}
	}
	if c.VHost == "" {
		bad("VHost", EnvVHost, "", "required (the default vhost is \"/\")")
	}
	if c.CloudEventsSource != "" {
		if err := CheckCloudEventsSource(c.CloudEventsSource); err != nil {
			bad("CloudEventsSource", EnvCloudEventsSource, c.CloudEventsSource, "want a URI-reference, e.g. /orders-service")
		}
	}
	switch c.Type {
	case RabbitMQ:
		if c.Exchange == "" {
			bad("Exchange", EnvExchange, "", "required for rabbitmq")
		} else if len(c.Exchange) > 255 {
			bad("Exchange", EnvExchange, c.Exchange, "longer than RabbitMQ's 255 bytes")
		}
		if len(c.Queue) > 255 {
			bad("Queue", EnvQueue, c.Queue, "longer than RabbitMQ's 255 bytes")
		}
	case Kafka:
		if err := checkTopic(c.Topic); err != nil {
			bad("Topic", EnvTopic, c.Topic, err.Error())
		}
	}
	return ps
}

// checkHost accepts an IP address or a DNS name.
func checkHost(h string) error {
	switch {
	case h == "":
		return errors.New("required: want a host name or IP address")
	case strings.Contains(h, "://"):
		return errors.New("want a host name or IP address, not a URL")
	case net.ParseIP(strings.Trim(h, "[]")) != nil:
		return nil
	case strings.Contains(h, ":"):
		return errors.New("want a host name or IP address without a port (the port has its own variable)")
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_') {
			return fmt.Errorf("want a host name or IP address (%q is not allowed in one)", r)
		}
	}
	return nil
}

func checkHostPort(a string) error {
	if strings.Contains(a, "://") {
		return errors.New("want host:port, not a URL (credentials go in MESSAGE_BROKER_USERNAME and MESSAGE_BROKER_PASSWORD)")
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return errors.New("want host:port")
	}
	if err := checkHost(host); err != nil {
		return err
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return errors.New("port is not a number from 1 to 65535")
	}
	return nil
}

// checkTopic applies Kafka's rules for topic names.
func checkTopic(t string) error {
	switch {
	case t == "":
		return errors.New("required for kafka")
	case len(t) > 249:
		return errors.New("longer than Kafka's 249 characters")
	case t == "." || t == "..":
		return errors.New("not a valid Kafka topic name")
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_') {
			return fmt.Errorf("Kafka topic names allow only letters, digits, '.', '_' and '-', not %q", r)
		}
	}
	return nil
}

// shownValue is how an error repeats a value: never what precedes an "@"
// (user:password in a URL or address), and never more than 100 bytes.
func shownValue(v string) string {
	if i := strings.LastIndex(v, "@"); i >= 0 {
		v = "<redacted>@" + v[i+1:]
	}
	if len(v) > 100 {
		v = v[:100] + "..."
	}
	return v
}

// Addrs returns the broker addresses as host:port: Addresses when set,
// otherwise Host:Port.
func (c Config) Addrs() []string {
	if len(c.Addresses) > 0 {
		return append([]string(nil), c.Addresses...)
	}
	return []string{net.JoinHostPort(c.Host, strconv.Itoa(c.Port))}
}

// String describes c without the password (nor anything before an "@" in
// an address).
func (c Config) String() string {
	addrs := c.Addrs()
	for i, a := range addrs {
		addrs[i] = shownValue(a)
	}
	return fmt.Sprintf("broker.Config{Enabled:%t Type:%s Addrs:%v Username:%s Password:%s VHost:%s Exchange:%s Topic:%s TLS:%t ClientID:%s Queue:%s SpoolDir:%s CloudEventsSource:%s}",
		c.Enabled, c.Type, addrs, c.Username, c.Password.String(), c.VHost, c.Exchange, c.Topic, c.TLS, c.ClientID, c.Queue, c.SpoolDir, shownValue(c.CloudEventsSource))
}

// GoString is String, for %#v.
func (c Config) GoString() string { return c.String() }

// Format prints String for every verb, so no verb can reach the password.
func (c Config) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(c.String())) }

// configError is a bad configuration value; it matches ErrInvalid.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

func (e *configError) Is(target error) bool { return target == ErrInvalid }
