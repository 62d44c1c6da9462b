// Command bench measures domainevents' publishers and subscribers against
// the raw clients and the peers, with durability on, in one run: RabbitMQ
// (the local server), Kafka (an in-process kfake cluster in a child process)
// and the in-process bus. Each measurement runs in its own child process
// (clean CPU and allocation counts, peak RSS); contenders alternate round by
// round so machine noise is shared, and ratios are taken within a round;
// every run is verified (what arrived equals what was confirmed; what was
// consumed was acknowledged).
//
//	cd bench && go run . -rounds 3 -duration 3s     # tables on stdout, results.json, chart.svg, ratio.svg
//	cd bench && go run . -suites consume-rabbitmq,consume-kafka -consumers 1,16 -prefill 100000
//	cd bench && go run . -suites bus -rounds 1      # one suite
//	cd bench && go run . -memcheck                  # the outage memory check
//	cd bench && go run . -suites outbox-rabbitmq,outbox-kafka   # commit-to-confirmed from PostgreSQL (DATABASE_URL)
//	cd bench && go run . -suites outbox-rabbitmq-mariadb,outbox-kafka-mariadb   # the same from MariaDB (MARIADB_DSN)
//	cd bench && go run . -suites drain-rabbitmq,drain-kafka -prefill 100000 -keys 1000   # a prefilled outbox drained, against raw
//	cd bench && go run . -suites catchup-rabbitmq -publishers 16,256 -duration 20s   # writers not waiting: does the relay keep up?
//	cd bench && go run . -claim-plans                # the relay's claim: plans and cost at several backlogs
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// result is one measured run of one contender.
type result struct {
	Suite      string  `json:"suite"`
	Contender  string  `json:"contender"`
	Publishers int     `json:"publishers"` // or consumers, in the consume suites
	Round      int     `json:"round"`
	N          int64   `json:"n"`
	Failed     int64   `json:"failed"`
	Seconds    float64 `json:"seconds"`
	MsgsPerSec float64 `json:"msgs_per_sec"`
	P50us      float64 `json:"p50_us"`
	P99us      float64 `json:"p99_us"`
	CPUusPer   float64 `json:"cpu_us_per_msg"` // user+sys CPU of the worker process over the window ÷ N
	AllocsPer  float64 `json:"allocs_per_msg"`
	BytesPer   float64 `json:"bytes_per_msg"`        // heap bytes allocated over the window ÷ N
	Duplicates int64   `json:"duplicates,omitempty"` // consume: deliveries of an id already handled
	FirstMs    float64 `json:"first_ms,omitempty"`   // consume: from starting the subscriber to the first handled event
	PeakRSSKB  int64   `json:"peak_rss_kb"`
	Verified   string  `json:"verified"`
	Err        string  `json:"error,omitempty"`

	// What the run asked of its database, per event (drain, outbox and
	// catch-up suites; dbcount.go): statements (BEGIN and COMMIT
	// included) and round trips on the wire, and the statements by kind.
	DBStmtsPer float64    `json:"db_stmts_per_event,omitempty"`
	DBTurnsPer float64    `json:"db_round_trips_per_event,omitempty"`
	DBKinds    []StmtCost `json:"db_statements,omitempty"`
	// CPU of the database server's and the broker's processes over the
	// window per event, and the share of the machine's CPU time that was
	// busy (proccpu.go).
	DBCPUusPer     float64 `json:"db_cpu_us_per_event,omitempty"`
	DBLogBytesPer  float64 `json:"db_log_bytes_per_event,omitempty"` // WAL / InnoDB redo written over the window ÷ N
	BrokerCPUusPer float64 `json:"broker_cpu_us_per_event,omitempty"`
	MachineBusy    float64 `json:"machine_busy,omitempty"`
	// Catch-up suites: the backlog (pending rows) while writers commit
	// without waiting for the publish, and after they stop.
	Catchup *catchupStats `json:"catchup,omitempty"`
}

// contender publishes one ~300-byte order event per call.
type contender struct {
	name  string
	setup func(ctx context.Context) (publish func(ctx context.Context) error, verify func(confirmed int64) string, teardown func(), err error)
}

