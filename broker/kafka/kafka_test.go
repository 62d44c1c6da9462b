package kafka_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/kafka"
	"github.com/domainevents/domainevents/internal/testenv"
)

func TestConformance(t *testing.T) {
	shared := newCluster(t, nil, kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(partitions))
	brokertest.Run(t, func(t *testing.T) brokertest.Harness {
		topic := uniqueTopic()
		c := shared
		opts := []kafka.PublisherOption{}
		var disconnect func() func()
		// sarama's producer takes every record it is given and buffers and
		// retries it itself, whatever the network does: once connected, a
		// Broker cannot be made to wait before the hand-over. It waits there
		// only while connecting, with WithLazyConnect. So the test of a ctx
		// ending before the send gets a Broker of its own that starts while
		// its cluster refuses every connection; Disconnect keeps it that
		// way, and reconnect lets the cluster answer.
		if strings.HasSuffix(t.Name(), "/ContextEndsBeforeSend") && shared.fake != nil {
			c = newCluster(t, nil, kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(partitions))
			c.ln.each(func(l *faultListener) { l.cut(true) })
			opts = append(opts, kafka.WithLazyConnect(), kafka.WithConnectBackoff(10*time.Millisecond, 200*time.Millisecond))
			disconnect = func() func() {
				return func() { c.ln.each(func(l *faultListener) { l.refusing.Store(false) }) }
			}
		}
		receiver := func(topic string) brokertest.Receiver {
			return func(ctx context.Context, ids []string) (map[string]broker.Message, error) {
				got, err := c.readBack(ctx, t, ids, topic)
				out := map[string]broker.Message{}
				for id, rs := range got {
					r := rs[0]
					out[id] = broker.Message{ID: id, Name: r.headers[kafka.HeaderName], Key: string(r.rec.Key),
						Body: r.rec.Value, ContentType: r.headers[kafka.HeaderContentType], Headers: r.headers}
				}
				return out, err
			}
		}
		h := brokertest.Harness{
			Broker:      c.open(t, topic, opts...),
			Receive:     receiver(topic),
			DeadLetters: receiver(topic + ".dlq"),
			Subscribe: func(h broker.Handler) (broker.Subscriber, error) {
				return c.subscribe(t, topic, "conformance", h, kafka.WithRetryBackoff(10*time.Millisecond, 50*time.Millisecond)), nil
			},
			Unroutable: func() (broker.Broker, error) {
				strict := newCluster(t, nil) // no auto-creation: the topic does not exist
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				return kafka.New(ctx, strict.config(uniqueTopic()), kafka.WithLogger(testLogger(t)))
			},
			SubscribeKeyOrdered: func(h broker.Handler) (broker.Subscriber, error) {
				return c.subscribe(t, topic, "conformance-ordered", h, kafka.WithConcurrency(16),
					kafka.WithRetryBackoff(10*time.Millisecond, 50*time.Millisecond)), nil
			},
			Disconnect: disconnect,
			Timeout:    time.Minute,
		}
		if c.fake != nil {
			h.Silence = func() func() { return c.silence(t) }
			h.CutSubscriber = func() { c.ln.each(func(l *faultListener) { l.cut(false) }) }
		}
		return h
	})
}

