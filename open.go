package domainevents

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/domainevents/domainevents/bridge"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/deadletter"
	"github.com/domainevents/domainevents/broker/kafka"
	"github.com/domainevents/domainevents/broker/noop"
	"github.com/domainevents/domainevents/broker/rabbitmq"
	"github.com/domainevents/domainevents/broker/retry"
	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
)

// Publisher is what [Open] returns: the adapter cfg.Type names, behind the
// retry layer, with the local spool and the broker's dead-letter queue as
// its dead-letter sinks, a forwarder for typed events, and automatic
// replay of the spool once the broker is back. It is a broker.Broker and a
// broker.HealthChecker, safe for concurrent use.
type Publisher struct {
	cfg     broker.Config
	log     *slog.Logger
	adapter broker.Broker                          // rabbitmq, kafka, or the disabled broker
	dlq     *broker.BrokerSink                     // nil when disabled
	spool   *deadletter.Spool                      // nil when disabled
	retry   *retry.Broker                          // nil when disabled
	entry   broker.Broker                          // what Publish goes through: retry, or the disabled broker
	fwd     *bridge.Forwarder                      //
	replay  sync.Mutex                             // one replay at a time
	stop    context.CancelFunc                     // stops the replay loop
	loop    sync.WaitGroup                         //
	closeMu sync.Mutex                             //
	closed  bool                                   //
	health  broker.HealthChecker                   // the adapter's, if it has one
	where   string                                 // where events go, for logs
	hook    func(context.Context, *broker.Message) // WithMessageHook, or nil
}

