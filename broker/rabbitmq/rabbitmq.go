package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/internal/backoff"
)

// Broker publishes to a RabbitMQ topic exchange with publisher confirms. It
// implements [broker.Broker]; see the package doc for the guarantees.
type Broker struct {
	*dialer
	exchange string

	window  chan struct{} // a slot per message awaiting its confirm
	closing chan struct{} // closed when Close starts
	done    chan struct{} // closed when Close gives up waiting: stop reconnecting
	lost    chan struct{} // a session died; the supervisor reconnects
	wg      sync.WaitGroup
	stop    context.CancelFunc // cancels dialer.life

	// mu serialises delivery-tag assignment with the publish that uses the
	// tag, and guards the fields below. Publish takes it with its ctx: a
	// socket write blocked by a broker that stopped reading must not hold
	// other callers past their deadlines.
	mu        ctxMutex
	sess      *session  // nil while disconnected
	queue     []*record // waiting for a session, in publish order
	closed    bool
	lastErr   error // why the last connection attempt or session failed
	closeOnce sync.Once

	stats struct {
		published, confirmed, republished, returned, nacked, reconnects atomic.Int64
	}
}

// target is one address to dial. url holds the password: it is never logged
// or put in an error; addr is what logs show.
type target struct {
	url  string
	addr string
}

// session is one connection and its confirm-mode channel. Delivery tags are
// per channel: a confirm is only ever matched against its own session's map.
type session struct {
	conn   *amqp.Connection
	raw    net.Conn // the socket, for write deadlines; nil if unknown
	ch     *amqp.Channel
	addr   string
	mu     sync.Mutex
	tags   map[uint64]*record
	dead   bool
	closed chan *amqp.Error
}

// record is one message from Publish until its outcome.
type record struct {
	key      string
	pub      amqp.Publishing
	done     chan struct{}
	err      error
	returned *amqp.Return
	sent     bool // handed to a connection at least once; guarded by Broker.mu
}

// New connects to RabbitMQ as cfg says, declares the topology (a durable
// topic exchange named cfg.Exchange, plus what the options add) and returns
// a Broker ready to publish.
//
// A bad configuration or option, bad credentials, a missing vhost or an
// exchange that exists with another type is a non-retryable error
// (broker.ErrInvalid or broker.ErrUnauthorized). When no address answers
// before ctx ends or each has been tried once, the error matches
// broker.ErrUnavailable.
func New(ctx context.Context, cfg broker.Config, opts ...Option) (*Broker, error) {
	cfg, o, err := prepare(cfg, opts)
	if err != nil {
		return nil, err
	}
	life, stop := context.WithCancel(context.Background())
	b := &Broker{
		dialer:   &dialer{opts: o, targets: targets(cfg, o), life: life},
		stop:     stop,
		exchange: cfg.Exchange,
		window:   make(chan struct{}, o.window),
		mu:       newCtxMutex(),
		closing:  make(chan struct{}),
		done:     make(chan struct{}),
		lost:     make(chan struct{}, 1),
	}
	if err := b.connectOnce(ctx); err != nil {
		b.stop()
		return nil, err
	}
	b.wg.Add(1)
	go b.supervise()
	return b, nil
}

// prepare fills cfg's RabbitMQ defaults, validates it and applies the
// options: what New and NewSubscriber share.
func prepare(cfg broker.Config, opts []Option) (broker.Config, options, error) {
	if cfg.Type == "" {
		cfg.Type = broker.RabbitMQ
	}
	o := defaultOptions()
	if err := cfg.Validate(); err != nil {
		return cfg, o, err
	}
	o.connName = cfg.ClientID
	if cfg.TLS {
		_ = WithTLS(nil)(&o)
	}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return cfg, o, &broker.Error{Op: "rabbitmq: options", Kind: broker.ErrInvalid, Err: err}
		}
	}
	return cfg, o, nil
}

func targets(cfg broker.Config, o options) []target {
	if len(o.urls) > 0 {
		ts := make([]target, len(o.urls))
		for i, u := range o.urls {
			uri, _ := amqp.ParseURI(u) // validated by WithURLs
			ts[i] = target{url: u, addr: net.JoinHostPort(uri.Host, strconv.Itoa(uri.Port)) + uri.Vhost}
		}
		return ts
	}
	scheme := "amqp"
	if o.tls != nil {
		scheme = "amqps"
	}
	var ts []target
	for _, a := range cfg.Addrs() {
		host, portStr, _ := net.SplitHostPort(a) // validated by Config.Validate
		port, _ := strconv.Atoi(portStr)
		u := amqp.URI{Scheme: scheme, Host: host, Port: port, Username: cfg.Username,
			Password: cfg.Password.Reveal(), Vhost: cfg.VHost}
		ts = append(ts, target{url: u.String(), addr: a})
	}
	return ts
}