// One order's three events: same key, same partition, publish order kept;
// the partition is the one Kafka's Java client would pick.
func TestKeysHeadersAndOrder(t *testing.T) {
	topic := uniqueTopic()
	c := newCluster(t, []string{topic})
	b := c.open(t, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()

	var ids []string
	for _, name := range []string{"order.created", "order.status.updated", "order.cancelled"} {
		m := brokertest.NewMessage(name)
		m.Key = "foobar" // Kafka's UtilsTest: murmur2("foobar") = -790332482
		m.Headers = map[string]string{"trace": "t-1"}
		require.NoError(t, b.Publish(ctx, m))
		ids = append(ids, m.ID)
	}
	got, err := c.readBack(ctx, t, ids, topic)
	require.NoError(t, err)
	h := int32(-790332482)
	wantPartition := int32(uint32(h)&0x7fffffff) % partitions
	var offsets []int64
	for i, id := range ids {
		require.Len(t, got[id], 1)
		r := got[id][0]
		assert.Equal(t, "foobar", string(r.rec.Key))
		assert.Equal(t, wantPartition, r.rec.Partition, "Java-compatible murmur2 partition")
		assert.Equal(t, []string{"order.created", "order.status.updated", "order.cancelled"}[i], r.headers[kafka.HeaderName])
		assert.Equal(t, id, r.headers[kafka.HeaderID])
		assert.Equal(t, "application/json", r.headers[kafka.HeaderContentType])
		assert.Equal(t, "t-1", r.headers["trace"])
		offsets = append(offsets, r.rec.Offset)
	}
	assert.IsIncreasing(t, offsets, "publish order kept within the partition")
}

// Kafka's published murmur2 vectors (UtilsTest.testMurmur2) decide where
// each key lands, end to end through kfake.
func TestMurmur2PartitioningMatchesJava(t *testing.T) {
	vectors := map[string]int32{
		"21": -973932308, "foobar": -790332482, "a-little-bit-long-string": -985981536,
		"a-little-bit-longer-string": -1486304829, "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	}
	topic := uniqueTopic()
	c := newCluster(t, []string{topic})
	b := c.open(t, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	want := map[string]int32{}
	var ids []string
	for key, h := range vectors {
		m := brokertest.NewMessage("order.created")
		m.Key = key
		require.NoError(t, b.Publish(ctx, m))
		want[m.ID] = int32(uint32(h)&0x7fffffff) % partitions
		ids = append(ids, m.ID)
	}
	got, err := c.readBack(ctx, t, ids, topic)
	require.NoError(t, err)
	for _, id := range ids {
		assert.Equal(t, want[id], got[id][0].rec.Partition, "key %s", got[id][0].rec.Key)
	}
}

func TestFNVPartitionerOption(t *testing.T) {
	topic := uniqueTopic()
	c := newCluster(t, []string{topic})
	b := c.open(t, topic, kafka.WithFNVPartitioner())
	m := brokertest.NewMessage("order.created")
	m.Key = "foobar"
	require.NoError(t, b.Publish(context.Background(), m))
	p, err := sarama.NewHashPartitioner(topic).Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder("foobar")}, partitions)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := c.readBack(ctx, t, []string{m.ID}, topic)
	require.NoError(t, err)
	assert.Equal(t, p, got[m.ID][0].rec.Partition)
}

func TestTopicPerEvent(t *testing.T) {
	c := newCluster(t, []string{"order.created", "order.cancelled"})
	b := c.open(t, "unused", kafka.WithTopicPerEvent())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, d := brokertest.NewMessage("order.created"), brokertest.NewMessage("order.cancelled")
	require.NoError(t, b.Publish(ctx, a))
	require.NoError(t, b.Publish(ctx, d))
	got, err := c.readBack(ctx, t, []string{a.ID, d.ID}, "order.created", "order.cancelled")
	require.NoError(t, err)
	assert.Equal(t, "order.created", got[a.ID][0].rec.Topic)
	assert.Equal(t, "order.cancelled", got[d.ID][0].rec.Topic)

	err = b.Publish(ctx, brokertest.NewMessage("order.unknown"))
	require.Error(t, err)
	assert.ErrorIs(t, err, broker.ErrUnroutable)
	assert.Contains(t, err.Error(), `"order.unknown"`)
}

func TestUnknownTopicAtStart(t *testing.T) {
	checkNoLeak(t)
	c := newCluster(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := kafka.New(ctx, c.config("no.such.topic"), kafka.WithLogger(testLogger(t)))
	require.Error(t, err)
	assert.ErrorIs(t, err, broker.ErrUnroutable)
	assert.False(t, broker.IsRetryable(err))
	assert.Contains(t, err.Error(), `"no.such.topic"`)
}

// Lost acks: some produce responses never arrive (the connection drops
// after the broker stored the batch). The idempotent producer retries with
// the same sequence numbers, so every record is stored exactly once.
// 2,000 records (500 outside the long test tier).
func TestLostAcksStoreEachRecordOnce(t *testing.T) {
	topic := uniqueTopic()
	c := newCluster(t, []string{topic})
	c.needFake(t)
	b := c.open(t, topic)
	c.ln.each(func(l *faultListener) { l.dropEvery.Store(7) })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	n := testenv.Count(500, 2000)
	ids := make([]string, n)
	var wg sync.WaitGroup
	var failed atomic.Int32
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < n; i += 16 {
				m := brokertest.NewMessage("order.created")
				ids[i] = m.ID
				if err := b.Publish(ctx, m); err != nil {
					failed.Add(1)
					t.Errorf("publish: %v", err)
				}
			}
		})
	}
	wg.Wait()
	dropped := int64(0)
	c.ln.each(func(l *faultListener) { dropped += l.dropped.Load(); l.dropEvery.Store(0) })
	got, err := c.readBack(ctx, t, ids, topic)
	require.NoError(t, err)
	dups := 0
	for _, id := range ids {
		dups += len(got[id]) - 1
	}
	t.Logf("published=%d acked=%d dropped-acks=%d stored=%d duplicates=%d", n, n-int(failed.Load()), dropped, len(got), dups)
	assert.Positive(t, dropped, "the fault must have been injected")
	assert.Zero(t, dups, "idempotence stores each record once")
}

