package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/google/uuid"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/kafka"
)

// kafkaConsumers are the consume-kafka contenders. A consumer group
// handles each partition's records one at a time, in order, in all three
// (our subscriber has no other mode, Watermill's hands a partition's next
// message over after the last one's Ack, and the raw group marks offsets in
// order), so the unit of concurrency is the partition: a run at c consumers
// uses a topic of c partitions.
func kafkaConsumers() []consumeContender {
	perPartition := func(c int) int { return c }
	return []consumeContender{
		kafkaConsumer("domainevents", ourHeaders, perPartition, idKey, startOursKafka),
		kafkaConsumer("raw-sarama-group", ourHeaders, perPartition, idKey, startSaramaGroup),
		kafkaConsumer("watermill-kafka", watermillHeaders, perPartition, idKey, startWatermillKafka),
	}
}

// The keyed suites put every record in one partition, keyed by 1,000
// order ids, and run c handlers inside that partition: ours with
// WithConcurrency(c) (never two of one key at once, each key in order,
// offsets committed up to the lowest record not finished) against a raw
// sarama consumer group that hands the partition's records to c
// goroutines with no order at all and marks each offset after its handler
// (sarama keeps the highest mark: a crash may skip unfinished records).
// consume-keyed-kafka has a no-op handler; consume-slow-kafka a 2 ms one
// (a database write), where concurrency inside the partition is what
// counts (c = 16 against c = 1), on min(-prefill, 2,500 × c) events.
func kafkaKeyedConsumers(handle func()) []consumeContender {
	one := func(int) int { return 1 }
	return []consumeContender{
		kafkaConsumer("domainevents-ordered", ourHeaders, one, orderKey, func(topic, group string, c int, seen func(string)) (func() error, error) {
			return startOursKafkaOrdered(topic, group, c, handle, seen)
		}),
		kafkaConsumer("raw-sarama-unordered", ourHeaders, one, orderKey, func(topic, group string, c int, seen func(string)) (func() error, error) {
			return startSaramaUnordered(topic, group, c, handle, seen)
		}),
	}
}

// The handlers of the keyed suites.
func noop()        {}
func slowHandler() { time.Sleep(2 * time.Millisecond) }

// slowEvents is how many events a consume-slow-kafka run drains at
// handler concurrency c: about 5 s of 2 ms handlers.
func slowEvents(prefill, c int) int { return min(prefill, 2500*c) }

func init() {
	consumeSuites["consume-keyed-kafka"] = func() []consumeContender { return kafkaKeyedConsumers(noop) }
	consumeSuites["consume-slow-kafka"] = func() []consumeContender { return kafkaKeyedConsumers(slowHandler) }
	baseline["consume-keyed-kafka"] = "raw-sarama-unordered"
	baseline["consume-slow-kafka"] = "raw-sarama-unordered"
}

// consumeKafkaKeyedContenders are the contenders of consume-keyed-kafka
// and consume-slow-kafka (the same two, with another handler).
func consumeKafkaKeyedContenders() []contender { return asContenders(kafkaKeyedConsumers(noop)) }

// idKey keys each record by its id (a key per record); orderKey by one of
// 1,000 order ids, so that the keyed suites' lanes see repeated keys.
func idKey(id string, _ int) string   { return id }
func orderKey(_ string, i int) string { return "order-" + strconv.Itoa(i%1000) }

// ourHeaders are the record headers our publisher writes (kafka.Header*).
func ourHeaders(id string) []sarama.RecordHeader { return headers(id) }

// watermillHeaders is what Watermill's DefaultMarshaler writes.
func watermillHeaders(id string) []sarama.RecordHeader {
	return []sarama.RecordHeader{{Key: []byte(wmkafka.UUIDHeaderKey), Value: []byte(id)}}
}

type kafkaStart func(topic, group string, c int, seen func(string)) (func() error, error)

