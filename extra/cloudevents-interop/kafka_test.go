package interop

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/cloudevents/sdk-go/protocol/kafka_sarama/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/domainevents/domainevents/bridge"
	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
	"github.com/domainevents/domainevents/broker/kafka"
	"github.com/domainevents/domainevents/eventbus"
	"github.com/domainevents/domainevents/events"
)

const source = "/orders-service"

// cluster starts an in-process Kafka (kfake) with topic, three partitions.
func cluster(t *testing.T, topic string) broker.Config {
	t.Helper()
	c, err := kfake.NewCluster(kfake.SeedTopics(3, topic, topic+".dlq"))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	cfg := broker.DefaultConfig()
	cfg.Enabled = true
	cfg.Type = broker.Kafka
	cfg.Addresses = c.ListenAddrs()
	cfg.Topic = topic
	cfg.ClientID = "det-ce-" + uuid.NewString()[:8]
	return cfg
}

// orderEvents are one order's three events, as the library encodes them.
func orderEvents(t *testing.T) (orderID string, envs []events.Envelope, msgs []broker.Message) {
	orderID, userID := uuid.NewString(), uuid.NewString()
	for _, e := range []events.Event{
		events.OrderCreated{OrderID: orderID, UserID: userID, Status: events.StatusCreated, Total: events.Cents(12550),
			Items: []events.OrderItem{{ProductID: "sku-1", Quantity: 1, Price: events.Cents(12550)}}},
		events.OrderStatusUpdated{OrderID: orderID, UserID: userID, OldStatus: events.StatusCreated, NewStatus: events.StatusInProgress},
		events.OrderCancelled{OrderID: orderID, UserID: userID, OldStatus: events.StatusInProgress, NewStatus: events.StatusCancelled},
	} {
		env := events.New(e)
		m, err := bridge.MessageFor(env)
		require.NoError(t, err)
		envs, msgs = append(envs, env), append(msgs, m)
	}
	return orderID, envs, msgs
}

// sdk-go's Kafka binding reads what the Kafka adapter publishes with
// WithCloudEvents (and with MESSAGE_BROKER_CLOUDEVENTS_SOURCE): every
// attribute, the data (this library's envelope, which still decodes), the
// partition key, and the record key.
func TestSDKReadsWhatWePublish(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  bool // through Config.CloudEventsSource instead of the option
	}{{"option", false}, {"config", true}} {
		t.Run(tc.name, func(t *testing.T) {
			topic := "det.ce." + uuid.NewString()[:8]
			cfg := cluster(t, topic)
			var opts []kafka.PublisherOption
			if tc.cfg {
				cfg.CloudEventsSource = source
			} else {
				opts = append(opts, kafka.WithCloudEvents(source))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			b, err := kafka.New(ctx, cfg, opts...)
			require.NoError(t, err)
			defer b.Close(context.Background())
			orderID, envs, msgs := orderEvents(t)
			for _, m := range msgs {
				require.NoError(t, b.Publish(ctx, m))
			}

			records := consumeAll(ctx, t, cfg, topic, len(msgs))
			byID := map[string]*event.Event{}
			for _, r := range records {
				msg := kafka_sarama.NewMessageFromConsumerMessage(r)
				require.Equal(t, binding.EncodingBinary, msg.ReadEncoding(), "sdk-go sees binary mode")
				ev, err := binding.ToEvent(ctx, msg)
				require.NoError(t, err)
				require.NoError(t, ev.Validate(), "a valid CloudEvent for sdk-go")
				assert.Equal(t, orderID, string(r.Key), "record key")
				byID[ev.ID()] = ev
			}
			for i, env := range envs {
				ev := byID[env.ID]
				require.NotNil(t, ev, "sdk-go read no event with id %s", env.ID)
				assert.Equal(t, env.ID, ev.ID())
				assert.Equal(t, source, ev.Source())
				assert.Equal(t, "1.0", ev.SpecVersion())
				assert.Equal(t, env.Name, ev.Type())
				assert.True(t, env.Timestamp.Equal(ev.Time()), "time %v, want %v", ev.Time(), env.Timestamp)
				assert.Equal(t, "application/json", ev.DataContentType())
				assert.Equal(t, orderID, ev.Extensions()["partitionkey"])
				assert.Equal(t, msgs[i].Body, ev.Data(), "data: the envelope, unchanged")
				back, err := events.Decode(ev.Data())
				require.NoError(t, err, "the envelope still decodes")
				assert.Equal(t, env.ID, back.ID)
				t.Logf("sdk-go read: id=%s source=%s specversion=%s type=%s time=%s datacontenttype=%s partitionkey=%v data=%d bytes (our envelope)",
					ev.ID(), ev.Source(), ev.SpecVersion(), ev.Type(), ev.Time().Format(time.RFC3339Nano), ev.DataContentType(),
					ev.Extensions()["partitionkey"], len(ev.Data()))
			}
		})
	}
}