// connectOnce tries each target once, for New.
func (b *Broker) connectOnce(ctx context.Context) error {
	return b.tryEach(ctx, func(ctx context.Context) error {
		s, err := b.dial(ctx)
		if err == nil {
			b.install(s)
		}
		return err
	})
}

// dialer connects to the targets in turn. Close cancels life, which aborts
// a dial in progress.
type dialer struct {
	opts    options
	targets []target
	life    context.Context
	nextMu  sync.Mutex
	next    int
}

// tryEach calls try once per target (each call dials the next one) until
// one succeeds, an error is not retryable (wrong credentials or topology:
// another node will not differ) or ctx ends. A single failure is returned
// as it is, several joined under broker.ErrUnavailable.
func (d *dialer) tryEach(ctx context.Context, try func(context.Context) error) error {
	var errs []error
	for range d.targets {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		err := try(ctx)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
		if !broker.IsRetryable(err) {
			return err
		}
	}
	if len(errs) == 1 {
		return errs[0] // already says which address and why
	}
	return &broker.Error{Op: "rabbitmq: connect", Kind: broker.ErrUnavailable, Err: errors.Join(errs...)}
}

// retryUntil calls try, with exponential backoff and full jitter between
// attempts, until it succeeds (true) or stop closes or life ends (false).
// Failures are logged, at Error when retrying cannot help by itself (the
// password changed, say: it needs a human).
func (d *dialer) retryUntil(stop <-chan struct{}, what string, try func() error) bool {
	for attempt := 0; ; attempt++ {
		select {
		case <-stop:
			return false
		default:
		}
		err := try()
		if err == nil {
			return true
		}
		if d.life.Err() != nil {
			return false
		}
		delay := backoff.Policy{Initial: d.opts.backoffMin, Max: d.opts.backoffMax}.Delay(attempt + 1)
		lvl := slog.LevelWarn
		if !broker.IsRetryable(err) {
			lvl = slog.LevelError
		}
		d.opts.logger.Log(context.Background(), lvl, "rabbitmq: "+what+" failed", "attempt", attempt+1, "retry_in", delay, "err", err)
		t := time.NewTimer(delay)
		select {
		case <-stop:
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// connect opens an AMQP connection to the next target. raw is its socket
// (nil when a caller's amqp.Config.Dial made it), for write deadlines.
func (d *dialer) connect(ctx context.Context) (conn *amqp.Connection, addr string, raw net.Conn, err error) {
	d.nextMu.Lock()
	t := d.targets[d.next%len(d.targets)]
	d.next++
	d.nextMu.Unlock()

	cfg := amqp.Config{}
	if d.opts.amqpConfig != nil {
		cfg = *d.opts.amqpConfig
	}
	cfg.Heartbeat = d.opts.heartbeat
	if d.opts.tls != nil {
		cfg.TLSClientConfig = d.opts.tls
	}
	if cfg.Properties == nil {
		cfg.Properties = amqp.NewConnectionProperties()
	}
	if d.opts.connName != "" {
		cfg.Properties.SetClientConnectionName(d.opts.connName)
	}
	if cfg.Dial == nil {
		timeout := d.opts.dialTimeout
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
			timeout = max(time.Until(dl), time.Millisecond)
		}
		cfg.Dial = func(network, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			stop := context.AfterFunc(d.life, cancel) // Close aborts a dial
			defer stop()
			conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			raw = conn
			// Bound the TLS and AMQP handshakes; amqp091 clears it once open.
			if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
				_ = conn.Close()
				return nil, err
			}
			return conn, nil
		}
	}
	conn, err = amqp.DialConfig(t.url, cfg)
	if err != nil {
		return nil, t.addr, nil, wrap("connect "+t.addr, err)
	}
	return conn, t.addr, raw, nil
}

// dial connects to the next target, opens a confirm-mode channel and
// declares the topology.
func (b *Broker) dial(ctx context.Context) (*session, error) {
	conn, addr, raw, err := b.connect(ctx)
	if err != nil {
		return nil, err
	}
	s, err := b.open(conn, addr)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	s.raw = raw
	return s, nil
}

func (b *Broker) open(conn *amqp.Connection, addr string) (*session, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, wrap("open channel on "+addr, err)
	}
	if err := b.declare(ch); err != nil {
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		return nil, wrap("enable publisher confirms on "+addr, err)
	}
	s := &session{conn: conn, ch: ch, addr: addr, tags: map[uint64]*record{}, closed: make(chan *amqp.Error, 1)}
	conn.NotifyClose(s.closed)
	return s, nil
}

