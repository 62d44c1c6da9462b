package kafka

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/IBM/sarama"

	"github.com/domainevents/domainevents/broker"
)

// RedriveGroup is the consumer group whose committed offsets on a
// dead-letter topic mark how far [Redrive] has moved it.
const RedriveGroup = "domainevents-redrive"

const opRedrive = "kafka: redrive"

// Redrive moves the dead letters o selects from the topic dlq
// ("<topic>.dlq", where the subscriber and the dead-letter sink put them)
// back to the topic each was going to ([HeaderOriginalTopic]; without it,
// dlq without its ".dlq" suffix). A moved record keeps its key (so the same
// partition, with the same partitioner), value, timestamp and headers,
// except those saying why and where it died (broker.HeaderDeadLetter*,
// HeaderOriginal*): it goes back as it was first published.
//
// dlq is a log, so Redrive keeps a cursor: the offsets of consumer group
// [RedriveGroup] on dlq. It reads each partition from the cursor (the
// oldest record the first time) up to the end as it was when Redrive
// started, re-produces each selected record (acks=all, idempotent) and,
// once every re-produce of the partition was acknowledged, commits the
// cursor past the records moved. A record not selected (or whose
// re-produce failed) holds the cursor, so that a later run sees it again;
// the records moved beyond it are recorded in the commit's metadata and
// skipped by later runs. At least once: a crash before the commit moves
// the same records again, a duplicate, never a loss. A dry run reads the
// same records, skips those already moved, and commits nothing.
//
// cfg says how to connect; opts are the publisher's connection options
// (SASL, TLS, a sarama config; lazy connect is ignored). A missing dlq is
// an error matching broker.ErrUnroutable; connection failures match
// broker.ErrUnavailable or broker.ErrUnauthorized; bad options
// broker.ErrInvalid. Context errors are returned as they are. The result
// says what was done until then.
func Redrive(ctx context.Context, cfg broker.Config, dlq string, o broker.RedriveOptions, opts ...Option) (broker.RedriveResult, error) {
	var res broker.RedriveResult
	if err := o.Validate(); err != nil {
		return res, err
	}
	if dlq == "" {
		return res, &broker.Error{Op: opRedrive, Kind: broker.ErrInvalid, Err: errors.New("dead-letter topic name is empty")}
	}
	popts := make([]PublisherOption, 0, len(opts))
	for _, opt := range opts {
		popts = append(popts, opt)
	}
	cfg, _, sc, err := publisherSetup(cfg, popts)
	if err != nil {
		return res, err
	}
	sc.Consumer.Return.Errors = true
	sc.Consumer.MaxWaitTime = 50 * time.Millisecond // closing a partition's consumer waits for its fetch
	client, err := dial(ctx, cfg.Addrs(), sc)
	if err != nil {
		return res, err
	}
	defer func() { _ = client.Close() }()
	stop := context.AfterFunc(ctx, func() { _ = client.Close() }) // ctx ends a wait on the cluster
	defer stop()
	if err := checkTopic(client, dlq); err != nil {
		return res, err
	}
	parts, err := client.Partitions(dlq)
	if err != nil {
		return res, wrap(opRedrive, err, "topic %q", dlq)
	}
	r := &redriver{client: client, version: sc.Version, dlq: dlq, opts: o, fallback: strings.TrimSuffix(dlq, ".dlq")}
	if r.fallback == dlq {
		r.fallback = cfg.Topic
	}
	if r.consumer, err = sarama.NewConsumerFromClient(client); err != nil {
		return res, r.fail(ctx, err, "consumer")
	}
	defer func() { _ = r.consumer.Close() }()
	if !o.DryRun {
		if r.producer, err = sarama.NewSyncProducerFromClient(client); err != nil {
			return res, r.fail(ctx, err, "producer")
		}
		defer func() { _ = r.producer.Close() }()
	}
	for _, p := range parts {
		if r.full(&res) {
			break
		}
		if err := r.partition(ctx, p, &res); err != nil {
			return res, err
		}
	}
	return res, nil
}

// dial connects a client, within ctx.
func dial(ctx context.Context, addrs []string, sc *sarama.Config) (sarama.Client, error) {
	c := newConnector("kafka redrive", addrs, "", connOptions{logger: slog.New(slog.DiscardHandler)}, func() (sarama.Client, error) {
		client, err := sarama.NewClient(addrs, sc)
		return client, wrap(opConnect, err, "brokers %v", addrs)
	}, func(c sarama.Client) { _ = c.Close() })
	return c.attempt(ctx)
}

type redriver struct {
	client   sarama.Client
	consumer sarama.Consumer
	producer sarama.SyncProducer
	version  sarama.KafkaVersion
	dlq      string
	fallback string // the topic of a record that does not say
	opts     broker.RedriveOptions
}

// full reports whether the limit of selected records is reached.
func (r *redriver) full(res *broker.RedriveResult) bool {
	return r.opts.Limit > 0 && len(res.Selected) >= r.opts.Limit
}

func (r *redriver) fail(ctx context.Context, err error, format string, args ...any) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return wrap(opRedrive, err, format, args...)
}

