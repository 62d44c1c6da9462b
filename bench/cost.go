package main

import (
	"os"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"
)

// meter measures what the worker process spent over a window: CPU time
// (user+sys, getrusage RUSAGE_SELF: every goroutine of the process, the
// client library's included) and heap allocations (count and bytes).
type meter struct {
	mem runtime.MemStats
	cpu time.Duration
	t0  time.Time
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startMeter collects garbage first, so that the window does not pay for
// what came before it.
func startMeter() *meter {
	runtime.GC()
	m := &meter{}
	runtime.ReadMemStats(&m.mem)
	m.cpu = cpuTime()
	m.t0 = time.Now()
	return m
}

// stop ends the window and sets res's cost columns per message of n; it
// returns the window's length.
func (m *meter) stop(res *result, n int64) time.Duration {
	elapsed := time.Since(m.t0)
	cpu := cpuTime()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if n > 0 {
		res.AllocsPer = float64(after.Mallocs-m.mem.Mallocs) / float64(n)
		res.BytesPer = float64(after.TotalAlloc-m.mem.TotalAlloc) / float64(n)
		res.CPUusPer = float64(cpu-m.cpu) / 1e3 / float64(n)
	}
	return elapsed
}

// cpuProfile starts a CPU profile into path ("" does nothing); the
// returned func stops it.
func cpuProfile(path string) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); _ = f.Close() }
}
