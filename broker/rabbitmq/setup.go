package rabbitmq

import (
	"crypto/tls"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/domainevents/domainevents/broker"
)

// prepare fills cfg's RabbitMQ defaults, validates it and applies the
// connection defaults derived from it: what every constructor shares.
func prepare(cfg broker.Config, o *connOptions) (broker.Config, error) {
	if cfg.Type == "" {
		cfg.Type = broker.RabbitMQ
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	if o.connName == "" {
		o.connName = cfg.ClientID
	}
	if cfg.TLS && o.tls == nil {
		o.tls = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if o.tls != nil {
		// amqp091 applies a TLS config to amqps:// URLs only: an amqp://
		// one would connect in plain text although TLS was asked for.
		for i, u := range o.urls {
			if uri, _ := amqp.ParseURI(u); uri.Scheme != "amqps" {
				return cfg, optionsError(fmt.Errorf("WithURLs: URL #%d is amqp://, which WithTLS (or MESSAGE_BROKER_TLS=true) would not apply to: use amqps://", i+1))
			}
		}
	}
	return cfg, nil
}

// publisherSetup applies opts over the publisher defaults and prepares cfg:
// what New and NewDeadLetterSink share.
func publisherSetup(cfg broker.Config, opts []PublisherOption) (broker.Config, publisherOptions, error) {
	o := defaultPublisherOptions()
	o.ceSource = cfg.CloudEventsSource // validated by prepare with cfg
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt.applyPublisher(&o); err != nil {
			return cfg, o, optionsError(err)
		}
	}
	cfg, err := prepare(cfg, &o.conn)
	return cfg, o, err
}

// optionsError is a bad option: it matches broker.ErrInvalid.
func optionsError(err error) error {
	return &broker.Error{Op: opOptions, Kind: broker.ErrInvalid, Err: err}
}
