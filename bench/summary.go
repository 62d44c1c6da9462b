package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"
)

// row is one contender at one concurrency, over the rounds.
type row struct {
	Suite, Contender string
	Publishers       int // publishers, or consumers (handler concurrency) in the consume suites
	Median, Min, Max float64
	P50us, P99us     float64
	CPUusPer         float64
	AllocsPer        float64
	BytesPer         float64
	PeakRSSKB        int64
	// Ratio is the median over the rounds of msg/s ÷ the baseline's msg/s
	// in the same round (RatioMin, RatioMax: their spread); 0 when none.
	Ratio, RatioMin, RatioMax float64
	// CPURatio and AllocsRatio are the same-round medians for CPU µs/msg
	// and allocs/msg (cost ÷ the baseline's cost); 0 when none.
	CPURatio, AllocsRatio float64
	Duplicates            int64
	Verified              bool
	Runs                  int

	// Medians over the rounds of the database, broker and machine columns
	// (see result), and the statements by kind over all rounds.
	DBStmtsPer, DBTurnsPer, DBCPUusPer, DBLogBytesPer, BrokerCPUusPer, MachineBusy float64
	DBKinds                                                                        []StmtCost
	// Catch-up: medians over the rounds.
	Catchup *catchupStats
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

// sameRound pairs each run with its suite's baseline run of the same
// concurrency and round, and returns f(run) ÷ f(baseline) for the pairs
// where the baseline's value is above floor and the run's positive.
func sameRound(g []result, all []result, f func(result) float64, floor float64) []float64 {
	var out []float64
	for _, r := range g {
		for _, b := range all {
			if b.Suite == r.Suite && b.Publishers == r.Publishers && b.Round == r.Round && b.Contender == baseline[r.Suite] &&
				f(b) > floor && f(r) > 0 {
				out = append(out, f(r)/f(b))
			}
		}
	}
	return out
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
		var tput, p50, p99, cpu, allocs, bytes []float64
		rw := row{Suite: k.suite, Contender: k.name, Publishers: k.p, Verified: true, Runs: len(g), Min: -1}
		for _, r := range g {
			tput = append(tput, r.MsgsPerSec)
			p50 = append(p50, r.P50us)
			p99 = append(p99, r.P99us)
			cpu = append(cpu, r.CPUusPer)
			allocs = append(allocs, r.AllocsPer)
			bytes = append(bytes, r.BytesPer)
			rw.PeakRSSKB = max(rw.PeakRSSKB, r.PeakRSSKB)
			rw.Duplicates += r.Duplicates
			if rw.Min < 0 || r.MsgsPerSec < rw.Min {
				rw.Min = r.MsgsPerSec
			}
			rw.Max = max(rw.Max, r.MsgsPerSec)
			if r.Verified != "yes" || r.Err != "" {
				rw.Verified = false
			}
		}
		rw.Median, rw.P50us, rw.P99us = median(tput), median(p50), median(p99)
		rw.CPUusPer, rw.AllocsPer, rw.BytesPer = median(cpu), median(allocs), median(bytes)
		if rs := sameRound(g, results, func(r result) float64 { return r.MsgsPerSec }, 0); len(rs) > 0 {
			rw.Ratio, rw.RatioMin, rw.RatioMax = median(rs), slices.Min(rs), slices.Max(rs)
		}
		rw.CPURatio = median(sameRound(g, results, func(r result) float64 { return r.CPUusPer }, 0))
		col := func(f func(result) float64) float64 {
			var xs []float64
			for _, r := range g {
				xs = append(xs, f(r))
			}
			return median(xs)
		}
		rw.DBStmtsPer = col(func(r result) float64 { return r.DBStmtsPer })
		rw.DBTurnsPer = col(func(r result) float64 { return r.DBTurnsPer })
		rw.DBCPUusPer = col(func(r result) float64 { return r.DBCPUusPer })
		rw.BrokerCPUusPer = col(func(r result) float64 { return r.BrokerCPUusPer })
		rw.DBLogBytesPer = col(func(r result) float64 { return r.DBLogBytesPer })
		rw.MachineBusy = col(func(r result) float64 { return r.MachineBusy })
		rw.DBKinds = mergeKinds(g)
		if g[0].Catchup != nil {
			cs := func(f func(*catchupStats) float64) float64 {
				return col(func(r result) float64 {
					if r.Catchup == nil {
						return 0
					}
					return f(r.Catchup)
				})
			}
			rw.Catchup = &catchupStats{
				PublishRate:   cs(func(c *catchupStats) float64 { return c.PublishRate }),
				MaxBacklog:    int64(cs(func(c *catchupStats) float64 { return float64(c.MaxBacklog) })),
				BacklogAtStop: int64(cs(func(c *catchupStats) float64 { return float64(c.BacklogAtStop) })),
				TailSeconds:   cs(func(c *catchupStats) float64 { return c.TailSeconds }),
				TailRate:      cs(func(c *catchupStats) float64 { return c.TailRate }),
				Drained:       true,
			}
			for _, r := range g {
				if r.Catchup == nil || !r.Catchup.Drained {
					rw.Catchup.Drained = false
				}
			}
		}
		// A baseline that allocates next to nothing (a direct call: a few
		// runtime mallocs over millions of calls) has no meaningful ratio.
		rw.AllocsRatio = median(sameRound(g, results, func(r result) float64 { return r.AllocsPer }, 0.01))
		rows = append(rows, rw)
	}
	return rows
}

