package kafka

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/internal/backoff"
)

// Record header keys set on every record.
const (
	HeaderName        = "event-name"
	HeaderID          = "event-id"
	HeaderContentType = "content-type"
)

// Broker produces to Kafka through one idempotent sarama AsyncProducer. It
// implements [broker.Broker]; see the package doc for the guarantees.
type Broker struct {
	opts     options
	topic    string
	client   sarama.Client
	producer sarama.AsyncProducer

	mu      sync.RWMutex // guards closed against Publish's check
	closed  bool
	sending sync.WaitGroup // Publish calls handing a record to the producer
	closing chan struct{}
	drained chan struct{} // the result loops ended: every record has its outcome
	once    sync.Once

	stats struct{ published, acked, failed atomic.Int64 }
}

// New connects to the cluster cfg describes (cfg.Addrs() as bootstrap
// brokers, cfg.ClientID, cfg.Topic) and returns a Broker ready to produce.
// It retries reaching the cluster until ctx ends (then the error matches
// broker.ErrUnavailable). A bad option or sarama configuration, failed
// authentication, or a topic that does not exist (with one topic for all
// events) is a non-retryable error naming what to change.
func New(ctx context.Context, cfg broker.Config, opts ...Option) (*Broker, error) {
	cfg, o, sc, err := prepare(cfg, opts)
	if err != nil {
		return nil, err
	}
	client, err := connect(ctx, cfg.Addrs(), sc, o)
	if err != nil {
		return nil, err
	}
	if !o.topicPerEvent {
		if err := checkTopic(client, cfg.Topic); err != nil {
			_ = client.Close()
			return nil, err
		}
	}
	producer, err := sarama.NewAsyncProducerFromClient(client)
	if err != nil {
		_ = client.Close()
		return nil, wrap("start producer", err)
	}
	b := &Broker{
		opts: o, topic: cfg.Topic, client: client, producer: producer,
		closing: make(chan struct{}), drained: make(chan struct{}),
	}
	var loops sync.WaitGroup
	loops.Go(func() {
		for m := range producer.Successes() {
			b.stats.acked.Add(1)
			m.Metadata.(chan error) <- nil
		}
	})
	loops.Go(func() {
		for pe := range producer.Errors() {
			b.stats.failed.Add(1)
			pe.Msg.Metadata.(chan error) <- b.produceErr(pe)
		}
	})
	go func() {
		loops.Wait()
		close(b.drained)
	}()
	o.logger.Info("kafka: connected", "brokers", cfg.Addrs(), "topic", b.topicDesc(), "client_id", sc.ClientID)
	return b, nil
}

func (b *Broker) topicDesc() string {
	if b.opts.topicPerEvent {
		return "<event name>"
	}
	return b.topic
}

// prepare fills cfg's Kafka defaults, validates it, applies the options and
// builds the sarama configuration: what New and NewSubscriber share.
func prepare(cfg broker.Config, opts []Option) (broker.Config, options, *sarama.Config, error) {
	if cfg.Type == "" {
		cfg.Type = broker.Kafka
	}
	if cfg.Topic == "" {
		cfg.Topic = broker.DefaultDestination
	}
	o := defaultOptions()
	if err := cfg.Validate(); err != nil {
		return cfg, o, nil, err
	}
	if cfg.TLS {
		_ = WithTLS(nil)(&o)
	}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return cfg, o, nil, &broker.Error{Op: "kafka: options", Kind: broker.ErrInvalid, Err: err}
		}
	}
	sc, err := saramaConfig(cfg, o)
	if err != nil {
		return cfg, o, nil, &broker.Error{Op: "kafka: config", Kind: broker.ErrInvalid, Err: err}
	}
	return cfg, o, sc, nil
}

// saramaConfig builds the producer configuration: ours by default, or the
// caller's checked for durability.
func saramaConfig(cfg broker.Config, o options) (*sarama.Config, error) {
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
	c.Producer.Partitioner = o.partitioner
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
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("sarama config: %w", err)
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

// connect creates the client, retrying with backoff until ctx ends; a
// non-retryable error (authentication, configuration) stops at once.
func connect(ctx context.Context, addrs []string, sc *sarama.Config, o options) (sarama.Client, error) {
	for attempt := 0; ; attempt++ {
		client, err := sarama.NewClient(addrs, sc)
		if err == nil {
			return client, nil
		}
		werr := wrap(fmt.Sprintf("connect %v", addrs), err)
		if !broker.IsRetryable(werr) {
			return nil, werr
		}
		delay := backoff.Policy{Initial: o.connectMin, Max: o.connectMax}.Delay(attempt + 1)
		o.logger.Warn("kafka: cluster not reachable, retrying", "brokers", addrs, "attempt", attempt+1, "retry_in", delay, "err", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, &broker.Error{Op: fmt.Sprintf("kafka: connect %v", addrs), Kind: broker.ErrUnavailable,
				Err: fmt.Errorf("%w (last error: %v)", ctx.Err(), err)}
		case <-t.C:
		}
	}
}

func checkTopic(client sarama.Client, topic string) error {
	_, err := client.Partitions(topic)
	if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		return &broker.Error{Op: "kafka: topic " + topic, Kind: broker.ErrUnroutable,
			Err: fmt.Errorf("topic %q does not exist: create it, or enable auto.create.topics.enable on the brokers: %w", topic, err)}
	}
	return wrap("topic "+topic, err)
}