var body = []byte(`{"name":"order.created","id":"6f1c2a9e-3b8d-4c1e-9a57-2d4f8b0e1c33","timestamp":"2026-11-30T10:15:30.123Z","data":{"orderId":"0b8f5e2c-7a41-4d2b-9c3e-5f6a7b8c9d0e","userId":"a3d9c1f0-2b4e-4f6a-8c7d-9e0f1a2b3c4d","items":[{"productId":"sku-1001","quantity":2,"price":5000.00}],"total":12550.00,"status":"created"}}`)

func suites() map[string][]contender {
	return map[string][]contender{
		// Not in the default -suites: c handlers inside one Kafka
		// partition, keyed by order (consume_kafka.go).
		"consume-keyed-kafka": consumeKafkaKeyedContenders(),
		"consume-slow-kafka":  consumeKafkaKeyedContenders(),
		// The default -suites.
		"rabbitmq":         rabbitContenders(),
		"kafka":            kafkaContenders(),
		"bus":              busContenders(),
		"consume-rabbitmq": consumeRabbitContenders(),
		"consume-kafka":    consumeKafkaContenders(),
		// Not in the default -suites: a 2 ms handler (run with -prefill 5000).
		"consume-rabbitmq-2ms": consumeRabbitSlowContenders(),
		// Not in the default -suites: they need PostgreSQL (DATABASE_URL).
		"outbox-rabbitmq":         outboxContenders("rabbitmq", "postgres"),
		"outbox-kafka":            outboxContenders("kafka", "postgres"),
		"outbox-rabbitmq-mariadb": outboxContenders("rabbitmq", "mysql"),
		"outbox-kafka-mariadb":    outboxContenders("kafka", "mysql"),
		// Drain a prefilled outbox (PostgreSQL and MariaDB), against raw
		// pipelined publishing of the same bodies.
		"drain-rabbitmq": drainAsContenders("rabbitmq"),
		"drain-kafka":    drainAsContenders("kafka"),
		// Writers that do not wait for the publish: does the relay keep up?
		"catchup-rabbitmq": catchupContenders("rabbitmq"),
		"catchup-kafka":    catchupContenders("kafka"),
	}
}

// baseline is the contender the ratios divide by.
var baseline = map[string]string{"rabbitmq": "raw-amqp091-pipelined", "kafka": "raw-sarama-async", "bus": "direct-call",
	"consume-rabbitmq": "raw-amqp091", "consume-rabbitmq-2ms": "raw-amqp091", "consume-kafka": "raw-sarama-group",
	"outbox-rabbitmq": "direct", "outbox-kafka": "direct", "outbox-rabbitmq-mariadb": "direct", "outbox-kafka-mariadb": "direct",
	"drain-rabbitmq": "raw-amqp091-pipelined", "drain-kafka": "raw-sarama-async"}