func (b *Broker) declare(ch *amqp.Channel) error {
	if err := declareExchange(ch, b.exchange, b.opts); err != nil {
		return err
	}
	for _, q := range b.opts.queues {
		if err := declareQueue(ch, q, b.exchange); err != nil {
			return err
		}
	}
	return nil
}

// declareExchange declares the durable topic exchange (and its alternate
// exchange), or checks it exists in passive mode.
func declareExchange(ch *amqp.Channel, exchange string, o options) error {
	var args amqp.Table
	if o.alternate != "" {
		ae := o.alternate
		if err := ch.ExchangeDeclare(ae, "fanout", true, false, false, false, nil); err != nil {
			return declareErr("alternate exchange "+ae, err)
		}
		if err := declareQueue(ch, Queue{Name: ae, Keys: []string{""}}, ae); err != nil {
			return err
		}
		args = amqp.Table{"alternate-exchange": ae}
	}
	var err error
	if o.passive {
		err = ch.ExchangeDeclarePassive(exchange, "topic", true, false, false, false, args)
	} else {
		err = ch.ExchangeDeclare(exchange, "topic", true, false, false, false, args)
	}
	if err != nil {
		return declareErr("exchange "+exchange, err)
	}
	return nil
}

// declareQueue declares a durable queue and binds it to exchange with its
// keys (none when exchange is "").
func declareQueue(ch *amqp.Channel, q Queue, exchange string) error {
	if _, err := ch.QueueDeclare(q.Name, true, false, false, false, q.Args); err != nil {
		return declareErr("queue "+q.Name, err)
	}
	if exchange == "" {
		return nil
	}
	for _, k := range q.Keys {
		if err := ch.QueueBind(q.Name, k, exchange, false, nil); err != nil {
			return declareErr("binding "+q.Name+" <- "+k, err)
		}
	}
	return nil
}

// declareErr explains the usual causes of a failed declaration.
func declareErr(what string, err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case amqp.PreconditionFailed:
			return &broker.Error{Op: "rabbitmq: declare " + what, Kind: broker.ErrInvalid,
				Err: fmt.Errorf("it exists with a different type or arguments (delete it or change the name): %w", err)}
		case amqp.NotFound:
			return &broker.Error{Op: "rabbitmq: declare " + what, Kind: broker.ErrInvalid,
				Err: fmt.Errorf("it does not exist (passive mode declares nothing): %w", err)}
		case amqp.AccessRefused:
			return &broker.Error{Op: "rabbitmq: declare " + what, Kind: broker.ErrUnauthorized, Err: err}
		}
	}
	return wrap("declare "+what, err)
}

// install makes s the current session, re-publishes what was waiting (in
// order, with the same message ids) and starts watching s.
func (b *Broker) install(s *session) {
	confirms := s.ch.NotifyPublish(make(chan amqp.Confirmation, b.opts.window+1))
	returns := s.ch.NotifyReturn(make(chan amqp.Return))
	blocked := s.conn.NotifyBlocked(make(chan amqp.Blocking))

	b.mu.Lock()
	if b.closed && b.isDone() {
		b.mu.Unlock()
		_ = s.conn.Close()
		return
	}
	b.sess = s
	waiting := b.queue
	b.queue = nil
	for _, r := range waiting {
		b.stats.republished.Add(1)
		b.send(s, r, time.Time{})
	}
	b.mu.Unlock()

	b.opts.logger.Info("rabbitmq: connected", "addr", s.addr, "exchange", b.exchange, "republished", len(waiting))
	b.wg.Add(1)
	go b.watch(s, confirms, returns, blocked)
}