// consumeAll reads n records of topic from its start, every partition.
func consumeAll(ctx context.Context, t *testing.T, cfg broker.Config, topic string, n int) []*sarama.ConsumerMessage {
	t.Helper()
	c, err := sarama.NewConsumer(cfg.Addresses, sarama.NewConfig())
	require.NoError(t, err)
	defer c.Close()
	parts, err := c.Partitions(topic)
	require.NoError(t, err)
	out := make(chan *sarama.ConsumerMessage, n)
	for _, p := range parts {
		pc, err := c.ConsumePartition(topic, p, sarama.OffsetOldest)
		require.NoError(t, err)
		defer pc.Close()
		go func() {
			for m := range pc.Messages() {
				select {
				case out <- m:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	var got []*sarama.ConsumerMessage
	for len(got) < n {
		select {
		case m := <-out:
			got = append(got, m)
		case <-ctx.Done():
			t.Fatalf("read %d of %d records: %v", len(got), n, ctx.Err())
		}
	}
	return got
}

// The Kafka subscriber reads what sdk-go's Kafka binding publishes: the
// delivery from the ce_ headers and the record key, the data as the body,
// and through bridge.NewHandler the typed event.
func TestWeReadWhatSDKPublishes(t *testing.T) {
	topic := "det.ce." + uuid.NewString()[:8]
	cfg := cluster(t, topic)
	sc := sarama.NewConfig()
	sc.Producer.Return.Successes = true
	sender, err := kafka_sarama.NewSender(cfg.Addresses, sc, topic)
	require.NoError(t, err)
	defer sender.Close(context.Background())

	orderID, userID := uuid.NewString(), uuid.NewString()
	at := time.Date(2026, 12, 1, 8, 0, 0, 123_456_789, time.UTC)
	ev := event.New()
	ev.SetID(uuid.NewString())
	ev.SetSource("/legacy-orders")
	ev.SetType(events.NameOrderCancelled)
	ev.SetTime(at)
	ev.SetSubject(orderID)
	ev.SetExtension("partitionkey", orderID)
	data := map[string]any{"orderId": orderID, "userId": userID, "oldStatus": "created", "newStatus": "cancelled"}
	require.NoError(t, ev.SetData("application/json", data))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, sender.Send(ctx, binding.ToMessage(&ev)))

	bus := eventbus.New()
	var mu sync.Mutex
	var typed []events.OrderCancelled
	eventbus.Subscribe(bus, func(_ context.Context, e events.OrderCancelled) error {
		mu.Lock()
		defer mu.Unlock()
		typed = append(typed, e)
		return nil
	})
	typedHandler, err := bridge.NewHandler(bus)
	require.NoError(t, err)
	var deliveries []broker.Delivery
	sub, err := kafka.NewSubscriber(ctx, cfg, cfg.ClientID, func(ctx context.Context, d broker.Delivery) error {
		mu.Lock()
		deliveries = append(deliveries, d)
		mu.Unlock()
		return typedHandler(ctx, d)
	}, kafka.WithLogger(brokertest.Logger(t)))
	require.NoError(t, err)
	defer sub.Close(context.Background())
	brokertest.WaitFor(t, 20*time.Second, "the sdk-go event handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(typed) == 1
	})

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, deliveries, 1)
	d := deliveries[0]
	assert.Equal(t, ev.ID(), d.ID, "id from ce_id")
	assert.Equal(t, events.NameOrderCancelled, d.Name, "name from ce_type")
	assert.Equal(t, orderID, d.Key, "key: the record key sdk-go set from partitionkey")
	assert.True(t, at.Equal(d.Time), "time from ce_time: %v", d.Time)
	assert.Equal(t, "application/json", d.ContentType, "content type from content-type")
	assert.Equal(t, "/legacy-orders", d.Headers["ce_source"])
	assert.Equal(t, "1.0", d.Headers["ce_specversion"])
	assert.Equal(t, orderID, d.Headers["ce_subject"])
	var body map[string]any
	require.NoError(t, json.Unmarshal(d.Body, &body))
	assert.Equal(t, data, body, "the body is the data")
	assert.Equal(t, orderID, typed[0].OrderID, "the typed event through bridge.NewHandler")
	assert.Equal(t, events.StatusCancelled, typed[0].NewStatus)
	t.Logf("we read: ID=%s Name=%s Key=%s Time=%s ContentType=%s source=%s subject=%s body=%s",
		d.ID, d.Name, d.Key, d.Time.Format(time.RFC3339Nano), d.ContentType, d.Headers["ce_source"], d.Headers["ce_subject"], d.Body)
}