func main() {
	var (
		suiteList  = flag.String("suites", "rabbitmq,kafka,bus,consume-rabbitmq,consume-kafka", "suites to run")
		pubList    = flag.String("publishers", "1,16,256", "concurrent publishers (publish suites)")
		conList    = flag.String("consumers", "1,16", "handler concurrency (consume suites)")
		prefill    = flag.Int("prefill", 100000, "events waiting before each consume or drain run")
		keys       = flag.Int("keys", 1000, "drain: keys (order ids) the prefilled events are spread over")
		window     = flag.Int("window", 1000, "drain: the raw baseline's messages in flight (the relay's default WithMaxInFlight)")
		peerRows   = flag.Int("peer-rows", 20000, "drain: at most this many events for Watermill's forwarder (it is slow)")
		relayBatch = flag.Int("relay-batch", 0, "drain, catchup: the relays' WithBatchSize (0: default)")
		relayIn    = flag.Int("relay-inflight", 0, "drain, catchup: the relays' WithMaxInFlight (0: default)")
		analyze    = flag.Bool("analyze", true, "drain: ANALYZE the tables after the prefill (autovacuum would have; it is off on this machine)")
		prefStore  = flag.Bool("prefill-store", false, "drain: prefill through outbox.Store transactions (100 events each) instead of bulk INSERTs")
		dbOptions  = flag.String("pg-options", "", "drain, catchup: PostgreSQL run-time options for the relays' connections, e.g. '-c plan_cache_mode=force_custom_plan'")
		myParams   = flag.String("mysql-params", "", "drain, catchup: DSN parameters for the relays' MariaDB connections, e.g. 'long_query_time=0'")
		logSummary = flag.String("db-log", "", "instead: summarize a PostgreSQL log excerpt (log_min_duration_statement=0) or a MariaDB slow log by statement kind")
		protoBatch = flag.Int("proto-batch", 1000, "drain: the prototype relay's rows per claim")
		protoRun   = flag.Int("proto-run", 100, "drain: the prototype relay's rows per key per claim (1: one message per key in flight)")
		protoWork  = flag.Int("proto-workers", 2, "drain: the prototype relay's batches in flight")
		protoFill  = flag.Int("proto-fillfactor", 0, "drain: the prototype's PostgreSQL outbox fillfactor (0: the default, 100)")
		protoLean  = flag.Bool("proto-lean", false, "drain: drop the pending-heads and published indexes from the prototype's table")
		optWriters = flag.Bool("options-writers", false, "catchup: apply -pg-options / -mysql-params to the writers' connections too")
		tail       = flag.Duration("catchup-tail", 2*time.Minute, "catchup: how long to wait for the relay to publish the backlog after the writers stop")
		only       = flag.String("only", "", "run only these contenders (comma-separated; the baseline always runs)")
		plans      = flag.Bool("claim-plans", false, "instead: show the claim's plans (generic vs custom) at several backlogs")
		profDir    = flag.String("cpuprofile", "", "write a CPU profile of every measured window into this directory")
		rounds     = flag.Int("rounds", 3, "rounds (contenders alternate within each)")
		duration   = flag.Duration("duration", 3*time.Second, "length of one measured run")
		jsonOut    = flag.String("json", "results.json", "where to write every run as JSON")
		svgOut     = flag.String("svg", "chart.svg", "where to write the throughput chart (log scale)")
		ratioOut   = flag.String("ratio-svg", "ratio.svg", "where to write the chart of same-round ratios to the baseline (linear)")
		memcheck   = flag.Bool("memcheck", false, "run the outage memory check instead")
		worker     = flag.String("worker", "", "internal: run one contender (suite/name) in this process")
		publishers = flag.Int("c", 1, "internal: publishers for -worker")
		round      = flag.Int("round", 0, "internal: round for -worker")
		serveKfake = flag.Bool("serve-kfake", false, "internal: serve a kfake cluster until stdin closes")
		kfakeStore = flag.Bool("kfake-store", false, "internal: with -serve-kfake, keep produced records (to consume them)")
		from       = flag.String("from", "", "re-print the tables and redraw the chart from a results.json (or several, comma-separated), without running")
	)
	flag.Parse()
	switch {
	case *serveKfake:
		serveKfakeCluster(*kfakeStore)
	case *logSummary != "":
		if err := summarizeDBLog(*logSummary); err != nil {
			fmt.Fprintln(os.Stderr, "db-log:", err)
			os.Exit(1)
		}
	case *plans:
		if err := claimPlans(); err != nil {
			fmt.Fprintln(os.Stderr, "claim-plans:", err)
			os.Exit(1)
		}
	case *worker != "":
		var res result
		do := drainOpts{rows: *prefill, keys: *keys, window: *window, peerRows: *peerRows, relayBatch: *relayBatch,
			relayInFlight: *relayIn, analyze: *analyze, prefillStore: *prefStore, dbOptions: *dbOptions, mysqlParams: *myParams,
			protoBatch: *protoBatch, protoRun: *protoRun, protoWorkers: *protoWork, protoFill: *protoFill, protoLean: *protoLean, catchupTail: *tail, optionsWriters: *optWriters}
		if suite, _, _ := strings.Cut(*worker, "/"); isConsume(suite) {
			res = runConsumeWorker(*worker, *publishers, *round, *prefill, *profDir)
		} else if isDrain(suite) {
			res = runDrainWorker(*worker, *round, do, *profDir)
		} else if isCatchup(suite) {
			res = runCatchupWorker(*worker, *publishers, *round, *duration, do, *profDir)
		} else {
			res = runWorker(*worker, *publishers, *round, *duration, *profDir)
		}
		_ = json.NewEncoder(os.Stdout).Encode(res)
	case *from != "":
		if err := replot(*from, outputs{svg: *svgOut, ratioSVG: *ratioOut}); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	case *memcheck:
		if err := memCheck(); err != nil {
			fmt.Fprintln(os.Stderr, "memcheck:", err)
			os.Exit(1)
		}
	default:
		o := plan{pubs: ints(*pubList), cons: ints(*conList), rounds: *rounds, d: *duration, prefill: *prefill, profDir: *profDir,
			only: *only, childArgs: childFlags()}
		if err := orchestrate(strings.Split(*suiteList, ","), o, outputs{*jsonOut, *svgOut, *ratioOut}); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}
}

