// Package kafka is the Kafka adapter of broker.Broker and
// broker.Subscriber, on github.com/IBM/sarama.
//
//	b, err := kafka.New(ctx, cfg) // cfg.Type "kafka": brokers from MESSAGE_BROKER_HOST/PORT or _ADDRESSES
//	...
//	defer b.Close(ctx)
//	err = b.Publish(ctx, msg)
//
// # Record mapping
//
// Topic = Config.Topic (default "orders.events") for every event, so that
// one order's events share a partition and keep their order; with
// [WithTopicPerEvent] the topic is the event name instead. Key =
// Message.Key (the order id); value = Message.Body; record timestamp =
// Message.Time; headers "event-name", "event-id" and "content-type"
// ([HeaderName], [HeaderID], [HeaderContentType]), then Message.Headers in
// key order.
//
// Keys are partitioned as Kafka's Java client and kafkajs do: murmur2 of the
// key, sign bit masked, modulo the partition count (sarama's
// NewMurmur2Partitioner; tested against Kafka's published murmur2 vectors).
// [WithFNVPartitioner] selects sarama's historical FNV-1a partitioner for
// topics written by older sarama producers.
//
// # Delivery semantics
//
// Defaults do not lose data: acks=all (sarama.WaitForAll), the idempotent
// producer (one open request per broker, so retries cannot reorder or
// duplicate), up to 10 retries with exponential backoff and jitter inside
// sarama (retrying outside it would break idempotence), protocol version
// sarama.DefaultVersion (2.8). Publish returns nil only when the cluster
// acknowledged the record with acks=all.
//
// Concurrent Publish calls are pipelined through one sarama AsyncProducer,
// which batches whatever accumulates while a request is in flight; each
// caller waits only for its own record. If ctx ends before the
// acknowledgement, Publish returns an error matching both ctx.Err() and
// broker.ErrUnavailable, and the record may still be written.
//
// # Errors
//
// One table maps sarama errors: leader elections, too few in-sync replicas,
// timeouts and network failures are broker.ErrUnavailable (retryable);
// MESSAGE_TOO_LARGE broker.ErrTooLarge; authorization and SASL failures
// broker.ErrUnauthorized; an unknown topic broker.ErrUnroutable (naming the
// topic); invalid records broker.ErrInvalid; any other broker refusal
// broker.ErrRejected. errors.Is reaches the sarama.KError.
//
// New checks that the topic exists (a clear error otherwise), and retries
// reaching the cluster until its ctx ends. A caller's *sarama.Config
// ([WithSaramaConfig]) is checked for durability, with errors that say which
// field to change.
//
// # Consuming
//
// [NewSubscriber] joins a consumer group on the topic and hands records to
// a broker.Handler, one at a time per partition (their order kept). An
// offset is marked and committed only after its handler succeeded, or after
// the record was dead-lettered to "<topic>.dlq" (after [WithMaxAttempts]
// tries with [WithRetryBackoff] between them, or at once for an error
// matching broker.ErrInvalid). A partition lost during a retry leaves its
// record unmarked, to be handled again by its next owner: at least once.
//
// # Shutdown
//
// Close(ctx) stops accepting (Publish returns broker.ErrClosed), flushes
// the producer and waits for every outstanding acknowledgement, then closes
// the client.
package kafka