// mergeKinds sums the statement kinds of a contender's runs: calls per
// event over all events, client time per call over all calls.
func mergeKinds(g []result) []StmtCost {
	type acc struct{ calls, us, rows float64 }
	m := map[string]*acc{}
	var events float64
	for _, r := range g {
		events += float64(r.N)
		for _, k := range r.DBKinds {
			a := m[k.Kind]
			if a == nil {
				a = &acc{}
				m[k.Kind] = a
			}
			calls := k.CallsPer * float64(r.N)
			a.calls += calls
			a.us += k.MeanUs * calls
			a.rows += k.RowsPerCall * calls
		}
	}
	var out []StmtCost
	for k, a := range m {
		if a.calls == 0 || events == 0 {
			continue
		}
		out = append(out, StmtCost{Kind: k, CallsPer: a.calls / events, MeanUs: a.us / a.calls, RowsPerCall: a.rows / a.calls})
	}
	slices.SortFunc(out, func(x, y StmtCost) int { return strings.Compare(x.Kind, y.Kind) })
	return out
}

// suiteOrder is the order of the tables and the charts' panels; suites
// not listed follow in the order they ran.
var suiteOrder = []string{"rabbitmq", "kafka", "bus", "consume-rabbitmq", "consume-kafka", "outbox-rabbitmq", "outbox-kafka",
	"outbox-rabbitmq-mariadb", "outbox-kafka-mariadb", "drain-rabbitmq", "drain-kafka", "catchup-rabbitmq", "catchup-kafka"}

// suitesOf lists the suites present in rows, in suiteOrder first.
func suitesOf(rows []row) []string {
	var out []string
	for _, s := range suiteOrder {
		for _, r := range rows {
			if r.Suite == s {
				out = append(out, s)
				break
			}
		}
	}
	for _, r := range rows {
		if !slices.Contains(out, r.Suite) {
			out = append(out, r.Suite)
		}
	}
	return out
}

// concurrencies lists the concurrencies suite ran at, ascending.
func concurrencies(rows []row, suite string) []int {
	var out []int
	for _, r := range rows {
		if r.Suite == suite && !slices.Contains(out, r.Publishers) {
			out = append(out, r.Publishers)
		}
	}
	slices.Sort(out)
	return out
}

func ratioCell(x float64) string {
	if x == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", x)
}