// produceError answers the next count produce requests with code for every
// partition, counting them.
func produceError(c *cluster, code int16, count int, seen *atomic.Int32) {
	var left atomic.Int32
	left.Store(int32(count))
	c.fake.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if left.Add(-1) < 0 {
			return nil, nil, false
		}
		c.fake.KeepControl()
		seen.Add(1)
		pr := req.(*kmsg.ProduceRequest)
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range pr.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			st.TopicID = rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
}

func TestRetriableBrokerErrorsSucceedAfterRetry(t *testing.T) {
	for _, tc := range []struct {
		name string
		code int16
	}{
		{"NOT_LEADER_OR_FOLLOWER", int16(sarama.ErrNotLeaderForPartition)},
		{"NOT_ENOUGH_REPLICAS", int16(sarama.ErrNotEnoughReplicas)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topic := uniqueTopic()
			c := newCluster(t, []string{topic})
			c.needFake(t)
			b := c.open(t, topic)
			var seen atomic.Int32
			produceError(c, tc.code, 3, &seen)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			m := brokertest.NewMessage("order.created")
			require.NoError(t, b.Publish(ctx, m))
			assert.Equal(t, int32(3), seen.Load(), "three failed attempts before the success")
			got, err := c.readBack(ctx, t, []string{m.ID}, topic)
			require.NoError(t, err)
			assert.Len(t, got[m.ID], 1)
		})
	}
}

func TestFatalBrokerErrorIsNotRetried(t *testing.T) {
	topic := uniqueTopic()
	c := newCluster(t, []string{topic})
	c.needFake(t)
	b := c.open(t, topic)
	var seen atomic.Int32
	produceError(c, int16(sarama.ErrMessageSizeTooLarge), 100, &seen)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := b.Publish(ctx, brokertest.NewMessage("order.created"))
	require.Error(t, err)
	assert.ErrorIs(t, err, broker.ErrTooLarge)
	assert.False(t, broker.IsRetryable(err))
	var ke sarama.KError
	assert.ErrorAs(t, err, &ke, "the native error stays reachable")
	assert.Equal(t, int32(1), seen.Load(), "answered at once, no retries")
}

// A 3-broker cluster loses one broker's network for a while: publishing
// goes on (or waits) and nothing acknowledged is lost.
func TestBrokerOutageInThreeNodeCluster(t *testing.T) {
	topic := uniqueTopic()
	c := newCluster(t, []string{topic}, kfake.NumBrokers(3))
	c.needFake(t)
	b := c.open(t, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	var (
		mu     sync.Mutex
		acked  []string
		failed int
		sent   atomic.Int64
	)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 250 {
				m := brokertest.NewMessage("order.created")
				m.Key = m.ID
				pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
				err := b.Publish(pctx, m)
				pcancel()
				sent.Add(1)
				mu.Lock()
				if err == nil {
					acked = append(acked, m.ID)
				} else {
					failed++
				}
				mu.Unlock()
			}
		})
	}
	waitFor(t, 30*time.Second, "some progress", func() bool { return sent.Load() >= 300 })
	victim := c.ln.get(1)
	victim.cut(true)
	time.Sleep(2 * time.Second) // the outage lasts a while; the test waits on no state here
	victim.refusing.Store(false)
	wg.Wait()

	got, err := c.readBack(ctx, t, acked, topic)
	require.NoError(t, err, "every acknowledged record is stored")
	t.Logf("published=2000 acked=%d failed=%d found=%d", len(acked), failed, len(got))
	assert.Zero(t, failed, "with a 30s ctx the producer rides out a 2s broker outage")
}

func TestUnreachable(t *testing.T) {
	checkNoLeak(t)
	topic := uniqueTopic()
	c := newCluster(t, []string{topic})
	c.needFake(t)
	b := c.open(t, topic, kafka.WithLogger(discardLogger()))
	ctx := context.Background()
	require.NoError(t, b.Publish(ctx, brokertest.NewMessage("order.created")))

	c.ln.each(func(l *faultListener) { l.cut(true) })
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	err := b.Publish(short, brokertest.NewMessage("order.created"))
	cancel()
	require.Error(t, err)
	assert.ErrorIs(t, err, broker.ErrUnavailable)
	assert.True(t, broker.IsRetryable(err))

	long, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	m := brokertest.NewMessage("order.created")
	go func() { done <- b.Publish(long, m) }()
	time.Sleep(time.Second) // outage length; nothing waits on it
	c.ln.each(func(l *faultListener) { l.refusing.Store(false) })
	require.NoError(t, <-done, "the producer recovers when the cluster returns")
}