// Open returns a Publisher for cfg (usually broker.ConfigFromEnv()): one
// call instead of the wiring every service would otherwise copy. With
// cfg.Enabled false it publishes to the noop broker (or
// [WithDisabledBroker]); otherwise:
//
//   - the adapter of cfg.Type (rabbitmq or kafka), connecting in the
//     background (the service starts while the broker is down; see
//     [WithWaitForConnection]); on RabbitMQ, cfg.Queue is declared and bound
//     to the exchange for every routing key;
//   - the retry layer ([WithRetry]), whose dead letters go to the broker's
//     own dead-letter queue or topic when the broker refused the message,
//     and to the local spool in cfg.SpoolDir when it could not be reached;
//   - a replay of the spool through the adapter whenever it holds events
//     and the broker is reachable ([WithReplayInterval]);
//   - a forwarder for typed events ([Publisher.Forward], [Publisher.Attach]).
//
// ctx bounds Open itself (and the first connection with
// WithWaitForConnection). Wrong credentials or a virtual host the user may
// not open do not fail Open (without WithWaitForConnection): the adapter
// keeps trying, since an operator may fix the user, logs it at Error at
// most every 30s, and [Publisher.Health] returns an error matching
// broker.ErrUnauthorized that says so; wire Health to the readiness
// probe. A bad cfg or option is an error matching
// broker.ErrInvalid naming what is wrong; a spool directory another
// process owns is an error matching deadletter.ErrLocked. Close the
// Publisher when the service stops: it closes every part in order.
func Open(ctx context.Context, cfg broker.Config, opts ...PublisherOption) (*Publisher, error) {
	c := publisherConfig{common: common{logger: slog.Default()}, replayInterval: 5 * time.Second}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o.applyPublisher(&c); err != nil {
			return nil, invalid(err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Publisher{cfg: cfg, log: c.logger, hook: c.hook}
	fwdOpts := []bridge.Option{bridge.WithLogger(c.logger)}
	if c.hook != nil {
		fwdOpts = append(fwdOpts, bridge.WithMessageHook(c.hook))
	}
	if c.async {
		fwdOpts = append(fwdOpts, bridge.WithAsync(c.asyncWorkers, c.asyncQueue))
	}
	if !cfg.Enabled {
		p.adapter = c.noop
		if p.adapter == nil {
			p.adapter = noop.New()
		}
		p.health, _ = p.adapter.(broker.HealthChecker)
		for _, mw := range c.middleware {
			p.adapter = mw(p.adapter)
		}
		p.entry, p.where = p.adapter, "nowhere (MESSAGE_BROKER_ENABLED is false)"
	} else if err := p.openEnabled(ctx, c); err != nil {
		return nil, err
	} else if c.async {
		fwdOpts = append(fwdOpts, bridge.WithDeadLetter(p.spool))
	}
	fwd, err := bridge.NewForwarder(p.entry, fwdOpts...)
	if err != nil {
		_ = p.closeParts(ctx)
		return nil, err
	}
	p.fwd = fwd
	if p.spool != nil && c.replayInterval > 0 {
		lctx, stop := context.WithCancel(context.Background())
		p.stop = stop
		p.loop.Go(func() { p.replayLoop(lctx, c.replayInterval) })
	}
	p.log.Info("domainevents: publisher ready", "config", cfg, "destination", p.where)
	return p, nil
}

// openEnabled opens the spool, the adapter, the dead-letter sink and the
// retry layer.
func (p *Publisher) openEnabled(ctx context.Context, c publisherConfig) (err error) {
	dir := c.spoolDir
	if dir == "" {
		dir = SpoolDir(p.cfg)
	}
	if p.cfg.SpoolDir == "" && c.spoolDir == "" {
		p.log.Warn("domainevents: the spool is in the temporary directory, which may not survive a reboot: set MESSAGE_BROKER_SPOOL_DIR to a persistent directory",
			"spool", dir)
	}
	var spoolOpts []deadletter.SpoolOption
	if c.observer != nil {
		spoolOpts = append(spoolOpts, deadletter.WithObserver(c.observer))
	}
	if p.spool, err = deadletter.OpenSpool(dir, spoolOpts...); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = p.closeParts(ctx)
		}
	}()
	switch p.cfg.Type {
	case broker.RabbitMQ:
		var o []rabbitmq.PublisherOption
		o = append(o, rabbitmq.WithLogger(c.logger))
		if !c.wait {
			o = append(o, rabbitmq.WithLazyConnect())
		}
		if c.observer != nil {
			o = append(o, rabbitmq.WithObserver(c.observer))
		}
		o = append(o, c.rabbit...)
		sinkOpts := o
		if p.cfg.Queue != "" {
			o = append(o, rabbitmq.WithQueue(rabbitmq.Queue{Name: p.cfg.Queue, Keys: []string{"#"}}))
		}
		b, err := rabbitmq.New(ctx, p.cfg, o...)
		if err != nil {
			return err
		}
		p.adapter = b
		if p.dlq, err = rabbitmq.NewDeadLetterSink(ctx, p.cfg, sinkOpts...); err != nil {
			return err
		}
		p.where = fmt.Sprintf("RabbitMQ exchange %q at %v", p.cfg.Exchange, p.cfg.Addrs())
		if p.cfg.Queue != "" {
			p.where += fmt.Sprintf(", queue %q bound to it", p.cfg.Queue)
		}
	case broker.Kafka:
		var o []kafka.PublisherOption
		o = append(o, kafka.WithLogger(c.logger))
		if !c.wait {
			o = append(o, kafka.WithLazyConnect())
		}
		if c.observer != nil {
			o = append(o, kafka.WithObserver(c.observer))
		}
		o = append(o, c.kafka...)
		b, err := kafka.New(ctx, p.cfg, o...)
		if err != nil {
			return err
		}
		p.adapter = b
		// The sink connects as the publisher does (SASL, TLS, lazy, observer...), to one topic.
		if p.dlq, err = kafka.NewDeadLetterSink(ctx, p.cfg, o...); err != nil {
			return err
		}
		p.where = fmt.Sprintf("Kafka topic %q at %v", p.cfg.Topic, p.cfg.Addrs())
	default:
		return invalid(fmt.Errorf("%s=%q: unknown broker type", broker.EnvType, p.cfg.Type))
	}
	p.health, _ = p.adapter.(broker.HealthChecker) // the adapter's own, not a middleware's
	for _, mw := range c.middleware {
		p.adapter = mw(p.adapter)
	}
	ro := []retry.Option{retry.WithDeadLetter(p.spool), retry.WithRejectedDeadLetter(p.dlq), retry.WithLogger(c.logger)}
	if c.observer != nil {
		ro = append(ro, retry.WithObserver(c.observer))
	}
	if p.retry, err = retry.New(p.adapter, append(ro, c.retry...)...); err != nil {
		return err
	}
	p.entry = p.retry
	p.where += "; undeliverable events to " + p.dlq.String() + ", unreachable ones to " + p.spool.String()
	return nil
}

// SpoolDir is the spool directory Open uses for cfg: cfg.SpoolDir
// (MESSAGE_BROKER_SPOOL_DIR), or a directory named after cfg.ClientID in
// the system's temporary directory.
func SpoolDir(cfg broker.Config) string {
	if cfg.SpoolDir != "" {
		return cfg.SpoolDir
	}
	return filepath.Join(os.TempDir(), "domainevents-"+cfg.ClientID+"-spool")
}

