package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"sort"
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
		// A baseline that allocates next to nothing (a direct call: a few
		// runtime mallocs over millions of calls) has no meaningful ratio.
		rw.AllocsRatio = median(sameRound(g, results, func(r result) float64 { return r.AllocsPer }, 0.01))
		rows = append(rows, rw)
	}
	return rows
}

// suiteOrder is the order of the tables and the charts' panels; suites
// not listed follow in the order they ran.
var suiteOrder = []string{"rabbitmq", "kafka", "bus", "consume-rabbitmq", "consume-kafka", "outbox-rabbitmq", "outbox-kafka"}

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

func isConsume(suite string) bool { return len(suite) > 8 && suite[:8] == "consume-" }