func (b *Broker) isDone() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// send publishes r on s. The caller holds b.mu. If s is dying, r goes back
// to the queue to be re-published on the next session. A non-zero deadline
// bounds the socket write: a broker that stopped reading (an alarm) must not
// keep the caller past its ctx; a write cut short breaks the connection,
// which is replaced, and r is re-published.
func (b *Broker) send(s *session, r *record, deadline time.Time) {
	tag := s.ch.GetNextPublishSeqNo()
	s.mu.Lock()
	if s.dead {
		s.mu.Unlock()
		b.queue = append(b.queue, r)
		return
	}
	s.tags[tag] = r
	s.mu.Unlock()

	if s.raw != nil && !deadline.IsZero() {
		_ = s.raw.SetWriteDeadline(deadline)
		defer func() { _ = s.raw.SetWriteDeadline(time.Time{}) }()
	}
	err := s.ch.PublishWithContext(context.Background(), b.exchange, r.key, true, false, r.pub)
	if err == nil {
		r.sent = true
		return
	}
	// Not sent (amqp091 took the tag back). Queue it for the next session
	// and make sure this one goes away.
	s.mu.Lock()
	if s.tags[tag] == r {
		delete(s.tags, tag)
		b.queue = append(b.queue, r)
	}
	s.mu.Unlock()
	b.opts.logger.Warn("rabbitmq: publish failed, reconnecting", "addr", s.addr, "err", err)
	go s.conn.Close()
}

// watch resolves s's confirms and returns until its channel closes, then
// hands the unconfirmed messages back for re-publishing.
func (b *Broker) watch(s *session, confirms <-chan amqp.Confirmation, returns <-chan amqp.Return, blocked <-chan amqp.Blocking) {
	defer b.wg.Done()
	for {
		select {
		case c, ok := <-confirms:
			if !ok {
				b.lose(s)
				return
			}
			b.confirm(s, c)
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			b.markReturned(s, r)
		case bl, ok := <-blocked:
			if !ok {
				blocked = nil
				continue
			}
			if bl.Active {
				b.opts.logger.Warn("rabbitmq: broker blocked publishing", "addr", s.addr, "reason", bl.Reason)
			} else {
				b.opts.logger.Info("rabbitmq: broker unblocked publishing", "addr", s.addr)
			}
		}
	}
}

// markReturned notes that the earliest unconfirmed message with the
// returned id came back unroutable; its ack follows and fails it. amqp091
// hands returns over synchronously, before the ack of the same message.
func (b *Broker) markReturned(s *session, ret amqp.Return) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var best uint64
	for tag, r := range s.tags {
		if r.returned == nil && r.pub.MessageId == ret.MessageId && (best == 0 || tag < best) {
			best = tag
		}
	}
	if best != 0 {
		s.tags[best].returned = &ret
	}
}

func (b *Broker) confirm(s *session, c amqp.Confirmation) {
	s.mu.Lock()
	r := s.tags[c.DeliveryTag]
	delete(s.tags, c.DeliveryTag)
	s.mu.Unlock()
	if r == nil {
		return
	}
	switch {
	case !c.Ack:
		b.stats.nacked.Add(1)
		r.err = &broker.Error{Op: "rabbitmq: publish", Kind: broker.ErrRejected,
			Err: fmt.Errorf("exchange %s refused message %s (%s): nack", b.exchange, r.pub.MessageId, r.key)}
	case r.returned != nil:
		b.stats.returned.Add(1)
		r.err = &broker.Error{Op: "rabbitmq: publish", Kind: broker.ErrUnroutable,
			Err: fmt.Errorf("exchange %s has no queue bound for routing key %q (message %s): %d %s; bind a queue or use WithQueue / WithAlternateExchange",
				b.exchange, r.key, r.pub.MessageId, r.returned.ReplyCode, r.returned.ReplyText)}
	default:
		b.stats.confirmed.Add(1)
	}
	b.resolve(r)
}

func (b *Broker) resolve(r *record) {
	close(r.done)
	<-b.window
}

// lose retires a dead session: its unconfirmed messages go back to the
// front of the queue, in publish order, and the supervisor reconnects.
func (b *Broker) lose(s *session) {
	var reason error = amqp.ErrClosed
	select {
	case e := <-s.closed:
		if e != nil {
			reason = e
		}
	default:
	}
	_ = s.conn.Close()

	b.mu.Lock()
	s.mu.Lock()
	s.dead = true
	tags := make([]uint64, 0, len(s.tags))
	for t := range s.tags {
		tags = append(tags, t)
	}
	slices.Sort(tags)
	unconfirmed := make([]*record, 0, len(tags)+len(b.queue))
	for _, t := range tags {
		r := s.tags[t]
		r.returned = nil
		unconfirmed = append(unconfirmed, r)
	}
	s.tags = nil
	s.mu.Unlock()
	b.queue = append(unconfirmed, b.queue...)
	if b.sess == s {
		b.sess = nil
	}
	b.lastErr = reason
	closed := b.closed
	b.mu.Unlock()

	if closed && b.isDone() {
		return // Close fails the queue
	}
	b.opts.logger.Warn("rabbitmq: connection lost, reconnecting", "addr", s.addr, "err", reason, "unconfirmed", len(tags))
	select {
	case b.lost <- struct{}{}:
	default:
	}
}