// partition moves the selected records of partition p, from the cursor to
// the end as it is now, then commits the cursor.
func (r *redriver) partition(ctx context.Context, p int32, res *broker.RedriveResult) error {
	committed, meta, err := r.cursor(p)
	if err != nil {
		return r.fail(ctx, err, "cursor of group %q on %s[%d]", RedriveGroup, r.dlq, p)
	}
	moved := parseMoved(meta)
	end, err := r.client.GetOffset(r.dlq, p, sarama.OffsetNewest)
	if err != nil {
		return r.fail(ctx, err, "end of %s[%d]", r.dlq, p)
	}
	first, err := r.client.GetOffset(r.dlq, p, sarama.OffsetOldest)
	if err != nil {
		return r.fail(ctx, err, "start of %s[%d]", r.dlq, p)
	}
	cursor := max(committed, first) // what retention deleted is gone
	if cursor >= end {
		return nil
	}
	pc, err := r.consumer.ConsumePartition(r.dlq, p, cursor)
	if err != nil {
		return r.fail(ctx, err, "consume %s[%d]", r.dlq, p)
	}
	defer func() { _ = pc.Close() }()
	// Records are read up to the last one before end. (A partition whose
	// last offsets are transaction markers would never deliver them: this
	// library's producers are not transactional.) The selected ones are
	// re-produced in batches; the cursor then moves over the records
	// moved, up to the first one that is not.
	held := false // a record not moved holds the cursor
	newCursor, atEnd := cursor, false
	var window []readRecord             // read since the last flush, in order
	var batch []*sarama.ProducerMessage // to re-produce
	var owner []int                     // batch[i] is window[owner[i]]'s
	flush := func() {
		r.send(batch, func(i int, err error) {
			w := &window[owner[i]]
			res.Selected[w.item].Err = err
			if err == nil {
				res.Moved++
				w.done = true
				moved[w.offset] = true
			}
		})
		for _, w := range window {
			switch {
			case held:
			case w.done:
				newCursor = w.offset + 1
			default:
				held, newCursor = true, w.offset
			}
		}
		window, batch, owner = window[:0], batch[:0], owner[:0]
	}
	for !atEnd && !r.full(res) {
		var rec *sarama.ConsumerMessage
		select {
		case rec = <-pc.Messages():
		case cerr := <-pc.Errors():
			return r.fail(ctx, cerr, "consume %s[%d]", r.dlq, p)
		case <-ctx.Done():
			return ctx.Err()
		}
		w := readRecord{offset: rec.Offset, done: moved[rec.Offset], item: -1}
		if !w.done {
			res.Scanned++
			item := r.inspect(rec)
			if r.opts.Matches(item.DeadLetter) {
				w.item = len(res.Selected)
				res.Selected = append(res.Selected, item)
				if !r.opts.DryRun {
					owner = append(owner, len(window))
					batch = append(batch, r.record(rec, item.To))
				}
			}
		}
		window = append(window, w)
		atEnd = rec.Offset+1 >= end
		if len(batch) >= redriveBatch {
			flush()
		}
	}
	flush()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if atEnd && !held {
		newCursor = end
	}
	if r.opts.DryRun {
		return nil
	}
	for o := range moved {
		if o < newCursor {
			delete(moved, o)
		}
	}
	if err := r.commit(p, newCursor, formatMoved(moved)); err != nil {
		return r.fail(ctx, err, "commit the cursor of group %q on %s[%d] (the records moved will be moved again by the next run: duplicates)",
			RedriveGroup, r.dlq, p)
	}
	return nil
}

// cursor reads the committed offset of RedriveGroup on partition p and
// its metadata: -1 when none.
func (r *redriver) cursor(p int32) (int64, string, error) {
	coord, err := r.client.Coordinator(RedriveGroup)
	if err != nil {
		return 0, "", err
	}
	resp, err := coord.FetchOffset(sarama.NewOffsetFetchRequest(r.version, RedriveGroup, map[string][]int32{r.dlq: {p}}))
	if err != nil {
		return 0, "", err
	}
	kerr := resp.Err
	block := resp.GetBlock(r.dlq, p)
	if kerr == sarama.ErrNoError && block != nil {
		kerr = block.Err
	}
	switch {
	case kerr == sarama.ErrGroupIDNotFound: // never committed (some brokers say so)
		return -1, "", nil
	case kerr != sarama.ErrNoError:
		return 0, "", kerr
	case block == nil:
		return -1, "", nil
	}
	return block.Offset, block.Metadata, nil
}

// commit stores the cursor of partition p and the moved records beyond it
// (meta), as a consumer outside any group generation does.
func (r *redriver) commit(p int32, offset int64, meta string) error {
	coord, err := r.client.Coordinator(RedriveGroup)
	if err != nil {
		return err
	}
	req := &sarama.OffsetCommitRequest{Version: 2, ConsumerGroup: RedriveGroup, ConsumerGroupGeneration: sarama.GroupGenerationUndefined}
	for _, v := range []struct {
		at      sarama.KafkaVersion
		version int16
	}{{sarama.V0_11_0_0, 3}, {sarama.V2_0_0_0, 4}, {sarama.V2_1_0_0, 6}, {sarama.V2_3_0_0, 7}, {sarama.V2_4_0_0, 8}} {
		if r.version.IsAtLeast(v.at) {
			req.Version = v.version
		}
	}
	req.AddBlock(r.dlq, p, offset, 0, meta)
	resp, err := coord.CommitOffset(req)
	if err != nil {
		return err
	}
	if kerr, ok := resp.Errors[r.dlq][p]; ok && kerr != sarama.ErrNoError {
		return kerr
	}
	return nil
}

