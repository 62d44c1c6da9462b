// Command bench measures domainevents' publishers against the raw clients
// and the peers, with durability on, in one run: RabbitMQ (the local server),
// Kafka (an in-process kfake cluster in a child process) and the in-process
// bus. Each measurement runs in its own child process (clean allocation
// counts and peak RSS); contenders alternate round by round so machine noise
// is shared; every run is verified (what arrived equals what was confirmed).
//
//	cd bench && go run . -rounds 3 -duration 3s     # tables on stdout, results.json, chart.svg
//	cd bench && go run . -suites bus -rounds 1      # one suite
//	cd bench && go run . -memcheck                  # the outage memory check
//	cd bench && go run . -suites outbox-rabbitmq,outbox-kafka   # commit-to-confirmed from PostgreSQL (DATABASE_URL)
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
	"runtime"
	"slices"
	"sort"
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
	Publishers int     `json:"publishers"`
	Round      int     `json:"round"`
	N          int64   `json:"n"`
	Failed     int64   `json:"failed"`
	Seconds    float64 `json:"seconds"`
	MsgsPerSec float64 `json:"msgs_per_sec"`
	P50us      float64 `json:"p50_us"`
	P99us      float64 `json:"p99_us"`
	AllocsPer  float64 `json:"allocs_per_msg"`
	PeakRSSKB  int64   `json:"peak_rss_kb"`
	Verified   string  `json:"verified"`
	Err        string  `json:"error,omitempty"`
}

// contender publishes one ~300-byte order event per call.
type contender struct {
	name  string
	setup func(ctx context.Context) (publish func(ctx context.Context) error, verify func(confirmed int64) string, teardown func(), err error)
}

var body = []byte(`{"name":"order.created","id":"6f1c2a9e-3b8d-4c1e-9a57-2d4f8b0e1c33","timestamp":"2026-11-30T10:15:30.123Z","data":{"orderId":"0b8f5e2c-7a41-4d2b-9c3e-5f6a7b8c9d0e","userId":"a3d9c1f0-2b4e-4f6a-8c7d-9e0f1a2b3c4d","items":[{"productId":"sku-1001","quantity":2,"price":5000.00}],"total":12550.00,"status":"created"}}`)

func suites() map[string][]contender {
	return map[string][]contender{
		"rabbitmq": rabbitContenders(),
		"kafka":    kafkaContenders(),
		"bus":      busContenders(),
		// Not in the default -suites: they need PostgreSQL (DATABASE_URL).
		"outbox-rabbitmq": outboxContenders("rabbitmq"),
		"outbox-kafka":    outboxContenders("kafka"),
	}
}

// baseline is the contender the ratios divide by.
var baseline = map[string]string{"rabbitmq": "raw-amqp091-pipelined", "kafka": "raw-sarama-async", "bus": "direct-call",
	"outbox-rabbitmq": "direct", "outbox-kafka": "direct"}