func ints(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bad publisher count %q\n", f)
			os.Exit(2)
		}
		out = append(out, n)
	}
	return out
}

// plan is what the orchestrator runs.
type plan struct {
	pubs, cons []int // publish suites' publishers, consume suites' consumers
	rounds     int
	d          time.Duration
	prefill    int
	profDir    string
	only       string   // comma-separated contenders to run (and the baseline)
	childArgs  []string // flags passed through to every child
}

// passThrough are the flags every child gets as the orchestrator got them.
var passThrough = []string{"keys", "window", "peer-rows", "relay-batch", "relay-inflight", "analyze", "prefill-store", "pg-options", "mysql-params",
	"proto-batch", "proto-run", "proto-workers", "proto-fillfactor", "proto-lean", "catchup-tail", "options-writers"}

func childFlags() []string {
	var out []string
	flag.Visit(func(f *flag.Flag) {
		if slices.Contains(passThrough, f.Name) {
			out = append(out, "-"+f.Name+"="+f.Value.String())
		}
	})
	return out
}

// outputs are where the orchestrator and -from write.
type outputs struct{ json, svg, ratioSVG string }

func orchestrate(names []string, o plan, out outputs) error {
	all := suites()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var results []result
	for _, suite := range names {
		cs, ok := all[suite]
		if !ok {
			return fmt.Errorf("unknown suite %q", suite)
		}
		if o.only != "" {
			keep := strings.Split(o.only, ",")
			cs = slices.DeleteFunc(slices.Clone(cs), func(c contender) bool {
				return c.name != baseline[suite] && !slices.Contains(keep, c.name)
			})
		}
		var env []string
		if strings.HasSuffix(suite, "kafka") || strings.HasSuffix(suite, "kafka-mariadb") {
			addrs, pid, stop, err := startKfake(self, isConsume(suite))
			if err != nil {
				return err
			}
			defer stop()
			env = append(env, "BENCH_KAFKA="+addrs, "BENCH_KFAKE_PID="+strconv.Itoa(pid))
		}
		levels := o.pubs
		if isConsume(suite) {
			levels = o.cons
		} else if isDrain(suite) {
			levels = []int{1}
		}
		for r := range o.rounds {
			for _, p := range levels {
				for i := range cs { // rotate the order each round
					c := cs[(i+r)%len(cs)]
					res := runChild(self, env, suite+"/"+c.name, p, r, o)
					results = append(results, res)
					extra := ""
					if isConsume(suite) {
						extra = fmt.Sprintf("first=%.0fms dup=%d  ", res.FirstMs, res.Duplicates)
					}
					if res.DBTurnsPer > 0 || res.DBCPUusPer > 0 || isDrain(suite) {
						extra += fmt.Sprintf("db: %.3f stmts %.3f trips %.1fµs cpu %.0fB log /msg  broker %.1fµs/msg  busy %.0f%%  ",
							res.DBStmtsPer, res.DBTurnsPer, res.DBCPUusPer, res.DBLogBytesPer, res.BrokerCPUusPer, 100*res.MachineBusy)
					}
					if cs := res.Catchup; cs != nil {
						extra += fmt.Sprintf("backlog max %d at-stop %d tail %.1fs (%.0f/s)  ", cs.MaxBacklog, cs.BacklogAtStop, cs.TailSeconds, cs.TailRate)
					}
					fmt.Fprintf(os.Stderr, "round %d  %-16s %-28s c=%-3d %9.0f msg/s  n=%-8d failed=%d  cpu=%.1fµs/msg  %s%s %s\n",
						r+1, suite, c.name, p, res.MsgsPerSec, res.N, res.Failed, res.CPUusPer, extra, res.Verified, res.Err)
				}
			}
		}
	}
	rows := summarize(results)
	printTables(os.Stdout, rows)
	if err := writeJSON(out.json, results, rows); err != nil {
		return err
	}
	return writeCharts(rows, out)
}