// readRecord is a record of the dead-letter topic as a re-drive read it.
type readRecord struct {
	offset int64
	done   bool // moved, now or by an earlier run
	item   int  // its index in the result's Selected, -1 when not selected
}

// redriveBatch is how many records are re-produced at once.
const redriveBatch = 256

// record is the record rec goes back as: its key, value, timestamp and
// headers, without those of the dead letter.
func (r *redriver) record(rec *sarama.ConsumerMessage, to broker.Destination) *sarama.ProducerMessage {
	pm := &sarama.ProducerMessage{Topic: to.Name, Value: sarama.ByteEncoder(rec.Value), Timestamp: rec.Timestamp}
	if rec.Key != nil {
		pm.Key = sarama.ByteEncoder(rec.Key)
	}
	for _, h := range rec.Headers {
		if h != nil && !deadLetterHeader(string(h.Key)) {
			pm.Headers = append(pm.Headers, *h)
		}
	}
	return pm
}

// send produces batch, waits for every acknowledgement and calls done
// with each record's index and outcome.
func (r *redriver) send(batch []*sarama.ProducerMessage, done func(i int, err error)) {
	if len(batch) == 0 {
		return
	}
	err := r.producer.SendMessages(batch)
	failed := map[*sarama.ProducerMessage]error{}
	var perrs sarama.ProducerErrors
	if errors.As(err, &perrs) {
		for _, pe := range perrs {
			failed[pe.Msg] = pe.Err
		}
	}
	for i, pm := range batch {
		ferr, ok := failed[pm]
		if !ok && err != nil && len(perrs) == 0 {
			ferr, ok = err, true // the whole batch failed
		}
		if ok {
			done(i, wrap(opRedrive, ferr, "produce to %q", pm.Topic))
			continue
		}
		done(i, nil)
	}
}

// inspect reads a dead letter and where it goes back to.
func (r *redriver) inspect(rec *sarama.ConsumerMessage) broker.Redriven {
	d := toDelivery(rec, RedriveGroup)
	to := broker.Destination{System: "kafka", Name: r.fallback}
	if t := d.Message.Headers[HeaderOriginalTopic]; t != "" {
		to.Name = t
	}
	dl, _ := broker.ParseDeadLetter(d.Message)
	for k := range dl.Message.Headers {
		if deadLetterHeader(k) {
			delete(dl.Message.Headers, k)
		}
	}
	if len(dl.Message.Headers) == 0 {
		dl.Message.Headers = nil
	}
	return broker.Redriven{DeadLetter: dl, To: to}
}

// deadLetterHeader reports a header a dead letter gained: not re-produced.
func deadLetterHeader(k string) bool {
	return strings.HasPrefix(k, "dead-letter-") || k == HeaderOriginalTopic || k == HeaderOriginalPartition || k == HeaderOriginalOffset
}

// The commit metadata lists the offsets moved beyond the cursor, as
// ranges: "moved:12-15,18". It stays under Kafka's default limit
// (offset.metadata.max.bytes, 4096): past it the highest offsets are left
// out, and moved again by a later run.
const (
	movedPrefix = "moved:"
	maxMetadata = 3000
)

func parseMoved(meta string) map[int64]bool {
	out := map[int64]bool{}
	rest, ok := strings.CutPrefix(meta, movedPrefix)
	if !ok {
		return out
	}
	for r := range strings.SplitSeq(rest, ",") {
		lo, hi, isRange := strings.Cut(r, "-")
		a, err := strconv.ParseInt(lo, 10, 64)
		if err != nil {
			continue
		}
		b := a
		if isRange {
			if b, err = strconv.ParseInt(hi, 10, 64); err != nil || b < a || b-a > 1<<20 {
				continue
			}
		}
		for o := a; o <= b; o++ {
			out[o] = true
		}
	}
	return out
}

func formatMoved(moved map[int64]bool) string {
	if len(moved) == 0 {
		return ""
	}
	offs := make([]int64, 0, len(moved))
	for o := range moved {
		offs = append(offs, o)
	}
	slices.Sort(offs)
	var b strings.Builder
	b.WriteString(movedPrefix)
	for i := 0; i < len(offs); {
		j := i
		for j+1 < len(offs) && offs[j+1] == offs[j]+1 {
			j++
		}
		part := strconv.FormatInt(offs[i], 10)
		if j > i {
			part += "-" + strconv.FormatInt(offs[j], 10)
		}
		if b.Len()+len(part)+1 > maxMetadata {
			break
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(part)
		i = j + 1
	}
	return b.String()
}
