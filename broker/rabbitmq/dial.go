package rabbitmq

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/internal/backoff"
)

// target is one address to dial. url holds the password: it is never logged
// or put in an error; addr is what logs and errors show.
type target struct {
	url  string
	addr string
}

func targets(cfg broker.Config, o *connOptions) []target {
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

// connector dials the targets in turn, each call the next one, and runs
// the reconnect loops of the publisher and the subscriber. Close cancels
// life, which aborts a dial in progress.
type connector struct {
	component string // "rabbitmq publisher", ... for logs and observations
	opts      *connOptions
	targets   []target
	dial      dialFunc
	life      context.Context
	stop      context.CancelFunc

	mu   sync.Mutex
	next int
}

// closeOnStop closes conn if Close stops the connector before the
// returned func is called: a broker that hangs during the declarations
// after connecting must not hold Close.
func (c *connector) closeOnStop(conn connection) (release func() bool) {
	return context.AfterFunc(c.life, func() { _ = conn.CloseDeadline(time.Now().Add(time.Second)) })
}

func newConnector(component string, cfg broker.Config, o *connOptions) *connector {
	c := &connector{component: component, opts: o, targets: targets(cfg, o)}
	c.life, c.stop = context.WithCancel(context.Background())
	c.dial = o.dial
	if c.dial == nil {
		c.dial = dialAMQP(o, c.life)
	}
	return c
}

// connect dials the next target.
func (c *connector) connect(ctx context.Context) (connection, string, error) {
	c.mu.Lock()
	t := c.targets[c.next%len(c.targets)]
	c.next++
	c.mu.Unlock()
	conn, err := c.dial(ctx, t)
	if err != nil {
		return nil, t.addr, connectErr(t.addr, err)
	}
	return conn, t.addr, nil
}

// eachOnce calls try once per target (each call dials the next one) until
// one succeeds, an error is not retryable (wrong credentials or topology:
// another node will not differ) or ctx ends. A single failure is returned
// as it is, several joined under broker.ErrUnavailable.
func (c *connector) eachOnce(ctx context.Context, try func(context.Context) error) error {
	var errs []error
	for range c.targets {
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
	return &broker.Error{Op: opConnect, Kind: broker.ErrUnavailable, Err: errors.Join(errs...)}
}

// logEvery bounds how often a loop that keeps failing logs: the first
// failure at once, then at most once per interval.
const logEvery = 30 * time.Second

// humanMax is the longest wait between attempts that fail for a reason
// that needs a human (refused credentials or virtual host): they go on,
// since an operator may fix the user, but need not hammer the broker.
const humanMax = 15 * time.Second

// retry calls try with the backoff policy between attempts until it
// succeeds (true) or stop closes or life ends (false). try gets the attempt
// number, from 1. Failures are logged, at Error when retrying cannot help
// by itself (the password changed, say: it needs a human; the waits then
// grow up to humanMax), the first at once and then at most every logEvery.
func (c *connector) retry(stop <-chan struct{}, what string, try func(attempt int) error) bool {
	policy := backoff.Policy{Initial: c.opts.backoffInitial, Max: c.opts.backoffMax}
	slow := backoff.Policy{Initial: c.opts.backoffInitial, Max: max(c.opts.backoffMax, humanMax)}
	var lastLog time.Time
	for attempt := 1; ; attempt++ {
		select {
		case <-stop:
			return false
		default:
		}
		err := try(attempt)
		if err == nil {
			if attempt > 1 {
				c.opts.logger.Info(c.component+": "+what+" succeeded", "component", c.component, "attempts", attempt)
			}
			return true
		}
		if c.life.Err() != nil {
			return false
		}
		delay := policy.Delay(attempt)
		if !broker.IsRetryable(err) {
			delay = slow.Delay(attempt)
		}
		if now := time.Now(); now.Sub(lastLog) >= logEvery {
			lastLog = now
			lvl := slog.LevelWarn
			if !broker.IsRetryable(err) {
				lvl = slog.LevelError
			}
			c.opts.logger.Log(context.Background(), lvl, c.component+": "+what+" failed, retrying",
				"component", c.component, "attempt", attempt, "retry_in", delay, "err", err)
		}
		t := time.NewTimer(delay)
		select {
		case <-stop:
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// observe reports o to the observer, if any, filling in the component.
func (c *connector) observe(o broker.Observation) {
	if c.opts.observer == nil {
		return
	}
	o.Component = c.component
	o.System = "rabbitmq"
	c.opts.observer.Observe(context.Background(), o)
}