func (b *Broker) produceErr(pe *sarama.ProducerError) error {
	topic := pe.Msg.Topic
	err := wrap("produce to "+topic, pe.Err)
	if errors.Is(err, broker.ErrUnroutable) {
		return &broker.Error{Op: "kafka: produce", Kind: broker.ErrUnroutable,
			Err: fmt.Errorf("topic %q does not exist (or has no such partition): %w", topic, pe.Err)}
	}
	return err
}

var errClosed = &broker.Error{Op: "kafka: publish", Kind: broker.ErrClosed}

// Publish produces msg and waits for the acks=all acknowledgement. See the
// package doc for the mapping and guarantees.
func (b *Broker) Publish(ctx context.Context, msg broker.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := msg.Validate(); err != nil {
		return err
	}
	res := make(chan error, 1) // the result loop never blocks on it
	pm := b.record(msg, res)

	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return errClosed
	}
	b.sending.Add(1)
	b.mu.RUnlock()
	select {
	case b.producer.Input() <- pm:
		b.sending.Done()
	case <-b.closing:
		b.sending.Done()
		return errClosed
	case <-ctx.Done():
		b.sending.Done()
		return ctx.Err()
	}
	b.stats.published.Add(1)
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return &broker.Error{Op: "kafka: publish", Kind: broker.ErrUnavailable,
			Err: fmt.Errorf("no acknowledgement for %s before the context ended; the record may still be written: %w", msg.ID, ctx.Err())}
	}
}

func (b *Broker) record(msg broker.Message, res chan error) *sarama.ProducerMessage {
	topic := b.topic
	if b.opts.topicPerEvent {
		topic = msg.Name
	}
	headers := make([]sarama.RecordHeader, 0, 3+len(msg.Headers))
	headers = append(headers,
		sarama.RecordHeader{Key: []byte(HeaderName), Value: []byte(msg.Name)},
		sarama.RecordHeader{Key: []byte(HeaderID), Value: []byte(msg.ID)})
	if msg.ContentType != "" {
		headers = append(headers, sarama.RecordHeader{Key: []byte(HeaderContentType), Value: []byte(msg.ContentType)})
	}
	if len(msg.Headers) > 0 {
		keys := make([]string, 0, len(msg.Headers))
		for k := range msg.Headers {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			headers = append(headers, sarama.RecordHeader{Key: []byte(k), Value: []byte(msg.Headers[k])})
		}
	}
	pm := &sarama.ProducerMessage{
		Topic:     topic,
		Value:     sarama.ByteEncoder(msg.Body),
		Headers:   headers,
		Timestamp: msg.Time,
		Metadata:  res,
	}
	if msg.Key != "" {
		pm.Key = sarama.StringEncoder(msg.Key)
	}
	return pm
}

// Close stops accepting records (Publish returns broker.ErrClosed), lets the
// producer flush and waits for every outstanding acknowledgement, then
// closes the client. If ctx ends first it returns ctx.Err(); the producer
// finishes flushing in the background (bounded by its retries) and the
// waiting callers still get their outcome. A second Close returns nil.
func (b *Broker) Close(ctx context.Context) error {
	first := false
	b.once.Do(func() { first = true })
	if !first {
		return nil
	}
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	close(b.closing)
	b.sending.Wait() // nobody is sending on Input any more: safe to close it

	b.producer.AsyncClose() // flushes, then closes Successes and Errors
	select {
	case <-b.drained:
	case <-ctx.Done():
		go func() {
			<-b.drained
			_ = b.client.Close()
		}()
		return ctx.Err()
	}
	err := b.client.Close()
	b.opts.logger.Info("kafka: closed", "stats", b.Stats())
	if err != nil && !errors.Is(err, sarama.ErrClosedClient) {
		return wrap("close", err)
	}
	return nil
}

// Stats counts what happened since New.
type Stats struct {
	// Published counts records handed to the producer.
	Published int64
	// Acked counts records the cluster acknowledged (acks=all).
	Acked int64
	// Failed counts records that failed after sarama's retries.
	Failed int64
}

// Stats returns the counters.
func (b *Broker) Stats() Stats {
	return Stats{Published: b.stats.published.Load(), Acked: b.stats.acked.Load(), Failed: b.stats.failed.Load()}
}
