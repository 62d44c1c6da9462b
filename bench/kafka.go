package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/kafka"
)

const kafkaPartitions = 3

// serveKfakeCluster runs a kfake cluster and prints its addresses, until
// stdin closes. Without store, produce storage is off (the broker must not
// be the bottleneck; offsets still advance, which verifies counts); the
// consume suite stores records to read them back.
func serveKfakeCluster(store bool) {
	opts := []kfake.Opt{kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(kafkaPartitions)}
	if !store { // publish suites: nothing reads the records back
		opts = append(opts, kfake.BlackholeProduce())
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(strings.Join(c.ListenAddrs(), ","))
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	c.Close()
}

// startKfake starts the cluster in a child process, so that its work and
// memory are not counted against the contenders.
func startKfake(self string, store bool) (addrs string, pid int, stop func(), err error) {
	cmd := exec.Command(self, "-serve-kfake", "-kfake-store="+strconv.FormatBool(store))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", 0, nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", 0, nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", 0, nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		return "", 0, nil, fmt.Errorf("kfake did not start: %w", err)
	}
	return strings.TrimSpace(line), cmd.Process.Pid, func() { _ = stdin.Close(); _ = cmd.Wait() }, nil
}

func kafkaAddrs() []string { return strings.Split(os.Getenv("BENCH_KAFKA"), ",") }

// kafkaContender gives each run a fresh topic and verifies that the topic's
// offsets add up to the acknowledged count.
func kafkaContender(name string, open func(topic string) (func(context.Context) error, func(), error)) contender {
	return contender{name: name, setup: func(context.Context) (func(context.Context) error, func(int64) string, func(), error) {
		topic := "bench." + uuid.NewString()[:8]
		admin, err := sarama.NewClient(kafkaAddrs(), sarama.NewConfig())
		if err != nil {
			return nil, nil, nil, err
		}
		if _, err := admin.Partitions(topic); err != nil { // auto-creates it
			return nil, nil, nil, err
		}
		publish, closeFn, err := open(topic)
		if err != nil {
			_ = admin.Close()
			return nil, nil, nil, err
		}
		verify := func(acked int64) string {
			closeFn() // flush before counting
			var total int64
			for p := range int32(kafkaPartitions) {
				off, err := admin.GetOffset(topic, p, sarama.OffsetNewest)
				if err != nil {
					return "error: " + err.Error()
				}
				total += off
			}
			if total != acked {
				return fmt.Sprintf("no: topic holds %d, acknowledged %d", total, acked)
			}
			return "yes"
		}
		return publish, verify, func() { _ = admin.Close() }, nil
	}}
}

func durableSarama() *sarama.Config {
	sc := sarama.NewConfig()
	sc.Version = sarama.DefaultVersion
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Idempotent = true
	sc.Net.MaxOpenRequests = 1
	sc.Producer.Return.Successes = true
	sc.Producer.Partitioner = sarama.NewMurmur2Partitioner
	return sc
}

func headers(id string) []sarama.RecordHeader {
	return []sarama.RecordHeader{{Key: []byte("event-name"), Value: []byte("order.created")},
		{Key: []byte("event-id"), Value: []byte(id)}, {Key: []byte("content-type"), Value: []byte(broker.ContentTypeJSON)}}
}

func kafkaContenders() []contender {
	return []contender{
		kafkaContender("domainevents", func(topic string) (func(context.Context) error, func(), error) {
			cfg := broker.DefaultConfig()
			cfg.Type, cfg.Addresses, cfg.Topic = broker.Kafka, kafkaAddrs(), topic
			b, err := kafka.New(context.Background(), cfg, kafka.WithLogger(quiet()))
			if err != nil {
				return nil, nil, err
			}
			var once sync.Once
			return func(ctx context.Context) error {
					id := uuid.NewString()
					return b.Publish(ctx, broker.Message{ID: id, Name: "order.created", Key: id, Body: body, ContentType: broker.ContentTypeJSON})
				}, func() {
					once.Do(func() {
						ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
						defer cancel()
						_ = b.Close(ctx)
					})
				}, nil
		}),
		kafkaContender("raw-sarama-async", func(topic string) (func(context.Context) error, func(), error) {
			prod, err := sarama.NewAsyncProducer(kafkaAddrs(), durableSarama())
			if err != nil {
				return nil, nil, err
			}
			var loops sync.WaitGroup
			loops.Go(func() {
				for m := range prod.Successes() {
					m.Metadata.(chan error) <- nil
				}
			})
			loops.Go(func() {
				for e := range prod.Errors() {
					e.Msg.Metadata.(chan error) <- e.Err
				}
			})
			var once sync.Once
			return func(context.Context) error {
					id := uuid.NewString()
					res := make(chan error, 1)
					prod.Input() <- &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(id), Value: sarama.ByteEncoder(body),
						Headers: headers(id), Metadata: res}
					return <-res
				}, func() {
					once.Do(func() { prod.AsyncClose(); loops.Wait() })
				}, nil
		}),
		kafkaContender("raw-sarama-sync", func(topic string) (func(context.Context) error, func(), error) {
			prod, err := sarama.NewSyncProducer(kafkaAddrs(), durableSarama())
			if err != nil {
				return nil, nil, err
			}
			var once sync.Once
			return func(context.Context) error {
					id := uuid.NewString()
					_, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(id),
						Value: sarama.ByteEncoder(body), Headers: headers(id)})
					return err
				}, func() {
					once.Do(func() { _ = prod.Close() })
				}, nil
		}),
		watermillKafka("watermill-kafka", nil),
		watermillKafka("watermill-kafka-acks-all", durableWatermill()),
	}
}

func durableWatermill() *sarama.Config {
	sc := wmkafka.DefaultSaramaSyncPublisherConfig()
	sc.Version = sarama.DefaultVersion
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Idempotent = true
	sc.Net.MaxOpenRequests = 1
	return sc
}

func watermillKafka(name string, sc *sarama.Config) contender {
	return kafkaContender(name, func(topic string) (func(context.Context) error, func(), error) {
		pub, err := wmkafka.NewPublisher(wmkafka.PublisherConfig{Brokers: kafkaAddrs(), Marshaler: wmkafka.DefaultMarshaler{},
			OverwriteSaramaConfig: sc}, watermill.NopLogger{})
		if err != nil {
			return nil, nil, err
		}
		var once sync.Once
		return func(context.Context) error {
			return pub.Publish(topic, message.NewMessage(watermill.NewUUID(), body))
		}, func() { once.Do(func() { _ = pub.Close() }) }, nil
	})
}