// supervise reconnects after each lost session, with exponential backoff and
// full jitter, until Close.
func (b *Broker) supervise() {
	defer b.wg.Done()
	for {
		select {
		case <-b.done:
			return
		case <-b.lost:
		}
		reconnected := b.retryUntil(b.done, "reconnect", func() error {
			s, err := b.dial(b.life)
			if err != nil {
				b.mu.Lock()
				b.lastErr = err
				b.mu.Unlock()
				return err
			}
			b.stats.reconnects.Add(1)
			b.install(s)
			return nil
		})
		if !reconnected {
			return
		}
	}
}

// Publish sends msg to the exchange with routing key msg.Name and waits for
// the broker's confirm. See the package doc for the mapping and guarantees.
func (b *Broker) Publish(ctx context.Context, msg broker.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := msg.Validate(); err != nil {
		return err
	}
	if len(msg.Body) > b.opts.maxMessageSize {
		return &broker.Error{Op: "rabbitmq: publish", Kind: broker.ErrTooLarge,
			Err: fmt.Errorf("message %s: body is %d bytes, the limit is %d (WithMaxMessageSize)", msg.ID, len(msg.Body), b.opts.maxMessageSize)}
	}
	r := newRecord(msg)

	select {
	case b.window <- struct{}{}:
	case <-b.closing:
		return errClosed
	case <-ctx.Done():
		return b.ctxErr(ctx)
	}
	if !b.mu.LockCtx(ctx) { // another publish is stuck writing: this one was never handed over
		<-b.window
		return b.notSentErr(ctx)
	}
	if b.closed {
		b.mu.Unlock()
		<-b.window
		return errClosed
	}
	b.stats.published.Add(1)
	if b.sess == nil {
		b.queue = append(b.queue, r)
	} else {
		deadline, _ := ctx.Deadline()
		b.send(b.sess, r, deadline)
	}
	b.mu.Unlock()

	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		if b.withdraw(r) {
			return b.notSentErr(ctx)
		}
		// Sent, outcome unknown: it stays in flight, confirmed or re-published.
		return b.ctxErr(ctx)
	}
}

// withdraw takes r back if no connection ever carried it (it waited for a
// reconnect), so that a caller who gives up knows for sure it was not sent
// and a later retry or dead letter does not duplicate it.
func (b *Broker) withdraw(r *record) bool {
	if !b.lockBriefly() {
		return false // cannot tell: report it as possibly delivered
	}
	defer b.mu.Unlock()
	if r.sent {
		return false
	}
	i := slices.Index(b.queue, r)
	if i < 0 {
		return false
	}
	b.queue = slices.Delete(b.queue, i, i+1)
	<-b.window
	return true
}

// notSentErr reports a message withdrawn before any connection carried it.
func (b *Broker) notSentErr(ctx context.Context) error {
	why := "the connection is busy (is the broker blocking publishers?)"
	if b.lockBriefly() {
		if b.sess == nil {
			why = fmt.Sprintf("not connected (last error: %v)", b.lastErr)
		}
		b.mu.Unlock()
	}
	return &broker.Error{Op: "rabbitmq: publish", Kind: broker.ErrUnavailable,
		Err: fmt.Errorf("not sent: %s: %w", why, ctx.Err())}
}

var errClosed = &broker.Error{Op: "rabbitmq: publish", Kind: broker.ErrClosed}

// ctxErr reports a ctx that ended while the message waited for a window
// slot, the connection or its confirm: ctx.Err() marked ErrUnavailable
// (retryable), saying whether the broker was connected.
func (b *Broker) ctxErr(ctx context.Context) error {
	why := "no confirm from the broker yet"
	if b.lockBriefly() {
		if b.sess == nil {
			why = fmt.Sprintf("not connected (last error: %v)", b.lastErr)
		}
		b.mu.Unlock()
	}
	return &broker.Error{Op: "rabbitmq: publish", Kind: broker.ErrUnavailable,
		Err: fmt.Errorf("%s; the message may still be delivered: %w", why, ctx.Err())}
}

