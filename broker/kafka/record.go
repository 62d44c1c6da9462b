package kafka

import (
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/adapter"
)

// Record header keys set on every record.
const (
	HeaderName        = "event-name"
	HeaderID          = "event-id"
	HeaderContentType = "content-type"
)

// The header keys and the common content type as bytes, shared by every
// record: sarama only reads them, and converting per record cost three or
// four allocations per message.
var (
	keyName        = []byte(HeaderName)
	keyID          = []byte(HeaderID)
	keyContentType = []byte(HeaderContentType)
	valueJSON      = []byte(broker.ContentTypeJSON)
)

// contentType is ct as header bytes, shared when it is the common one.
func contentType(ct string) []byte {
	if ct == broker.ContentTypeJSON {
		return valueJSON
	}
	return []byte(ct)
}

// record maps msg onto a Kafka record (see the package doc), its outcome
// to be sent on res.
func (b *Broker) record(msg broker.Message, res result) *sarama.ProducerMessage {
	topic := b.topic
	if b.opts.topicPerEvent {
		topic = msg.Name
	}
	n := 3 + len(msg.Headers)
	if b.opts.ceSource != "" {
		n += 6
	}
	headers := make([]sarama.RecordHeader, 0, n)
	headers = append(headers,
		sarama.RecordHeader{Key: keyName, Value: []byte(msg.Name)},
		sarama.RecordHeader{Key: keyID, Value: []byte(msg.ID)})
	if msg.ContentType != "" {
		headers = append(headers, sarama.RecordHeader{Key: keyContentType, Value: contentType(msg.ContentType)})
	}
	if b.opts.ceSource != "" {
		t := msg.Time
		if t.IsZero() {
			t = time.Now()
		}
		broker.CloudEventsHeaders(broker.CloudEventsPrefixKafka, b.opts.ceSource, msg, t, func(k, v string) {
			headers = append(headers, sarama.RecordHeader{Key: []byte(k), Value: []byte(v)})
		})
	}
	if len(msg.Headers) > 0 {
		keys := make([]string, 0, len(msg.Headers))
		for k := range msg.Headers {
			if b.opts.ceSource != "" && broker.WrittenByCloudEventsHeaders(broker.CloudEventsPrefixKafka, k) {
				continue // written above, from the message's fields
			}
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			headers = append(headers, sarama.RecordHeader{Key: []byte(k), Value: []byte(msg.Headers[k])})
		}
	}
	pm := &sarama.ProducerMessage{
		Topic:     topic,
		Value:     sarama.ByteEncoder(msg.Body),
		Headers:   headers,
		Timestamp: msg.Time,
		Metadata:  res,
	}
	if msg.Key != "" {
		pm.Key = sarama.StringEncoder(msg.Key)
	}
	return pm
}

// toDelivery maps a consumed record back onto a message: the inverse of
// record.
func toDelivery(m *sarama.ConsumerMessage, group string) broker.Delivery {
	msg := broker.Message{Key: string(m.Key), Body: m.Value, Time: m.Timestamp}
	for _, h := range m.Headers {
		if h == nil {
			continue
		}
		switch string(h.Key) { // compared without a conversion
		case HeaderName:
			msg.Name = intern(h.Value)
		case HeaderID:
			msg.ID = string(h.Value)
		case HeaderContentType:
			msg.ContentType = intern(h.Value)
		default:
			if msg.Headers == nil {
				msg.Headers = map[string]string{}
			}
			msg.Headers[string(h.Key)] = string(h.Value)
		}
	}
	if msg.Headers != nil {
		// A CloudEvent in binary mode (sdk-go's Kafka binding): its
		// attributes fill what this library's headers did not.
		broker.FromCloudEvents(&msg, broker.CloudEventsPrefixKafka)
	}
	return broker.Delivery{Message: msg, Attempt: 1, Seq: adapter.SeqOf(msg.Headers), Source: source(m),
		Origin: broker.Origin{System: "kafka", Destination: m.Topic, Partition: m.Partition, Offset: m.Offset, ConsumerGroup: group}}
}

// interned holds the event names and content types consumed, so that the
// records of one name share a string instead of allocating one each (a
// topic carries few names). Past maxInterned distinct values, new ones are
// allocated as before: a topic with unbounded names cannot grow it.
var interned struct {
	sync.RWMutex
	m map[string]string
}

const maxInterned = 1024

// intern returns b as a string, shared with earlier calls for the same bytes.
func intern(b []byte) string {
	interned.RLock()
	s, ok := interned.m[string(b)] // the lookup does not allocate
	interned.RUnlock()
	if ok {
		return s
	}
	s = string(b)
	interned.Lock()
	if interned.m == nil {
		interned.m = make(map[string]string)
	}
	if len(interned.m) < maxInterned {
		interned.m[s] = s
	}
	interned.Unlock()
	return s
}

// source is "topic <topic>[<partition>]@<offset>", built without fmt (it
// is made for every record consumed).
func source(m *sarama.ConsumerMessage) string {
	var b strings.Builder
	var num [20]byte
	b.Grow(len("topic []@") + len(m.Topic) + 2*len(num))
	b.WriteString("topic ")
	b.WriteString(m.Topic)
	b.WriteByte('[')
	b.Write(strconv.AppendInt(num[:0], int64(m.Partition), 10))
	b.WriteString("]@")
	b.Write(strconv.AppendInt(num[:0], m.Offset, 10))
	return b.String()
}

// Describe says where Publish sends m: the topic (the event name with
// WithTopicPerEvent). It implements broker.Describer.
func (b *Broker) Describe(m broker.Message) broker.Destination {
	topic := b.topic
	if b.opts.topicPerEvent {
		topic = m.Name
	}
	return broker.Destination{System: "kafka", Name: topic}
}
