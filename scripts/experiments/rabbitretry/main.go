// Command rabbitretry measures, with raw amqp091-go and no library code,
// what RabbitMQ keeps of messages waiting for a retry when the node is
// SIGKILLed, and whether a quorum queue on a 3-node cluster ever loses a
// confirmed message when the publisher's node is SIGKILLed. It is the
// experiment behind docs/rabbitmq-retry-experiment.md, which holds its
// data; it is not library code.
//
// It never touches the machine's RabbitMQ node on 5672: it drives its own
// nodes through scripts/rabbitmq-cluster.sh, with a private base directory,
// ports and node names (a single throwaway node de-x1@localhost on
// 127.0.0.1:5691 for the retry experiments; the test cluster de-c1..3 on
// 5681-5683 for the cluster experiment).
//
// Usage (from the module root):
//
//	go run ./scripts/experiments/rabbitretry -mode consumer -variant classic-ttl -runs 3
//	go run ./scripts/experiments/rabbitretry -mode park -variant quorum-dlx -runs 3
//	go run ./scripts/experiments/rabbitretry -mode consumer -variant hold-nack -kill=false
//	go run ./scripts/experiments/rabbitretry -mode cluster -runs 3
//	go run ./scripts/experiments/rabbitretry -mode probe
//	go run ./scripts/experiments/rabbitretry -stop   # stop the experiment's node
//
// Modes:
//
//	park      publish n messages (confirmed) into the retry queue, paced
//	          over -window (2×delay); SIGKILL the node at 1.5×delay, while
//	          the queue dead-letters the first messages and the rest is
//	          still being published; restart it, wait until the retry
//	          queue is empty, count the ids in the main queue.
//	consumer  publish n events into the main queue; a consumer fails each
//	          event -fails times and takes the variant's retry path;
//	          SIGKILL the node at delay+window/2 (first copies being
//	          dead-lettered, second copies being parked), restart it,
//	          reconnect, and count the events handled successfully by id.
//	          With -work the handler is slow and a backlog builds up in
//	          the main queue, as it does behind a busy service.
//	cluster   3-node cluster, a quorum queue led by node 1, -publishers
//	          goroutines on one connection to node 1 publishing n confirmed
//	          messages; SIGKILL node 1 when a third are confirmed; the
//	          publishers reconnect to the other nodes and re-send what was
//	          unconfirmed; count every confirmed id in the queue.
//	probe     one message in a quorum queue with x-delivery-limit=5:
//	          x-delivery-count after nack, reject, channel close,
//	          connection close and a SIGKILL of the node; where the
//	          message goes past the limit.
//	fresh     a quorum queue declared -kill-after before a SIGKILL of the
//	          single node (with -variant quorum-dlx: with the at-least-once
//	          dead-letter arguments): does it come back with its confirmed
//	          messages?
//
// Variants (retry paths):
//
//	classic-ttl  today's design: classic main queue; a failed delivery is
//	             re-published (confirmed) to <q>.retry, a classic queue with
//	             x-message-ttl and x-dead-letter-exchange "" / <q>, then the
//	             original is acked.
//	quorum-dlx   the same with quorum queues: <q>.retry has
//	             x-dead-letter-strategy=at-least-once, x-overflow=reject-publish.
//	hold-republish  no broker dead-lettering: the consumer keeps the failed
//	             delivery unacked for the delay, re-publishes it to the main
//	             queue (confirmed), then acks the original (classic main queue).
//	hold-nack    no broker dead-lettering: the consumer keeps the failed
//	             delivery unacked for the delay, then nacks it with requeue;
//	             quorum main queue, attempt count from x-delivery-count.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

type config struct {
	mode, variant string
	runs          int
	n             int
	fails         int
	delay, window time.Duration
	kill          bool
	prefetch      int
	publishers    int
	killAt        float64
	killAfter     time.Duration
	work          time.Duration
	script        string
	verbose       bool
}

func main() {
	var c config
	flag.StringVar(&c.mode, "mode", "consumer", "park, consumer, cluster, probe or fresh")
	flag.StringVar(&c.variant, "variant", "classic-ttl", "classic-ttl, quorum-dlx, hold-republish or hold-nack")
	flag.IntVar(&c.runs, "runs", 1, "runs")
	flag.IntVar(&c.n, "n", 0, "messages (default: park 5000, consumer 1000, cluster 50000)")
	flag.IntVar(&c.fails, "fails", 2, "consumer: failed attempts per event before it succeeds")
	flag.DurationVar(&c.delay, "delay", 3*time.Second, "retry delay (TTL of the retry queue)")
	flag.DurationVar(&c.window, "window", 0, "park/consumer: the publish is paced over this window (default: park 2×delay, so publishing goes on through the kill; consumer 2s)")
	flag.DurationVar(&c.killAfter, "kill-after", 0, "park/consumer: SIGKILL this long after the first publish (default: park 1.5×delay, consumer delay+window/2)")
	flag.BoolVar(&c.kill, "kill", true, "SIGKILL the node during the run (false: baseline for latency)")
	flag.DurationVar(&c.work, "work", 0, "consumer: time the handler takes per delivery, one delivery at a time (>0 builds a backlog)")
	flag.IntVar(&c.prefetch, "prefetch", 2000, "consumer: basic.qos prefetch")
	flag.IntVar(&c.publishers, "publishers", 64, "cluster: publishing goroutines (one channel each)")
	flag.Float64Var(&c.killAt, "kill-at", 1.0/3, "cluster: kill when this fraction of n is confirmed")
	flag.StringVar(&c.script, "script", "", "path of rabbitmq-cluster.sh (default: found from the source)")
	flag.BoolVar(&c.verbose, "v", false, "log progress")
	stop := flag.Bool("stop", false, "stop the experiment's single node and exit")
	flag.Parse()

	if c.script == "" {
		c.script = defaultScript()
	}
	if *stop {
		if err := singleNode(c.script).run("stop"); err != nil {
			fail(err)
		}
		return
	}
	if c.n == 0 {
		c.n = map[string]int{"park": 5000, "consumer": 1000, "cluster": 50000, "fresh": 100}[c.mode]
	}
	if c.window == 0 {
		c.window = 2 * time.Second
		if c.mode == "park" {
			c.window = 2 * c.delay
		}
	}
	if c.killAfter == 0 {
		c.killAfter = c.delay + c.window/2
		if c.mode == "park" {
			c.killAfter = c.delay * 3 / 2
		}
	}
	switch c.variant {
	case "classic-ttl", "quorum-dlx", "hold-republish", "hold-nack":
	default:
		fail(fmt.Errorf("unknown -variant %q", c.variant))
	}
	if c.mode == "park" && strings.HasPrefix(c.variant, "hold-") {
		fail(fmt.Errorf("-mode park measures broker dead-lettering; -variant %s has none", c.variant))
	}
	for run := 1; run <= c.runs; run++ {
		var res string
		var err error
		switch c.mode {
		case "park":
			res, err = runPark(c, run)
		case "consumer":
			res, err = runConsumer(c, run)
		case "cluster":
			res, err = runCluster(c, run)
		case "probe":
			res, err = runProbe(c)
		case "fresh":
			res, err = runFresh(c, run, c.variant == "quorum-dlx")
		default:
			err = fmt.Errorf("unknown -mode %q", c.mode)
		}
		if err != nil {
			fail(err)
		}
		fmt.Println(res)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "rabbitretry:", err)
	os.Exit(1)
}

func defaultScript() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "rabbitmq-cluster.sh")
}

func logf(c config, format string, args ...any) {
	if c.verbose {
		fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
	}
}
