package kafka_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/kafka"
)

// cluster is the Kafka the tests talk to: an in-process kfake cluster
// (sarama over real TCP), or the cluster in KAFKA_BROKERS when set (its
// topics must exist or be auto-created; fault tests need kfake and skip).
type cluster struct {
	addrs []string
	fake  *kfake.Cluster
	ln    *faultListeners
}

const partitions = 3

func newCluster(t testing.TB, topics []string, opts ...kfake.Opt) *cluster {
	t.Helper()
	if env := os.Getenv("KAFKA_BROKERS"); env != "" {
		return &cluster{addrs: strings.Split(env, ",")}
	}
	fl := &faultListeners{}
	opts = append([]kfake.Opt{
		kfake.SeedTopics(partitions, topics...),
		kfake.ListenFn(fl.listen),
	}, opts...)
	c, err := kfake.NewCluster(opts...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return &cluster{addrs: c.ListenAddrs(), fake: c, ln: fl}
}

func (c *cluster) needFake(t testing.TB) {
	if c.fake == nil {
		t.Skip("fault injection needs the in-process kfake cluster (unset KAFKA_BROKERS)")
	}
}

func (c *cluster) config(topic string) broker.Config {
	cfg := broker.DefaultConfig()
	cfg.Enabled = true
	cfg.Type = broker.Kafka
	cfg.Addresses = c.addrs
	cfg.Topic = topic
	return cfg
}

func (c *cluster) open(t testing.TB, topic string, opts ...kafka.PublisherOption) *kafka.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	opts = append([]kafka.PublisherOption{kafka.WithLogger(testLogger(t))}, opts...)
	b, err := kafka.New(ctx, c.config(topic), opts...)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
	return b
}

// subscribe joins group on topic (its "<topic>.dlq" must exist or be
// auto-created) and hands records to h.
func (c *cluster) subscribe(t testing.TB, topic, group string, h broker.Handler, opts ...kafka.SubscriberOption) *kafka.Subscriber {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	opts = append([]kafka.SubscriberOption{kafka.WithLogger(testLogger(t))}, opts...)
	s, err := kafka.NewSubscriber(ctx, c.config(topic), group, h, opts...)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	})
	return s
}

func uniqueTopic() string { return "det.test." + uuid.NewString()[:8] }

// consumed is one record read back by franz-go, an independent client.
type consumed struct {
	rec     *kgo.Record
	headers map[string]string
}

// readBack consumes topics from the start with franz-go until every id (the
// event-id header) was seen or ctx ends. It returns all records by id
// (several when duplicated).
func (c *cluster) readBack(ctx context.Context, t testing.TB, want []string, topics ...string) (map[string][]consumed, error) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.addrs...), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	missing := map[string]bool{}
	for _, id := range want {
		missing[id] = true
	}
	got := map[string][]consumed{}
	for len(missing) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return got, fmt.Errorf("%d of %d records missing: %w", len(missing), len(want), ctx.Err())
		}
		for _, e := range fs.Errors() {
			if e.Err != context.Canceled {
				t.Logf("fetch %s/%d: %v", e.Topic, e.Partition, e.Err)
			}
		}
		fs.EachRecord(func(r *kgo.Record) {
			h := map[string]string{}
			for _, rh := range r.Headers {
				h[rh.Key] = string(rh.Value)
			}
			id := h[kafka.HeaderID]
			got[id] = append(got[id], consumed{rec: r, headers: h})
			delete(missing, id)
		})
	}
	return got, nil
}

// silence holds every produce request the cluster receives, unanswered and
// unprocessed, until the returned function is called (or the test ends):
// records handed over meanwhile wait for their acknowledgement, as behind a
// broker that stopped answering. kfake's SleepControl keeps the other
// requests flowing.
func (c *cluster) silence(t testing.TB) (restore func()) {
	wake := make(chan struct{})
	var once sync.Once
	restore = func() { once.Do(func() { close(wake) }) }
	t.Cleanup(restore)
	c.fake.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		select {
		case <-wake:
			c.fake.DropControl()
		default:
			c.fake.SleepControl(func() { <-wake })
		}
		return nil, nil, false // then the cluster handles it as usual
	})
	return restore
}

// faultListeners wraps kfake's listeners so tests can cut a broker's
// connections, refuse new ones, and drop produce acknowledgements.
type faultListeners struct {
	mu  sync.Mutex
	all []*faultListener
}

func (f *faultListeners) listen(network, addr string) (net.Listener, error) {
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	fl := &faultListener{Listener: ln, conns: map[*faultConn]struct{}{}}
	f.mu.Lock()
	f.all = append(f.all, fl)
	f.mu.Unlock()
	return fl, nil
}

func (f *faultListeners) get(i int) *faultListener {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.all[i]
}

func (f *faultListeners) each(fn func(*faultListener)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range f.all {
		fn(l)
	}
}

type faultListener struct {
	net.Listener
	mu       sync.Mutex
	conns    map[*faultConn]struct{}
	refusing atomic.Bool
	// dropEvery: close the connection instead of sending every Nth produce
	// response (the records are stored; the ack is lost). 0: never.
	dropEvery atomic.Int64
	produces  atomic.Int64
	dropped   atomic.Int64
}

func (l *faultListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.refusing.Load() {
			_ = c.Close()
			continue
		}
		fc := &faultConn{Conn: c, l: l}
		l.mu.Lock()
		l.conns[fc] = struct{}{}
		l.mu.Unlock()
		return fc, nil
	}
}

// cut closes every connection and, while refuse is true, each new one.
func (l *faultListener) cut(refuse bool) {
	l.refusing.Store(refuse)
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		_ = c.Conn.Close()
		delete(l.conns, c)
	}
}

type faultConn struct {
	net.Conn
	l *faultListener

	mu      sync.Mutex
	pending []byte  // request bytes not yet framed
	keys    []int16 // api keys of requests awaiting a response, in order
}

func (c *faultConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		c.pending = append(c.pending, p[:n]...)
		for len(c.pending) >= 6 {
			size := int(binary.BigEndian.Uint32(c.pending))
			if len(c.pending) < 4+size {
				break
			}
			c.keys = append(c.keys, int16(binary.BigEndian.Uint16(c.pending[4:6])))
			c.pending = c.pending[4+size:]
		}
		c.mu.Unlock()
	}
	return n, err
}

// Write carries one response (kfake writes each in one call).
func (c *faultConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	var key int16 = -1
	if len(c.keys) > 0 {
		key, c.keys = c.keys[0], c.keys[1:]
	}
	c.mu.Unlock()
	if key == 0 { // Produce
		n := c.l.produces.Add(1)
		if every := c.l.dropEvery.Load(); every > 0 && n%every == 0 {
			c.l.dropped.Add(1)
			_ = c.Conn.Close()
			return 0, net.ErrClosed
		}
	}
	return c.Conn.Write(p)
}

func testLogger(t testing.TB) *slog.Logger { return brokertest.Logger(t) }

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// checkNoLeak: go-metrics' meter arbiter, a process-wide goroutine sarama
// starts once, is not a leak.
func checkNoLeak(t testing.TB) { brokertest.CheckNoLeak(t, "go-metrics.(*meterArbiter)") }

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	brokertest.WaitFor(t, d, what, cond)
}