func newRecord(m broker.Message) *record {
	ts := m.Time
	if ts.IsZero() {
		ts = time.Now()
	}
	var headers amqp.Table
	if len(m.Headers) > 0 {
		headers = make(amqp.Table, len(m.Headers))
		for k, v := range m.Headers {
			headers[k] = v
		}
	}
	return &record{
		key: m.Name,
		pub: amqp.Publishing{
			Headers:      headers,
			ContentType:  m.ContentType,
			DeliveryMode: amqp.Persistent,
			MessageId:    m.ID,
			Timestamp:    ts,
			Type:         m.Name,
			Body:         m.Body,
		},
		done: make(chan struct{}),
	}
}

// Close stops accepting messages, waits until every message in flight is
// confirmed or failed (re-publishing across reconnects meanwhile), then
// closes the connection. If ctx ends first, the messages still waiting fail
// with an error matching broker.ErrUnavailable and broker.ErrClosed, and
// Close returns ctx.Err(). A second Close returns nil.
func (b *Broker) Close(ctx context.Context) error {
	first := false
	b.closeOnce.Do(func() { first = true })
	if !first {
		return nil
	}
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	close(b.closing)

	var err error
	for range cap(b.window) { // holding every slot means nothing is in flight
		select {
		case b.window <- struct{}{}:
			continue
		case <-ctx.Done():
			err = ctx.Err()
		}
		break
	}
	close(b.done)
	b.stop()

	b.mu.Lock()
	s := b.sess
	b.sess = nil
	b.mu.Unlock()
	if s != nil {
		deadline := time.Now().Add(time.Second)
		if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
			deadline = dl
		}
		_ = s.conn.CloseDeadline(deadline)
	}
	b.wg.Wait()

	// Whatever is left was never confirmed: fail it back to its caller.
	b.mu.Lock()
	left := b.queue
	b.queue = nil
	b.mu.Unlock()
	for _, r := range left {
		r.err = &broker.Error{Op: "rabbitmq: publish", Kind: broker.ErrUnavailable,
			Err: fmt.Errorf("%w before the broker confirmed message %s; it may or may not have been stored", broker.ErrClosed, r.pub.MessageId)}
		close(r.done)
	}
	if len(left) > 0 {
		b.opts.logger.Warn("rabbitmq: closed with unconfirmed messages", "count", len(left))
	}
	b.opts.logger.Info("rabbitmq: closed", "stats", b.Stats())
	return err
}

// Stats counts what happened since New.
type Stats struct {
	// Published counts messages Publish accepted (sent, or queued while
	// disconnected; a queued one its caller gave up on is withdrawn).
	Published int64
	// Confirmed counts broker acks of routed messages.
	Confirmed int64
	// Republished counts messages sent on a new connection: unconfirmed ones
	// re-sent after a connection loss, and those that waited for it.
	Republished int64
	// Returned counts messages that came back unroutable.
	Returned int64
	// Nacked counts broker nacks.
	Nacked int64
	// Reconnects counts successful reconnects.
	Reconnects int64
}

// Stats returns the counters.
func (b *Broker) Stats() Stats {
	return Stats{
		Published:   b.stats.published.Load(),
		Confirmed:   b.stats.confirmed.Load(),
		Republished: b.stats.republished.Load(),
		Returned:    b.stats.returned.Load(),
		Nacked:      b.stats.nacked.Load(),
		Reconnects:  b.stats.reconnects.Load(),
	}
}

// ctxMutex is a mutex whose Lock can give up when a ctx ends.
type ctxMutex struct{ ch chan struct{} }

func newCtxMutex() ctxMutex { return ctxMutex{ch: make(chan struct{}, 1)} }

// Lock locks, waiting as long as it takes.
func (m ctxMutex) Lock() { m.ch <- struct{}{} }

// Unlock unlocks.
func (m ctxMutex) Unlock() { <-m.ch }

// LockCtx locks, or returns false once ctx has ended. A free lock wins over
// an ended ctx.
func (m ctxMutex) LockCtx(ctx context.Context) bool {
	select {
	case m.ch <- struct{}{}:
		return true
	default:
	}
	select {
	case m.ch <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// lockGrace bounds how long a caller whose ctx ended still waits for the
// lock to tidy up (withdraw its message, describe the state).
const lockGrace = 100 * time.Millisecond

// lockBriefly takes mu for a caller whose own ctx has ended, waiting at most
// lockGrace.
func (b *Broker) lockBriefly() bool {
	ctx, cancel := context.WithTimeout(context.Background(), lockGrace)
	defer cancel()
	return b.mu.LockCtx(ctx)
}
