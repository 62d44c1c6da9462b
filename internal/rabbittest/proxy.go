package rabbittest

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a loopback TCP proxy in front of a server (RabbitMQ, or anything
// else spoken over TCP) that can cut, refuse, black-hole and stall
// connections: the fault injector of the tests. Clients connect to
// [Proxy.Addr]. Its methods are safe for concurrent use and may be called
// from any goroutine.
type Proxy struct {
	t      testing.TB
	target string
	addr   string

	mu       sync.Mutex
	ln       net.Listener
	conns    map[net.Conn]*proxyConn
	refusing bool
	closed   bool
	accepted int            // connections accepted so far
	wg       sync.WaitGroup // accept loops and pipes
}

type proxyConn struct {
	client, server net.Conn
	blackholed     chan struct{}
	holeOnce       sync.Once
	stalled        atomic.Bool // stop reading from the client: its writes block
}

// NewProxy listens on a free loopback port and forwards every connection
// to target (host:port), dialled afresh for each client with a 3 s timeout;
// a client whose target cannot be dialled is closed at once. When the test
// ends the proxy refuses, cuts every connection and waits for its
// goroutines.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("rabbittest: proxy: listen: %v", err)
	}
	p := &Proxy{t: t, target: target, addr: ln.Addr().String(), conns: map[net.Conn]*proxyConn{}}
	p.serve(ln)
	t.Cleanup(p.close)
	return p
}

// Addr is the proxy's address (127.0.0.1:port); it stays the same across
// [Proxy.Refuse] and [Proxy.Accept].
func (p *Proxy) Addr() string { return p.addr }

// Target is the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// URL is the AMQP URL of the proxy with the test credentials (guest/guest).
func (p *Proxy) URL() string { return URL(p.addr) }

// Conns is the number of connections the proxy carries now.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Accepted is the number of connections the proxy accepted so far: the
// client's connection attempts.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

func (p *Proxy) serve(ln net.Listener) {
	p.ln = ln
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.accepted++
			p.mu.Unlock()
			p.wg.Add(1)
			go p.handle(c)
		}
	}()
}

func (p *Proxy) handle(client net.Conn) {
	defer p.wg.Done()
	server, err := net.DialTimeout("tcp", p.target, 3*time.Second)
	if err != nil {
		_ = client.Close()
		return
	}
	pc := &proxyConn{client: client, server: server, blackholed: make(chan struct{})}
	p.mu.Lock()
	if p.closed || p.refusing { // accepted just before Refuse: cut it too
		p.mu.Unlock()
		_ = client.Close()
		_ = server.Close()
		return
	}
	p.conns[client] = pc
	p.mu.Unlock()
	pipe := func(dst, src net.Conn) {
		defer p.wg.Done()
		buf := make([]byte, 32<<10)
		for {
			for src == client && pc.stalled.Load() {
				time.Sleep(5 * time.Millisecond) // a broker that stopped reading (alarm)
			}
			n, err := src.Read(buf)
			if n > 0 {
				select {
				case <-pc.blackholed: // swallow everything
				default:
					if _, werr := dst.Write(buf[:n]); werr != nil {
						err = werr
					}
				}
			}
			if err != nil {
				_ = client.Close()
				_ = server.Close()
				p.mu.Lock()
				delete(p.conns, client)
				p.mu.Unlock()
				return
			}
		}
	}
	p.wg.Add(2)
	go pipe(server, client)
	go pipe(client, server)
}

// Cut closes every proxied connection, as a network failure would, and
// returns how many there were. New connections are still accepted.
func (p *Proxy) Cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.conns)
	for c, pc := range p.conns {
		pc.stalled.Store(false) // a stalled pipe must see its closed socket
		_ = c.Close()
		_ = pc.server.Close()
	}
	return n
}

// Refuse closes the listener (new connections are refused) and cuts every
// connection. Idempotent.
func (p *Proxy) Refuse() {
	p.mu.Lock()
	if !p.refusing {
		p.refusing = true
		_ = p.ln.Close()
	}
	p.mu.Unlock()
	p.Cut()
}

// Accept listens again on the same address after [Proxy.Refuse]; a no-op
// when the proxy is accepting. The port may linger for a moment, so it
// retries for up to a second; if the port is still taken it fails the test
// with Errorf (it may run on any goroutine).
func (p *Proxy) Accept() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.refusing || p.closed {
		return
	}
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		p.t.Errorf("rabbittest: proxy: listen again on %s: %v", p.addr, err)
		return
	}
	p.refusing = false
	p.serve(ln)
}

// Blackhole silently drops all traffic of the current connections in both
// directions (new connections work) and returns how many it affected: what
// a dead network path looks like to both ends.
func (p *Proxy) Blackhole() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pc := range p.conns {
		pc.holeOnce.Do(func() { close(pc.blackholed) })
	}
	return len(p.conns)
}

// Stall stops (true) or resumes (false) reading what the current clients
// send, as RabbitMQ does for a connection it blocks on a memory or disk
// alarm: their socket writes block once the buffers are full. The server's
// traffic to the clients keeps flowing. It returns how many connections it
// affected; connections made later are not stalled.
func (p *Proxy) Stall(stall bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pc := range p.conns {
		pc.stalled.Store(stall)
	}
	return len(p.conns)
}

// close refuses, cuts and waits for every goroutine of the proxy.
func (p *Proxy) close() {
	p.Refuse()
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.Cut() // connections that were being dialled while Refuse ran
	p.wg.Wait()
}