// Publish publishes msg through the retry layer (see broker.Broker): nil
// once the broker confirmed it; an error matching broker.ErrDeadLettered
// once it is safe in a dead-letter sink (broker.Safe tells both from a
// failure). [WithMessageHook]'s function sees a copy of msg first.
func (p *Publisher) Publish(ctx context.Context, msg broker.Message) error {
	if p.hook != nil {
		msg.Headers = maps.Clone(msg.Headers) // the caller's map stays as it is
		p.hook(ctx, &msg)
	}
	return p.entry.Publish(ctx, msg)
}

// Describe says where Publish sends m (see broker.Describer).
func (p *Publisher) Describe(m broker.Message) broker.Destination {
	if d, ok := p.entry.(broker.Describer); ok {
		return d.Describe(m)
	}
	return broker.Destination{}
}

// Forward publishes a typed event: it stamps it with a fresh id and time,
// encodes it (an invalid event fails here, naming the field) and publishes
// it as [Publisher.Publish] does (or queues it, with [WithAsync]).
func (p *Publisher) Forward(ctx context.Context, e events.Event) error { return p.fwd.Forward(ctx, e) }

// Attach subscribes the Publisher to every event of bus: eventbus.Publish
// then publishes to the broker and returns its answer.
func (p *Publisher) Attach(bus *eventbus.Bus) *eventbus.Subscription { return p.fwd.Attach(bus) }

// Health reports whether the broker is reachable now: nil when connected,
// otherwise an error with the last connection error (events are then
// retried and spooled, not lost) that matches broker.ErrUnauthorized when
// the broker refused the credentials or the virtual host, and
// broker.ErrUnavailable otherwise; or broker.ErrClosed after Close. It is what a readiness probe calls; it does
// not touch the network.
func (p *Publisher) Health(ctx context.Context) error {
	p.closeMu.Lock()
	closed := p.closed
	p.closeMu.Unlock()
	if closed {
		return &broker.Error{Op: "domainevents: publish", Kind: broker.ErrClosed}
	}
	if p.health == nil {
		return nil
	}
	return p.health.Health(ctx)
}

// Status is a snapshot of a Publisher, for health pages and logs.
type Status struct {
	// Destination says where events go.
	Destination string
	// Err is what [Publisher.Health] says: nil when connected.
	Err error
	// SpoolEntries and SpoolBytes measure the spool: events waiting for a
	// replay.
	SpoolEntries int64
	SpoolBytes   int64
	// Forwarder counts the asynchronous forwarder's events (zeros when
	// synchronous).
	Forwarder bridge.Stats
}

// Status returns a snapshot: where events go, the broker's health, the
// spool's depth.
func (p *Publisher) Status(ctx context.Context) Status {
	st := Status{Destination: p.where, Err: p.Health(ctx), Forwarder: p.fwd.Stats()}
	if p.spool != nil {
		st.SpoolEntries, st.SpoolBytes = p.spool.Entries(), p.spool.Len()
	}
	return st
}

// Close closes every part, in the order that loses nothing: the forwarder
// (its queue drains into the retry layer), the spool replay, the retry
// layer (what waits for a retry is spooled; it then closes the adapter,
// which waits for its confirms), the dead-letter sink, the spool. All
// within ctx: give it the service's shutdown budget (a healthy broker's
// confirm time, plus about a second for spooling what is left). It returns
// the parts' errors joined. A second Close returns nil.
func (p *Publisher) Close(ctx context.Context) error {
	p.closeMu.Lock()
	if p.closed {
		p.closeMu.Unlock()
		return nil
	}
	p.closed = true
	p.closeMu.Unlock()
	err := p.fwd.Close(ctx)
	return errors.Join(err, p.closeParts(ctx))
}

// closeParts closes what is open, in order.
func (p *Publisher) closeParts(ctx context.Context) error {
	var errs []error
	if p.stop != nil {
		p.stop()
		p.loop.Wait()
	}
	switch {
	case p.retry != nil:
		errs = append(errs, p.retry.Close(ctx)) // closes the adapter
	case p.adapter != nil:
		errs = append(errs, p.adapter.Close(ctx))
	}
	if p.dlq != nil {
		errs = append(errs, p.dlq.Close(ctx))
	}
	if p.spool != nil {
		p.replay.Lock() // a Replay the caller runs ends now: the adapter is closed
		errs = append(errs, p.spool.Close())
		p.replay.Unlock()
	}
	return errors.Join(errs...)
}
