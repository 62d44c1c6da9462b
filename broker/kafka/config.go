package kafka

import (
	"crypto/tls"
	"fmt"
	"time"

	"github.com/IBM/sarama"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/internal/backoff"
)

// checkConfig fills cfg's Kafka defaults (type, topic) and validates it.
func checkConfig(cfg broker.Config) (broker.Config, error) {
	if cfg.Type == "" {
		cfg.Type = broker.Kafka
	}
	if cfg.Topic == "" {
		cfg.Topic = broker.DefaultDestination
	}
	return cfg, cfg.Validate()
}

func optionsErr(err error) error {
	return &broker.Error{Op: opOptions, Kind: broker.ErrInvalid, Err: err}
}

func configErr(err error) error {
	return &broker.Error{Op: opConfig, Kind: broker.ErrInvalid, Err: err}
}

// publisherSetup validates cfg, applies opts and builds the producer's
// sarama configuration.
func publisherSetup(cfg broker.Config, opts []PublisherOption) (broker.Config, publisherOptions, *sarama.Config, error) {
	o := defaultPublisher()
	o.ceSource = cfg.CloudEventsSource // validated by setup with cfg
	cfg, sc, err := setup(cfg, &o.connOptions, func() error {
		for _, opt := range opts {
			if opt != nil {
				if err := opt.applyPublisher(&o); err != nil {
					return err
				}
			}
		}
		return nil
	}, func(sc *sarama.Config) {
		sc.Producer.Partitioner = o.partitioner
	})
	return cfg, o, sc, err
}

// subscriberSetup validates cfg, applies opts and builds the consumer
// group's sarama configuration.
func subscriberSetup(cfg broker.Config, opts []SubscriberOption) (broker.Config, subscriberOptions, *sarama.Config, error) {
	o := defaultSubscriber()
	cfg, sc, err := setup(cfg, &o.connOptions, func() error {
		for _, opt := range opts {
			if opt != nil {
				if err := opt.applySubscriber(&o); err != nil {
					return err
				}
			}
		}
		return nil
	}, func(sc *sarama.Config) {
		sc.Consumer.Offsets.Initial = sarama.OffsetOldest
		if o.startNewest {
			sc.Consumer.Offsets.Initial = sarama.OffsetNewest
		}
		sc.Consumer.Offsets.AutoCommit.Enable = true
		sc.Consumer.Return.Errors = true
	})
	return cfg, o, sc, err
}

// producerConfig is the sarama configuration of a producer with the
// options o, for a cfg already checked (the subscriber's dead-letter
// producer, which shares the subscriber's connection options).
func producerConfig(cfg broker.Config, o publisherOptions) (*sarama.Config, error) {
	sc, err := saramaConfig(cfg, o.connOptions)
	if err != nil {
		return nil, configErr(err)
	}
	sc.Producer.Partitioner = o.partitioner
	if err := sc.Validate(); err != nil {
		return nil, configErr(fmt.Errorf("sarama config: %w", err))
	}
	return sc, nil
}

// setup is what both roles share: cfg checked, MESSAGE_BROKER_TLS as the
// TLS default, the options applied (apply), the sarama configuration built,
// adjusted for the role (role) and validated.
func setup(cfg broker.Config, conn *connOptions, apply func() error, role func(*sarama.Config)) (broker.Config, *sarama.Config, error) {
	cfg, err := checkConfig(cfg)
	if err != nil {
		return cfg, nil, err
	}
	if cfg.TLS {
		conn.tls = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if err := apply(); err != nil {
		return cfg, nil, optionsErr(err)
	}
	sc, err := saramaConfig(cfg, *conn)
	if err != nil {
		return cfg, nil, configErr(err)
	}
	role(sc)
	if err := sc.Validate(); err != nil {
		return cfg, nil, configErr(fmt.Errorf("sarama config: %w", err))
	}
	return cfg, sc, nil
}

// saramaConfig builds the client configuration both roles start from: ours
// by default, or a copy of the caller's checked for durability.
func saramaConfig(cfg broker.Config, o connOptions) (*sarama.Config, error) {
	var c *sarama.Config
	if o.sarama != nil {
		cp := *o.sarama
		c = &cp
		if err := checkDurable(c); err != nil {
			return nil, err
		}
	} else {
		c = sarama.NewConfig()
		c.Version = sarama.DefaultVersion
		c.Producer.RequiredAcks = sarama.WaitForAll
		c.Producer.Idempotent = true
		c.Net.MaxOpenRequests = 1
		c.Producer.Retry.Max = 10
		c.Producer.Retry.BackoffFunc = func(retries, _ int) time.Duration {
			return backoff.Policy{Initial: 100 * time.Millisecond, Max: 2 * time.Second}.Delay(retries)
		}
		c.Net.DialTimeout = 10 * time.Second
	}
	c.Producer.Return.Successes = true
	c.Producer.Return.Errors = true
	if cfg.ClientID != "" && (o.sarama == nil || c.ClientID == sarama.NewConfig().ClientID) {
		c.ClientID = cfg.ClientID
	}
	if o.tls != nil {
		c.Net.TLS.Enable = true
		c.Net.TLS.Config = o.tls
	}
	if o.sasl != "" {
		c.Net.SASL.Enable = true
		c.Net.SASL.Mechanism = sarama.SASLMechanism(o.sasl)
		c.Net.SASL.User = cfg.Username
		c.Net.SASL.Password = cfg.Password.Reveal()
		c.Net.SASL.Handshake = true
		switch o.sasl {
		case SASLSCRAMSHA256:
			c.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return scramSHA256() }
		case SASLSCRAMSHA512:
			c.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return scramSHA512() }
		}
	}
	return c, nil
}

// checkDurable refuses a caller's configuration that would break the
// promise that a nil Publish means an acks=all write.
func checkDurable(c *sarama.Config) error {
	if c.Producer.RequiredAcks != sarama.WaitForAll {
		return fmt.Errorf("Producer.RequiredAcks is %d: set it to sarama.WaitForAll (-1); Publish promises acks=all durability", c.Producer.RequiredAcks)
	}
	if c.Producer.Idempotent {
		if c.Net.MaxOpenRequests != 1 {
			return fmt.Errorf("Net.MaxOpenRequests is %d: the idempotent producer needs 1", c.Net.MaxOpenRequests)
		}
		if c.Producer.Retry.Max < 1 {
			return fmt.Errorf("Producer.Retry.Max is %d: the idempotent producer needs at least 1", c.Producer.Retry.Max)
		}
		if !c.Version.IsAtLeast(sarama.V0_11_0_0) {
			return fmt.Errorf("Version is %s: the idempotent producer needs at least sarama.V0_11_0_0", c.Version)
		}
	}
	return nil
}
