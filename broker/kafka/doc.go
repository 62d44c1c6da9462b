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
// key order. A consumed record's broker.HeaderSeq header (the outbox's
// per-key sequence number) is also read into Delivery.Seq.
//
// # CloudEvents
//
// With a source ([WithCloudEvents], or Config.CloudEventsSource from
// MESSAGE_BROKER_CLOUDEVENTS_SOURCE) records are also CloudEvents in
// binary content mode exactly as cloudevents/sdk-go's Kafka (sarama)
// binding writes them: after the headers above come ce_id, ce_source,
// ce_specversion ("1.0"), ce_type (the event name), ce_time (RFC 3339
// UTC) and ce_partitionkey (the key, which is also the record key); the
// content-type header is the data's media type and the value, the data,
// stays this library's envelope. The subscriber reads a record with a
// ce_specversion header as a CloudEvent, whoever published it: ce_id,
// ce_type and the record key (or ce_partitionkey) fill Delivery.ID, Name
// and Key where this library's headers are absent, ce_time the Time; the
// ce_ headers stay in Delivery.Headers. Mapping and interop tests:
// docs/cloudevents.md.
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
// sarama.DefaultVersion. Publish returns nil only when the cluster
// acknowledged the record with acks=all.
//
// Concurrent Publish calls are pipelined through one sarama AsyncProducer,
// which batches whatever accumulates while a request is in flight; each
// caller waits only for its own record. A ctx already done returns
// ctx.Err() as is. A ctx that ends before the record was handed to the
// producer (only possible while [WithLazyConnect] is connecting: once it
// exists, sarama's producer takes every record and buffers it) returns an
// error matching broker.ErrUnavailable and ctx.Err(): not sent. A ctx that
// ends after the hand-over returns one that also matches
// broker.ErrOutcomeUnknown: the producer keeps the record and may still
// write it, so a retry may duplicate it (consumers deduplicate on the id).
//
// # Errors
//
// One table maps sarama errors: leader elections, too few in-sync replicas,
// timeouts and network failures are broker.ErrUnavailable (retryable);
// MESSAGE_TOO_LARGE broker.ErrTooLarge; authorization and SASL failures
// broker.ErrUnauthorized; an unknown topic broker.ErrUnroutable (naming the
// topic); invalid records broker.ErrInvalid; any other broker refusal
// broker.ErrRejected. errors.Is reaches the sarama.KError. Every error is a
// *broker.Error whose Op is "kafka: <operation>" (connect, publish,
// subscribe, consume, close, options, config, dead-letter); what it
// concerned (topic, addresses, record id) is in the text.
//
// New checks that the topic exists (a clear error otherwise), and retries
// reaching the cluster until its ctx ends. A caller's *sarama.Config
// ([WithSaramaConfig]) is checked for durability, with errors that say which
// field to change.
//
// # Options per role
//
// [New] takes [PublisherOption], [NewSubscriber] takes [SubscriberOption],
// [NewDeadLetterSink] takes [Option]. An Option configures the connection
// and is both; an option of one role given to the other constructor does
// not compile.
//
//	option               New   NewSubscriber  NewDeadLetterSink  default
//	WithLogger           yes   yes            yes                slog.Default()
//	WithObserver         yes   yes            yes                none
//	WithTLS              yes   yes            yes                off (MESSAGE_BROKER_TLS=true: on)
//	WithSASL             yes   yes            yes                off
//	WithSaramaConfig     yes   yes            yes                acks=all, idempotent
//	WithConnectBackoff   yes   yes            yes                100ms, 5s
//	WithLazyConnect      yes   yes            yes                off
//	WithFNVPartitioner   yes   -              -                  murmur2
//	WithTopicPerEvent    yes   -              -                  one topic
//	WithCloudEvents      yes   -              -                  MESSAGE_BROKER_CLOUDEVENTS_SOURCE (empty: off)
//	WithConcurrency      -     yes            -                  1 per partition
//	WithMaxAttempts      -     yes            -                  5
//	WithRetryBackoff     -     yes            -                  100ms, 5s
//	WithStartAtNewest    -     yes            -                  oldest
//
// Every backoff is exponential with full jitter: the n-th wait (n from 0)
// is a random draw up to min(max, first·2^n).
//
// # Starting while the cluster is down
//
// By default New and NewSubscriber wait until connected (or their ctx
// ends), and fail at once on errors retrying cannot heal (authentication,
// configuration, a missing topic). With [WithLazyConnect] they return as
// soon as their configuration is checked and connect in the background with
// [WithConnectBackoff], logging the first failure at Warn and then at most
// every 30 seconds, and reporting broker.ObservedDisconnected and
// broker.ObservedConnected to [WithObserver]. Meanwhile Publish waits for
// the connection up to its ctx (then: not sent, as above), the subscriber
// consumes nothing, and Health says why.
//
// # Health
//
// [Broker.Health] and [Subscriber.Health] (broker.HealthChecker) are what a
// readiness probe calls: nil when connected and able to publish (or
// consume); an error matching broker.ErrUnavailable naming the last error
// while connecting, after a record failed because the cluster could not be
// reached (until one succeeds), or after a failed consumer-group session
// (until the next is set up); broker.ErrClosed after Close. Health sends
// nothing to the cluster: it reports what the adapter last learned.
// [Broker.Stats] and [Subscriber.Stats] count what is in flight.
//
// # Consuming
//
// [NewSubscriber] joins a consumer group on the topic and hands records to
// a broker.Handler. An offset is committed only once every record before
// it is finished: its handler succeeded, or it was dead-lettered to
// "<topic>.dlq" (after [WithMaxAttempts] tries with [WithRetryBackoff]
// between them, or at once for an error matching broker.ErrInvalid) with
// the broker.HeaderDeadLetter* reason headers and where it came from
// ([HeaderOriginalTopic], [HeaderOriginalPartition],
// [HeaderOriginalOffset]). The Observer hears broker.ObservedRetry for each
// retry and broker.ObservedDeadLetter for each dead letter. Delivery is at
// least once: a crash or a rebalance hands the records not yet committed
// to the partition's next owner, which handles them again.
//
// # Concurrency and order
//
// [WithConcurrency](n) runs up to n handler calls at once in each
// partition claimed (default 1), on lanes by record key: never two
// records of one key at once, each key's records in partition order, which
// is the order its producer wrote them (the outbox's per-key sequence,
// Delivery.Seq). Records without a key share one lane per partition: one
// at a time, in partition order. A partition's next 64 records (4 × n when
// more) are fetched while its handlers run.
//
// A failing record holds its key: it is tried again after the backoff,
// Delivery.Attempt one higher, while the key's later records wait and the
// partition's other keys go on; once it is dead-lettered (or handled) the
// key moves on. n = 1 is the same engine with one handler per partition:
// one record at a time, and a key waiting for a retry does not hold up the
// other keys of its partition. (At 1, with an eager rebalance protocol,
// sarama's default, the goroutine reading the partition runs the handler
// itself while no record waits for a retry, sparing a hand-over per
// record.)
//
// Offsets are committed up to the lowest record not yet finished, never
// past it, so a crash loses nothing; what the next owner handles again is
// bounded: at most 1,024 records of a partition (2 × its fetch-ahead when
// more) may be finished above one that is not, beyond which the partition
// waits, plus those finished since the last commit (every second).
//
// A rebalance that takes a partition away stops its fetching, abandons
// its records not yet started or waiting for a retry (the next owner gets
// them), and waits for its running handlers, up to the group's rebalance
// timeout (sarama's Consumer.Group.Rebalance.Timeout, 60 s by default);
// a handler still running then has its ctx cancelled and its record is
// handled again by the next owner. Close waits for them within its ctx.
//
// A dead letter keeps the record's key, value and headers and adds the
// broker.HeaderDeadLetter* reason headers and where it came from
// ([HeaderOriginalTopic], partition, offset). [Redrive] moves dead
// letters back to their topic, selected by name, id or reason, with a dry
// run; the command domainevents runs it ("domainevents dlq redrive").
//
// # Shutdown
//
// [Broker.Close] stops accepting (Publish returns broker.ErrClosed),
// flushes the producer and waits for every outstanding acknowledgement,
// then closes the client. If its ctx ends first it returns ctx.Err(); the
// callers still waiting get an error matching broker.ErrClosed,
// broker.ErrUnavailable and broker.ErrOutcomeUnknown, and the producer
// finishes flushing in the background.
//
// [Subscriber.Close] stops fetching, lets the running handlers finish,
// commits (records not started are left to the group) and leaves the
// group. If its ctx ends first it cancels the
// handlers' ctx and returns ctx.Err() at once, even if a handler ignores
// its ctx: that record is not marked and the group delivers it again.
//
// Both are idempotent: a second Close returns nil.
package kafka
