package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/broker/rabbitmq"
)

// memCheck: RabbitMQ becomes unreachable (a loopback proxy refuses) while
// 1,000,000 publishes are attempted from 256 goroutines, each with a 5ms
// ctx. Memory must stay bounded and every publish must end confirmed or
// failed back to its caller.
func memCheck() error {
	const total, publishers = 1_000_000, 256
	f, err := newRabbitFixture()
	if err != nil {
		return err
	}
	defer f.teardown()
	p, err := newProxy(rabbitAddr())
	if err != nil {
		return err
	}
	cfg := broker.DefaultConfig()
	cfg.Addresses = []string{p.addr}
	cfg.Exchange = f.exchange
	b, err := rabbitmq.New(context.Background(), cfg, rabbitmq.WithLogger(quiet()),
		rabbitmq.WithReconnectBackoff(50*time.Millisecond, 500*time.Millisecond))
	if err != nil {
		return err
	}
	for range 1000 {
		if err := b.Publish(context.Background(), broker.Message{ID: uuid.NewString(), Name: "order.created", Body: body}); err != nil {
			return err
		}
	}
	rssBefore := rss()
	p.refuse()
	var ok, failed, next atomic.Int64
	var peak atomic.Int64
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(50 * time.Millisecond):
				if r := rss(); r > peak.Load() {
					peak.Store(r)
				}
			}
		}
	}()
	start := time.Now()
	var wg sync.WaitGroup
	for range publishers {
		wg.Go(func() {
			for next.Add(1) <= total {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
				err := b.Publish(ctx, broker.Message{ID: uuid.NewString(), Name: "order.created", Body: body})
				cancel()
				if err == nil {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	close(done)
	elapsed := time.Since(start)
	p.accept()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	closeErr := b.Close(ctx)
	fmt.Printf("outage memory check: attempted=%d confirmed=%d failed-back-to-caller=%d unaccounted=%d in %v\n",
		total, ok.Load(), failed.Load(), total-ok.Load()-failed.Load(), elapsed.Round(time.Millisecond))
	fmt.Printf("RSS before outage %.1f MiB, peak during %.1f MiB (VmHWM %.1f MiB); Close: %v; stats %+v\n",
		float64(rssBefore)/1024, float64(peak.Load())/1024, float64(peakRSS())/1024, closeErr, b.Stats())
	if ok.Load()+failed.Load() != total {
		return fmt.Errorf("%d publishes unaccounted for", total-ok.Load()-failed.Load())
	}
	return nil
}

func rss() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// proxy is a loopback TCP proxy that can refuse connections.
type proxy struct {
	target, addr string
	mu           sync.Mutex
	ln           net.Listener
	conns        []net.Conn
}

func newProxy(target string) (*proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{target: target, addr: ln.Addr().String()}
	p.serve(ln)
	return p, nil
}

func (p *proxy) serve(ln net.Listener) {
	p.ln = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", p.target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(s, c); _ = s.Close() }()
			go func() { _, _ = io.Copy(c, s); _ = c.Close() }()
		}
	}()
}

func (p *proxy) refuse() {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.ln.Close()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

func (p *proxy) accept() {
	for range 50 {
		if ln, err := net.Listen("tcp", p.addr); err == nil {
			p.serve(ln)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