func main() {
	var (
		suiteList  = flag.String("suites", "rabbitmq,kafka,bus", "suites to run")
		pubList    = flag.String("publishers", "1,16,256", "concurrent publishers")
		rounds     = flag.Int("rounds", 3, "rounds (contenders alternate within each)")
		duration   = flag.Duration("duration", 3*time.Second, "length of one measured run")
		jsonOut    = flag.String("json", "results.json", "where to write every run as JSON")
		svgOut     = flag.String("svg", "chart.svg", "where to write the throughput chart")
		memcheck   = flag.Bool("memcheck", false, "run the outage memory check instead")
		worker     = flag.String("worker", "", "internal: run one contender (suite/name) in this process")
		publishers = flag.Int("c", 1, "internal: publishers for -worker")
		round      = flag.Int("round", 0, "internal: round for -worker")
		serveKfake = flag.Bool("serve-kfake", false, "internal: serve a kfake cluster until stdin closes")
		from       = flag.String("from", "", "re-print the tables and redraw the chart from a results.json, without running")
	)
	flag.Parse()
	switch {
	case *serveKfake:
		serveKfakeCluster()
	case *worker != "":
		res := runWorker(*worker, *publishers, *round, *duration)
		_ = json.NewEncoder(os.Stdout).Encode(res)
	case *from != "":
		if err := replot(*from, *svgOut); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	case *memcheck:
		if err := memCheck(); err != nil {
			fmt.Fprintln(os.Stderr, "memcheck:", err)
			os.Exit(1)
		}
	default:
		if err := orchestrate(strings.Split(*suiteList, ","), ints(*pubList), *rounds, *duration, *jsonOut, *svgOut); err != nil {
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

func orchestrate(names []string, pubs []int, rounds int, d time.Duration, jsonOut, svgOut string) error {
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
		var env []string
		if strings.HasSuffix(suite, "kafka") {
			addrs, stop, err := startKfake(self)
			if err != nil {
				return err
			}
			defer stop()
			env = append(env, "BENCH_KAFKA="+addrs)
		}
		for r := range rounds {
			for _, p := range pubs {
				for i := range cs { // rotate the order each round
					c := cs[(i+r)%len(cs)]
					res := runChild(self, env, suite+"/"+c.name, p, r, d)
					results = append(results, res)
					fmt.Fprintf(os.Stderr, "round %d  %-9s %-28s publishers=%-3d %9.0f msg/s  n=%-8d failed=%d  %s %s\n",
						r+1, suite, c.name, p, res.MsgsPerSec, res.N, res.Failed, res.Verified, res.Err)
				}
			}
		}
	}
	rows := summarize(results)
	printTables(os.Stdout, rows, pubs)
	if err := writeJSON(jsonOut, results, rows); err != nil {
		return err
	}
	return os.WriteFile(svgOut, []byte(chart(rows, pubs)), 0o644)
}

func replot(path, svgOut string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var doc struct {
		Runs []result `json:"runs"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return err
	}
	var pubs []int
	for _, r := range doc.Runs {
		if !slices.Contains(pubs, r.Publishers) {
			pubs = append(pubs, r.Publishers)
		}
	}
	slices.Sort(pubs)
	rows := summarize(doc.Runs)
	printTables(os.Stdout, rows, pubs)
	return os.WriteFile(svgOut, []byte(chart(rows, pubs)), 0o644)
}

func runChild(self string, env []string, name string, p, round int, d time.Duration) result {
	suite, cname, _ := strings.Cut(name, "/")
	fail := func(err error) result {
		return result{Suite: suite, Contender: cname, Publishers: p, Round: round, Err: err.Error(), Verified: "no"}
	}
	cmd := exec.Command(self, "-worker", name, "-c", strconv.Itoa(p), "-round", strconv.Itoa(round), "-duration", d.String())
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
func runWorker(name string, p, round int, d time.Duration) result {
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
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
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
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)

	res.N, res.Failed, res.Seconds = ok.Load(), failed.Load(), elapsed.Seconds()
	res.MsgsPerSec = float64(res.N) / elapsed.Seconds()
	if res.N > 0 {
		res.AllocsPer = float64(after.Mallocs-before.Mallocs) / float64(res.N)
	}
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

// row is one contender at one concurrency, over the rounds.
type row struct {
	Suite, Contender string
	Publishers       int
	Median, Min, Max float64
	P50us, P99us     float64
	AllocsPer        float64
	PeakRSSKB        int64
	Ratio            float64 // median / baseline median
	Verified         bool
	Runs             int
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func summarize(results []result) []row {
	type key struct {
		suite, name string
		p           int
	}
	groups := map[key][]result{}
	var order []key
	for _, r := range results {
		k := key{r.Suite, r.Contender, r.Publishers}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	var rows []row
	for _, k := range order {
		g := groups[k]
		var tput, p50, p99, allocs []float64
		rw := row{Suite: k.suite, Contender: k.name, Publishers: k.p, Verified: true, Runs: len(g), Min: -1}
		for _, r := range g {
			tput = append(tput, r.MsgsPerSec)
			p50 = append(p50, r.P50us)
			p99 = append(p99, r.P99us)
			allocs = append(allocs, r.AllocsPer)
			rw.PeakRSSKB = max(rw.PeakRSSKB, r.PeakRSSKB)
			if rw.Min < 0 || r.MsgsPerSec < rw.Min {
				rw.Min = r.MsgsPerSec
			}
			rw.Max = max(rw.Max, r.MsgsPerSec)
			if r.Verified != "yes" || r.Err != "" {
				rw.Verified = false
			}
		}
		rw.Median, rw.P50us, rw.P99us, rw.AllocsPer = median(tput), median(p50), median(p99), median(allocs)
		rows = append(rows, rw)
	}
	for i := range rows {
		for _, b := range rows {
			if b.Suite == rows[i].Suite && b.Publishers == rows[i].Publishers && b.Contender == baseline[b.Suite] && b.Median > 0 {
				rows[i].Ratio = rows[i].Median / b.Median
			}
		}
	}
	return rows
}

func printTables(w *os.File, rows []row, pubs []int) {
	for _, suite := range []string{"rabbitmq", "kafka", "bus"} {
		var rs []row
		for _, r := range rows {
			if r.Suite == suite {
				rs = append(rs, r)
			}
		}
		if len(rs) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n### %s (ratio: median ÷ %s at the same concurrency)\n\n", suite, baseline[suite])
		fmt.Fprintln(w, "| contender | publishers | median msg/s | min–max | ratio | p50 µs | p99 µs | allocs/msg | peak RSS MiB | verified |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|:-:|")
		for _, p := range pubs {
			for _, r := range rs {
				if r.Publishers != p {
					continue
				}
				v := "yes"
				if !r.Verified {
					v = "**no**"
				}
				fmt.Fprintf(w, "| %s | %d | %.0f | %.0f–%.0f | %.2f× | %.1f | %.1f | %.1f | %.0f | %s |\n",
					r.Contender, r.Publishers, r.Median, r.Min, r.Max, r.Ratio, r.P50us, r.P99us, r.AllocsPer, float64(r.PeakRSSKB)/1024, v)
			}
		}
	}
}

func writeJSON(path string, results []result, rows []row) error {
	host, _ := os.Hostname()
	doc := map[string]any{
		"machine": map[string]any{"host": host, "cpus": runtime.NumCPU(), "go": runtime.Version(), "os": runtime.GOOS, "arch": runtime.GOARCH},
		"when":    time.Now().UTC().Format(time.RFC3339),
		"summary": rows,
		"runs":    results,
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
