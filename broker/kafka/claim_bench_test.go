package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/brokertest"
)

// BenchmarkClaim measures what a partition's records cost between sarama
// and a no-op handler, on the fake consumer group (no network, no
// decoding): ours at c = 1 and 16 over 1,000 keys, against the least a
// raw claim does (records handed by the claim's goroutine to c goroutines
// through a channel of 64, each turned into a Delivery and marked after
// its handler, in no order). cpu-ns/op is the process's CPU time per
// record, every goroutine and the GC included: on a machine whose cores
// are busy (the broker, sarama's fetching) that, not ns/op, bounds the
// throughput.
func BenchmarkClaim(b *testing.B) {
	records := func(n int) []*sarama.ConsumerMessage {
		ms := make([]*sarama.ConsumerMessage, n)
		for i := range ms {
			m := brokertest.NewMessage("order.created")
			m.Key = fmt.Sprintf("order-%d", i%1000)
			ms[i] = consumerMessage(m, int64(i))
		}
		return ms
	}
	for _, c := range []int{1, 16} {
		b.Run(fmt.Sprintf("ours/c=%d", c), func(b *testing.B) {
			ms := records(b.N)
			var handled atomic.Int64
			all := make(chan struct{})
			g := newFakeGroup()
			g.msgs = make(chan *sarama.ConsumerMessage, 256)
			s, _, _ := fakeSubscriber(b, g, func(context.Context, broker.Delivery) error {
				if handled.Add(1) == int64(b.N) {
					close(all)
				}
				return nil
			}, nil, 3, withConcurrency(c), func(s *Subscriber) { s.log = slog.New(slog.DiscardHandler) })
			b.ReportAllocs()
			b.ResetTimer()
			cpu := cpuTime()
			for _, m := range ms {
				g.msgs <- m
			}
			<-all
			b.StopTimer()
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
			_ = s.Close(context.Background())
		})
		b.Run(fmt.Sprintf("raw/c=%d", c), func(b *testing.B) {
			ms := records(b.N)
			sess := &fakeSession{ctx: context.Background(), g: newFakeGroup()}
			var handled atomic.Int64
			all := make(chan struct{})
			msgs := make(chan *sarama.ConsumerMessage, 256) // the claim's Messages()
			work := make(chan *sarama.ConsumerMessage, 64)
			var wg sync.WaitGroup
			wg.Go(func() { // the claim's goroutine
				defer close(work)
				for m := range msgs {
					work <- m
				}
			})
			for range c {
				wg.Go(func() {
					for m := range work {
						_ = toDelivery(m, "g")
						if handled.Add(1) == int64(b.N) {
							close(all)
						}
						sess.MarkOffset(m.Topic, m.Partition, m.Offset+1, "")
					}
				})
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu := cpuTime()
			for _, m := range ms {
				msgs <- m
			}
			<-all
			b.StopTimer()
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
			close(msgs)
			wg.Wait()
		})
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