// kafkaConsumer is a contender on a fresh topic of partitions(c)
// partitions, whose records carry shape's headers and key(id, i) as key.
func kafkaConsumer(name string, shape func(string) []sarama.RecordHeader, partitions func(c int) int, key func(id string, i int) string, start kafkaStart) consumeContender {
	return consumeContender{name: name, setup: func(ctx context.Context, c int) (*consumeRun, error) {
		id := uuid.NewString()[:8]
		topic, group := "bench."+id, "bench-group."+id
		np := partitions(c)
		sc := sarama.NewConfig()
		sc.Version = sarama.DefaultVersion
		admin, err := sarama.NewClusterAdmin(kafkaAddrs(), sc)
		if err != nil {
			return nil, err
		}
		for t, n := range map[string]int32{topic: int32(np), topic + ".dlq": 1} { // our subscriber wants the .dlq topic
			if err := admin.CreateTopic(t, &sarama.TopicDetail{NumPartitions: n, ReplicationFactor: 1}, false); err != nil {
				_ = admin.Close()
				return nil, fmt.Errorf("create topic %s: %w", t, err)
			}
		}
		client, err := sarama.NewClient(kafkaAddrs(), sc)
		if err != nil {
			_ = admin.Close()
			return nil, err
		}
		pc := sarama.NewConfig()
		pc.Version = sarama.DefaultVersion
		pc.Producer.RequiredAcks = sarama.WaitForAll
		pc.Producer.Return.Successes = true
		pc.Producer.Partitioner = sarama.NewMurmur2Partitioner
		prod, err := sarama.NewAsyncProducer(kafkaAddrs(), pc)
		if err != nil {
			_ = client.Close()
			_ = admin.Close()
			return nil, err
		}
		var (
			inflight sync.WaitGroup
			mu       sync.Mutex
			firstErr error
			loops    sync.WaitGroup
		)
		loops.Go(func() {
			for range prod.Successes() {
				inflight.Done()
			}
		})
		loops.Go(func() {
			for e := range prod.Errors() {
				mu.Lock()
				firstErr = cmpOr(firstErr, e.Err)
				mu.Unlock()
				inflight.Done()
			}
		})
		var sent int
		send := func(ctx context.Context, id string) error { // from one goroutine
			inflight.Add(1)
			prod.Input() <- &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(key(id, sent)), Value: sarama.ByteEncoder(body), Headers: shape(id)}
			sent++
			return nil
		}
		flush := func(ctx context.Context) error {
			done := make(chan struct{})
			go func() { inflight.Wait(); close(done) }()
			select {
			case <-done:
			case <-ctx.Done():
				return ctx.Err()
			}
			mu.Lock()
			defer mu.Unlock()
			return firstErr
		}
		parts := make([]int32, np)
		for i := range parts {
			parts[i] = int32(i)
		}
		endOffsets := func() (map[int32]int64, int64, error) {
			ends, total := map[int32]int64{}, int64(0)
			for _, p := range parts {
				off, err := client.GetOffset(topic, p, sarama.OffsetNewest)
				if err != nil {
					return nil, 0, err
				}
				ends[p], total = off, total+off
			}
			return ends, total, nil
		}
		return &consumeRun{
			prefill: func(ctx context.Context, ids []string) error {
				for _, id := range ids {
					_ = send(ctx, id)
				}
				fctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
				defer cancel()
				if err := flush(fctx); err != nil {
					return err
				}
				if _, total, err := endOffsets(); err != nil || total != int64(len(ids)) {
					return fmt.Errorf("topic holds %d, produced %d (%v)", total, len(ids), err)
				}
				return nil
			},
			start: func(_ context.Context, c int, seen func(string)) (func() error, error) {
				return start(topic, group, c, seen)
			},
			paced: send,
			flush: flush,
			verify: func(want int64) string {
				ends, total, err := endOffsets()
				if err != nil {
					return "error: " + err.Error()
				}
				if total != want {
					return fmt.Sprintf("no: topic holds %d, want %d", total, want)
				}
				resp, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: parts})
				if err != nil {
					return "error: " + err.Error()
				}
				for _, p := range parts {
					b := resp.GetBlock(topic, p)
					if b == nil || b.Offset != ends[p] {
						committed := int64(-1)
						if b != nil {
							committed = b.Offset
						}
						return fmt.Sprintf("no: partition %d committed %d, end %d", p, committed, ends[p])
					}
				}
				return "yes"
			},
			teardown: func() {
				prod.AsyncClose()
				loops.Wait()
				_ = admin.DeleteTopic(topic) // kfake keeps records in memory
				_ = admin.DeleteTopic(topic + ".dlq")
				_ = client.Close()
				_ = admin.Close()
			},
		}, nil
	}}
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func startOursKafka(topic, group string, _ int, seen func(string)) (func() error, error) {
	cfg := broker.DefaultConfig()
	cfg.Type, cfg.Addresses, cfg.Topic = broker.Kafka, kafkaAddrs(), topic
	s, err := kafka.NewSubscriber(context.Background(), cfg, group,
		func(_ context.Context, d broker.Delivery) error { seen(d.ID); return nil }, kafka.WithLogger(quiet()))
	if err != nil {
		return nil, err
	}
	return closeWithin(s.Close), nil
}