func printTables(w io.Writer, rows []row) {
	for _, suite := range suitesOf(rows) {
		if hasDB(rows, suite) {
			printDBTables(w, rows, suite)
			continue
		}
		unit := "publishers"
		if isConsume(suite) {
			unit = "consumers"
		}
		fmt.Fprintf(w, "\n### %s (c = %s; ratios: median over rounds of the same-round ratio to %s, min–max in brackets)\n\n", suite, unit, baseline[suite])
		fmt.Fprintln(w, "| contender | c | median msg/s | min–max | ratio (spread) | p50 µs | p99 µs | CPU µs/msg | ratio | allocs/msg | ratio | B/msg | peak RSS MiB | verified |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|")
		for _, p := range concurrencies(rows, suite) {
			for _, r := range rows {
				if r.Suite != suite || r.Publishers != p {
					continue
				}
				v := "yes"
				if !r.Verified {
					v = "**no**"
				}
				if r.Duplicates > 0 {
					v += fmt.Sprintf(" (%d dup)", r.Duplicates)
				}
				spread := "—"
				if r.Ratio > 0 {
					spread = fmt.Sprintf("%.2f× (%.2f–%.2f)", r.Ratio, r.RatioMin, r.RatioMax)
				}
				fmt.Fprintf(w, "| %s | %d | %.0f | %.0f–%.0f | %s | %.1f | %.1f | %.2f | %s | %.1f | %s | %.0f | %.0f | %s |\n",
					r.Contender, r.Publishers, r.Median, r.Min, r.Max, spread, r.P50us, r.P99us,
					r.CPUusPer, ratioCell(r.CPURatio), r.AllocsPer, ratioCell(r.AllocsRatio), r.BytesPer, float64(r.PeakRSSKB)/1024, v)
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

func hasDB(rows []row, suite string) bool {
	for _, r := range rows {
		if r.Suite == suite && (r.DBTurnsPer > 0 || r.Catchup != nil) {
			return true
		}
	}
	return false
}

// printDBTables prints a suite that uses a database: throughput and the
// relay process's cost against the baseline, what each event asked of the
// database and the broker, and the statements by kind.
func printDBTables(w io.Writer, rows []row, suite string) {
	unit, rate := "writers", "events/s"
	if isDrain(suite) {
		unit = "1"
	}
	if isCatchup(suite) {
		rate = "commits/s"
	}
	base := baseline[suite]
	if base == "" {
		base = "(none)"
	}
	fmt.Fprintf(w, "\n### %s (c = %s; ratios: median over rounds of the same-round ratio to %s, min–max in brackets)\n\n", suite, unit, base)
	if isCatchup(suite) {
		fmt.Fprintln(w, "| contender | c | "+rate+" | published/s in window | max backlog | backlog at stop | tail s | tail rows/s | drained | p50 commit µs | CPU µs/event | DB stmts/event | DB round trips/event | DB CPU µs/event | DB log B/event | broker CPU µs/event | machine busy | verified |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|:-:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|")
	} else {
		fmt.Fprintln(w, "| contender | c | "+rate+" | min–max | ratio (spread) | p50 µs | CPU µs/event | ratio | DB stmts/event | DB round trips/event | DB CPU µs/event | DB log B/event | broker CPU µs/event | machine busy | verified |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|")
	}
	for _, p := range concurrencies(rows, suite) {
		for _, r := range rows {
			if r.Suite != suite || r.Publishers != p {
				continue
			}
			v := "yes"
			if !r.Verified {
				v = "**no**"
			}
			if cs := r.Catchup; cs != nil {
				drained := "yes"
				if !cs.Drained {
					drained = "**no**"
				}
				fmt.Fprintf(w, "| %s | %d | %.0f | %.0f | %d | %d | %.1f | %.0f | %s | %.0f | %.1f | %.2f | %.2f | %.1f | %.0f | %.1f | %.0f%% | %s |\n",
					r.Contender, r.Publishers, r.Median, cs.PublishRate, cs.MaxBacklog, cs.BacklogAtStop, cs.TailSeconds, cs.TailRate, drained,
					r.P50us, r.CPUusPer, r.DBStmtsPer, r.DBTurnsPer, r.DBCPUusPer, r.DBLogBytesPer, r.BrokerCPUusPer, 100*r.MachineBusy, v)
				continue
			}
			spread := "—"
			if r.Ratio > 0 {
				spread = fmt.Sprintf("%.2f× (%.2f–%.2f)", r.Ratio, r.RatioMin, r.RatioMax)
			}
			p50 := "—"
			if r.P50us > 0 {
				p50 = fmt.Sprintf("%.0f", r.P50us)
			}
			fmt.Fprintf(w, "| %s | %d | %.0f | %.0f–%.0f | %s | %s | %.1f | %s | %.3f | %.3f | %.1f | %.0f | %.1f | %.0f%% | %s |\n",
				r.Contender, r.Publishers, r.Median, r.Min, r.Max, spread, p50, r.CPUusPer, ratioCell(r.CPURatio),
				r.DBStmtsPer, r.DBTurnsPer, r.DBCPUusPer, r.DBLogBytesPer, r.BrokerCPUusPer, 100*r.MachineBusy, v)
		}
	}
	fmt.Fprintf(w, "\n%s: statements by kind (all rounds; calls per event, client-side mean µs from the call to its rows closed, rows per call)\n\n", suite)
	fmt.Fprintln(w, "| contender | c | statement | calls/event | mean µs | rows/call |")
	fmt.Fprintln(w, "|---|---:|---|---:|---:|---:|")
	for _, p := range concurrencies(rows, suite) {
		for _, r := range rows {
			if r.Suite != suite || r.Publishers != p {
				continue
			}
			for _, k := range r.DBKinds {
				fmt.Fprintf(w, "| %s | %d | %s | %.4f | %.0f | %.1f |\n", r.Contender, r.Publishers, k.Kind, k.CallsPer, k.MeanUs, k.RowsPerCall)
			}
		}
	}
}

func isConsume(suite string) bool { return len(suite) > 8 && suite[:8] == "consume-" }
