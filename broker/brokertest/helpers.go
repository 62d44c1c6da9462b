package brokertest

import (
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// WaitFor polls cond every 10ms until it holds, failing the test after d,
// or after a minute when d is shorter: a busy machine is many times slower
// than a quiet one, and the deadline only decides how late a real failure
// is reported. Use it instead of sleeping.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	d = max(d, minWait)
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// minWait is the shortest deadline WaitFor gives a condition.
const minWait = time.Minute

// CheckNoLeak records the goroutines running now and, when the test ends
// (after the cleanups registered later), fails it if more are left after
// 10s, printing their stacks. Goroutines whose stack contains one of ignore
// (process-wide singletons such as go-metrics' meter arbiter) are not
// counted. Call it first in a test.
func CheckNoLeak(t testing.TB, ignore ...string) {
	t.Helper()
	before := countGoroutines(ignore)
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for countGoroutines(ignore) > before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := countGoroutines(ignore); n > before {
			buf := make([]byte, 1<<20)
			t.Errorf("goroutine leak: %d before, %d after\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
	})
}

func countGoroutines(ignore []string) int {
	buf := make([]byte, 1<<20)
	n := 0
next:
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		for _, s := range ignore {
			if strings.Contains(g, s) {
				continue next
			}
		}
		n++
	}
	return n
}

// Logger returns a logger writing to t.Log, for adapters under test.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// Parallel runs b.N calls of publish spread over publishers goroutines and
// reports msgs/s; the first error fails the benchmark. Adapters' benchmarks
// use it for their own Publish and the raw client alike.
func Parallel(b *testing.B, publishers int, publish func() error) {
	var n atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	b.ResetTimer()
	for range publishers {
		wg.Go(func() {
			for n.Add(1) <= int64(b.N) {
				if err := publish(); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if err, _ := firstErr.Load().(error); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