// startOursKafkaOrdered: our subscriber with WithConcurrency(c).
func startOursKafkaOrdered(topic, group string, c int, handle func(), seen func(string)) (func() error, error) {
	cfg := broker.DefaultConfig()
	cfg.Type, cfg.Addresses, cfg.Topic = broker.Kafka, kafkaAddrs(), topic
	s, err := kafka.NewSubscriber(context.Background(), cfg, group,
		func(_ context.Context, d broker.Delivery) error { handle(); seen(d.ID); return nil },
		kafka.WithLogger(quiet()), kafka.WithConcurrency(c))
	if err != nil {
		return nil, err
	}
	return closeWithin(s.Close), nil
}

// startSaramaUnordered: a sarama ConsumerGroup from the oldest offset
// whose claim hands each record to one of c goroutines (a channel of 64,
// our lanes' fetch-ahead) that handle it and mark it, in whatever order
// they finish; sarama's auto-commit (every second, and on Close).
func startSaramaUnordered(topic, group string, c int, handle func(), seen func(string)) (func() error, error) {
	sc := sarama.NewConfig()
	sc.Version = sarama.DefaultVersion
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	g, err := sarama.NewConsumerGroup(kafkaAddrs(), group, sc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		for {
			err := g.Consume(ctx, []string{topic}, rawUnordered{c: c, handle: handle, seen: seen})
			if ctx.Err() != nil || errors.Is(err, sarama.ErrClosedConsumerGroup) {
				done <- nil
				return
			}
			if err != nil {
				done <- err
				return
			}
		}
	}()
	return func() error {
		cancel()
		err := <-done
		return errors.Join(err, g.Close())
	}, nil
}

type rawUnordered struct {
	c      int
	handle func()
	seen   func(string)
}

func (rawUnordered) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (rawUnordered) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h rawUnordered) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	work := make(chan *sarama.ConsumerMessage, 64)
	var wg sync.WaitGroup
	for range h.c {
		wg.Go(func() {
			for m := range work {
				h.handle()
				for _, hd := range m.Headers {
					if string(hd.Key) == kafka.HeaderID {
						h.seen(string(hd.Value))
					}
				}
				sess.MarkMessage(m, "")
			}
		})
	}
	defer func() { close(work); wg.Wait() }()
	for {
		select {
		case m, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			select {
			case work <- m:
			case <-sess.Context().Done():
				return nil
			}
		case <-sess.Context().Done():
			return nil
		}
	}
}

// startSaramaGroup: a sarama ConsumerGroup from the oldest offset, one
// goroutine per claimed partition, MarkMessage after the handler, sarama's
// auto-commit (every second, and on Close).
func startSaramaGroup(topic, group string, _ int, seen func(string)) (func() error, error) {
	sc := sarama.NewConfig()
	sc.Version = sarama.DefaultVersion
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	g, err := sarama.NewConsumerGroup(kafkaAddrs(), group, sc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		for {
			err := g.Consume(ctx, []string{topic}, rawGroup{seen})
			if ctx.Err() != nil || errors.Is(err, sarama.ErrClosedConsumerGroup) {
				done <- nil
				return
			}
			if err != nil {
				done <- err
				return
			}
		}
	}()
	return func() error {
		cancel()
		err := <-done
		return errors.Join(err, g.Close()) // commits what was marked
	}, nil
}

type rawGroup struct{ seen func(string) }

func (rawGroup) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (rawGroup) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h rawGroup) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case m, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			for _, hd := range m.Headers {
				if string(hd.Key) == kafka.HeaderID {
					h.seen(string(hd.Value))
				}
			}
			sess.MarkMessage(m, "")
		case <-sess.Context().Done():
			return nil
		}
	}
}

// startWatermillKafka: Watermill's subscriber in a consumer group, its
// default sarama config except the start (oldest, as the others; its
// default is the newest). It hands each partition's next message over
// after the Ack of the last.
func startWatermillKafka(topic, group string, c int, seen func(string)) (func() error, error) {
	sc := wmkafka.DefaultSaramaSubscriberConfig()
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	sub, err := wmkafka.NewSubscriber(wmkafka.SubscriberConfig{Brokers: kafkaAddrs(), Unmarshaler: wmkafka.DefaultMarshaler{},
		OverwriteSaramaConfig: sc, ConsumerGroup: group}, watermill.NopLogger{})
	if err != nil {
		return nil, err
	}
	msgs, err := sub.Subscribe(context.Background(), topic)
	if err != nil {
		_ = sub.Close()
		return nil, err
	}
	var wg sync.WaitGroup
	for range c { // one reader per partition
		wg.Go(func() {
			for m := range msgs {
				seen(m.UUID)
				m.Ack()
			}
		})
	}
	return func() error {
		err := sub.Close()
		wg.Wait()
		return err
	}, nil
}