func writeCharts(rows []row, out outputs) error {
	if err := os.WriteFile(out.svg, []byte(chart(rows)), 0o644); err != nil {
		return err
	}
	return os.WriteFile(out.ratioSVG, []byte(ratioChart(rows)), 0o644)
}

// replot reads one results.json, or several separated by commas (runs of
// different suites merged into one set of tables).
func replot(paths string, out outputs) error {
	var runs []result
	for _, path := range strings.Split(paths, ",") {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var doc struct {
			Runs []result `json:"runs"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		runs = append(runs, doc.Runs...)
	}
	rows := summarize(runs)
	printTables(os.Stdout, rows)
	return writeCharts(rows, out)
}

func runChild(self string, env []string, name string, p, round int, o plan) result {
	suite, cname, _ := strings.Cut(name, "/")
	fail := func(err error) result {
		return result{Suite: suite, Contender: cname, Publishers: p, Round: round, Err: err.Error(), Verified: "no"}
	}
	args := []string{"-worker", name, "-c", strconv.Itoa(p), "-round", strconv.Itoa(round), "-duration", o.d.String(),
		"-prefill", strconv.Itoa(o.prefill)}
	if o.profDir != "" {
		args = append(args, "-cpuprofile", o.profDir)
	}
	args = append(args, o.childArgs...)
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return fail(fmt.Errorf("child: %w", err))
	}
	var res result
	if err := json.Unmarshal(out, &res); err != nil {
		return fail(fmt.Errorf("child output: %w", err))
	}
	return res
}

// maxSamples bounds the latency samples kept per publisher.
const maxSamples = 4096

// runWorker measures one contender for d with p publishers.
func runWorker(name string, p, round int, d time.Duration, profDir string) result {
	suite, cname, _ := strings.Cut(name, "/")
	res := result{Suite: suite, Contender: cname, Publishers: p, Round: round}
	var c *contender
	for _, x := range suites()[suite] {
		if x.name == cname {
			c = &x
		}
	}
	if c == nil {
		res.Err = "unknown contender"
		return res
	}
	ctx := context.Background()
	publish, verify, teardown, err := c.setup(ctx)
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer teardown()

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	lat := make([][]time.Duration, p)
	dbBefore := dbSnapshots()
	bnames, bpids := brokerProcesses(suite)
	stopProfile := cpuProfile(profilePath(profDir, res))
	sm := startServerMeter(workerDB.kind, bnames, bpids)
	m := startMeter()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range p {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				sample := i%16 == 0 // timing every call would cost the bus suite more than its work
				var t0 time.Time
				if sample {
					t0 = time.Now()
				}
				err := publish(ctx)
				if sample {
					// Reservoir of bounded size: the samples must not grow the RSS we report.
					if l := len(lat[g]); l < maxSamples {
						lat[g] = append(lat[g], time.Since(t0))
					} else if j := rand.IntN(i/16 + 1); j < maxSamples {
						lat[g][j] = time.Since(t0)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
			}
		})
	}
	time.Sleep(d)
	close(stop)
	wg.Wait()
	elapsed := m.stop(&res, ok.Load())
	sm.stop(&res, ok.Load())
	stopProfile()
	if workerDB.kind != "" {
		dbPerEvent(&res, dbBefore, ok.Load())
	}

	res.N, res.Failed, res.Seconds = ok.Load(), failed.Load(), elapsed.Seconds()
	res.MsgsPerSec = float64(res.N) / elapsed.Seconds()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	if len(all) > 0 {
		res.P50us = float64(all[len(all)/2]) / 1e3
		res.P99us = float64(all[len(all)*99/100]) / 1e3
	}
	res.Verified = verify(res.N)
	if e, _ := firstErr.Load().(string); e != "" {
		res.Err = e
	}
	res.PeakRSSKB = peakRSS()
	return res
}

// profilePath names a run's CPU profile in dir ("" when not profiling).
func profilePath(dir string, res result) string {
	if dir == "" {
		return ""
	}
	_ = os.MkdirAll(dir, 0o755)
	return filepath.Join(dir, fmt.Sprintf("%s-%s-c%d-r%d.pprof", res.Suite, res.Contender, res.Publishers, res.Round))
}

// peakRSS reads VmHWM, this process's peak resident set.
func peakRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}