func TestUnreachableAtStart(t *testing.T) {
	checkNoLeak(t)
	cfg := broker.DefaultConfig()
	cfg.Type = broker.Kafka
	cfg.Addresses = []string{"127.0.0.1:1"}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	_, err := kafka.New(ctx, cfg, kafka.WithLogger(discardLogger()), kafka.WithConnectBackoff(50*time.Millisecond, 100*time.Millisecond))
	require.Error(t, err)
	assert.ErrorIs(t, err, broker.ErrUnavailable)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 5*time.Second)
}

func TestSaramaConfigValidation(t *testing.T) {
	c := newCluster(t, []string{"orders.events"})
	tests := []struct {
		name    string
		mutate  func(*sarama.Config)
		mention string
	}{
		{"acks=1", func(s *sarama.Config) { s.Producer.RequiredAcks = sarama.WaitForLocal }, "sarama.WaitForAll"},
		{"idempotent with 5 open requests", func(s *sarama.Config) {
			s.Producer.RequiredAcks = sarama.WaitForAll
			s.Producer.Idempotent = true
			s.Net.MaxOpenRequests = 5
		}, "MaxOpenRequests"},
		{"idempotent on an old version", func(s *sarama.Config) {
			s.Producer.RequiredAcks = sarama.WaitForAll
			s.Producer.Idempotent = true
			s.Net.MaxOpenRequests = 1
			s.Version = sarama.V0_10_2_0
		}, "V0_11_0_0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc := sarama.NewConfig()
			tt.mutate(sc)
			_, err := kafka.New(context.Background(), c.config("orders.events"), kafka.WithSaramaConfig(sc))
			require.Error(t, err)
			assert.ErrorIs(t, err, broker.ErrInvalid)
			assert.Contains(t, err.Error(), tt.mention)
		})
	}

	// A durable caller config works.
	sc := sarama.NewConfig()
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Compression = sarama.CompressionZSTD
	b := c.open(t, "orders.events", kafka.WithSaramaConfig(sc))
	require.NoError(t, b.Publish(context.Background(), brokertest.NewMessage("order.created")))
}

func TestSASL(t *testing.T) {
	for _, mech := range []string{kafka.SASLPlain, kafka.SASLSCRAMSHA256, kafka.SASLSCRAMSHA512} {
		t.Run(mech, func(t *testing.T) {
			c := newCluster(t, []string{"orders.events"}, kfake.EnableSASL(), kfake.Superuser(mech, "svc", "s3cret-pass"))
			c.needFake(t)
			cfg := c.config("orders.events")
			cfg.Username, cfg.Password = "svc", broker.NewSecret("s3cret-pass")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			b, err := kafka.New(ctx, cfg, kafka.WithSASL(mech), kafka.WithLogger(testLogger(t)))
			require.NoError(t, err)
			require.NoError(t, b.Publish(ctx, brokertest.NewMessage("order.created")))
			require.NoError(t, b.Close(ctx))

			// A real broker answers a bad password with SASL_AUTHENTICATION_FAILED
			// (58) before closing; kfake only closes. Answer as Kafka does.
			c.fake.ControlKey(int16(kmsg.SASLAuthenticate), func(req kmsg.Request) (kmsg.Response, error, bool) {
				c.fake.KeepControl()
				resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
				resp.ErrorCode = int16(sarama.ErrSASLAuthenticationFailed)
				msg := "Authentication failed during authentication due to invalid credentials with SASL mechanism " + mech
				resp.ErrorMessage = &msg
				return resp, nil, true
			})
			cfg.Password = broker.NewSecret("hunter2-wrong")
			start := time.Now()
			_, err = kafka.New(ctx, cfg, kafka.WithSASL(mech), kafka.WithLogger(testLogger(t)))
			require.Error(t, err)
			assert.ErrorIs(t, err, broker.ErrUnauthorized)
			assert.False(t, broker.IsRetryable(err))
			assert.NotContains(t, err.Error(), "hunter2")
			assert.Less(t, time.Since(start), 5*time.Second, "an auth failure is not retried until the deadline")
		})
	}
	_, err := kafka.New(context.Background(), broker.DefaultConfig(), kafka.WithSASL("GSSAPI"))
	assert.ErrorIs(t, err, broker.ErrInvalid)
}
